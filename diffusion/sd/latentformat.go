package sd

import "github.com/forgeflow/forgeflow/weights/detect"

// FamilyLatent is the latent format of a family (comfy/supported_models.py: SD1.x and
// SD2.x use SD15, SDXL and its refiner SDXL, SD3 and Flux their own).
func FamilyLatent(f detect.Family) LatentFormat {
	switch f {
	case detect.FamilySDXL, detect.FamilySDXLRefiner:
		return SDXLLatent
	case detect.FamilyFluxDev, detect.FamilyFluxSchnell:
		return FluxLatent
	case detect.FamilySD3:
		return SD3Latent
	}
	return SD15Latent
}

// ProcessIn scales VAE latents for the diffusion model in place: (z − Shift)·Scale
// (comfy/latent_formats.py LatentFormat.process_in).
func (f LatentFormat) ProcessIn(z []float32) {
	scale, shift := float32(f.Scale), float32(f.Shift)
	for i, v := range z {
		z[i] = (v - shift) * scale
	}
}

// ProcessOut maps diffusion-model latents back to the VAE's in place: z/Scale + Shift
// (process_out).
func (f LatentFormat) ProcessOut(z []float32) {
	scale, shift := float32(f.Scale), float32(f.Shift)
	for i, v := range z {
		z[i] = v/scale + shift
	}
}

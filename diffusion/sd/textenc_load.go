package sd

import (
	"fmt"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/detect"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// CLIP types of ComfyUI's CLIPLoader (comfy/sd.py CLIPType) that change how a lone CLIP
// file is wrapped. Every other type ComfyUI lists needs a T5, Llama or another
// tokenizer and is refused with an UnsupportedError.
const (
	CLIPTypeStableDiffusion = "stable_diffusion"
	CLIPTypeStableCascade   = "stable_cascade"
	CLIPTypeSD3             = "sd3"
	CLIPTypeHiDream         = "hidream"
)

// LoadTextEncoder loads a standalone text encoder file (the text_encoders folder) as
// ComfyUI's CLIPLoader does with one file (load_text_encoder_state_dicts): CLIP-L
// becomes SD1's encoder (pooled output projected when the file has text_projection),
// OpenCLIP-H SD2's, CLIP-G the SDXL refiner's. OpenCLIP-layout files are mapped as in
// checkpoints. The result holds only CLIP.
func LoadTextEncoder(rt *gpu.Runtime, path, clipType string, opts LoadOptions) (*Checkpoint, error) {
	f, err := openFile(path)
	if err != nil {
		return nil, err
	}
	ck, err := loadTextEncoder(rt, f, clipType, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	return ck, nil
}

func loadTextEncoder(rt *gpu.Runtime, f *tensorfile.File, clipType string, opts LoadOptions) (*Checkpoint, error) {
	det, err := detectFile(f)
	if err != nil {
		return nil, err
	}
	var te *detect.TextEncoder
	for i := range det.TextEncoders {
		if det.TextEncoders[i].CLIP != nil {
			te = &det.TextEncoders[i]
			break
		}
	}
	if te == nil {
		return nil, &UnsupportedError{Path: f.Name(), What: fmt.Sprintf("no CLIP text encoder in it (it holds a %s, %s); T5 and LLM text encoders are not implemented", det.Kind, det.Family)}
	}
	if len(det.TextEncoders) > 1 {
		return nil, &UnsupportedError{Path: f.Name(), What: fmt.Sprintf("%d text encoders in one file; load a checkpoint or one encoder per file", len(det.TextEncoders))}
	}
	// The family follows ComfyUI's detect_te_model: a 31st layer means CLIP-G, a 23rd
	// CLIP-H, otherwise CLIP-L.
	var role encoderRole
	layers := te.CLIP.Layers
	switch {
	case layers > 30:
		if clipType == CLIPTypeStableCascade || clipType == CLIPTypeSD3 || clipType == CLIPTypeHiDream {
			return nil, &UnsupportedError{Path: f.Name(), What: fmt.Sprintf("CLIP-G as a %s text encoder is not implemented", clipType)}
		}
		role = roleSDXLG
	case layers > 22:
		role = roleSD2H
	default:
		if clipType == CLIPTypeSD3 || clipType == CLIPTypeHiDream {
			return nil, &UnsupportedError{Path: f.Name(), What: fmt.Sprintf("CLIP-L as a %s text encoder is not implemented", clipType)}
		}
		// SD1ClipModel as CLIPLoader builds it keeps return_projected_pooled's default.
		role = roleSD1L
		role.projected = true
	}
	if clipType != CLIPTypeStableDiffusion && clipType != CLIPTypeStableCascade && clipType != CLIPTypeSD3 && clipType != CLIPTypeHiDream && clipType != "" {
		return nil, &UnsupportedError{Path: f.Name(), What: fmt.Sprintf("CLIPLoader type %q needs a text encoder forgeflow does not implement (use stable_diffusion for CLIP-L/H/G files)", clipType)}
	}
	src := statedict.NewFileSource(rt, f)
	var enc *TextEncoder
	if te.Format == "open_clip" {
		enc, err = loadOpenCLIP(rt, src, te.Prefix, role, opts)
	} else {
		proj := strings.TrimSuffix(te.Prefix, "text_model.") + "text_projection.weight"
		if !src.Has(proj) {
			// Old files saved by ComfyUI's CLIPSave carry an (in, out) "text_projection".
			old := strings.TrimSuffix(te.Prefix, "text_model.") + "text_projection"
			if src.Has(old) {
				src.Alias(proj, statedict.Derived{Stored: old, Transpose: true})
			} else {
				proj = ""
			}
		}
		if len(keysUnder(src.File(), te.Prefix+"encoder.layers.")) == 0 {
			return nil, &FormatError{Path: f.Name(), Err: fmt.Errorf("no %sencoder.layers.* tensors", te.Prefix)}
		}
		enc, err = bindTextModel(rt, src, te.Prefix, role, proj, opts)
	}
	if err != nil {
		return nil, err
	}
	// CheckpointSave writes the encoder under the checkpoint names of the family it
	// stands for; a transformers-layout CLIP-H/G would need converting back to
	// OpenCLIP's, which is not done.
	w := newWeights(f, te.Prefix)
	switch {
	case role.name == "l" && te.Format == "hf":
		parent := strings.TrimSuffix(te.Prefix, "text_model.")
		w = newWeights(f, parent).renamed(parent, "cond_stage_model.transformer.")
	case role.name == "h" && te.Format == "open_clip":
		w.renamed(te.Prefix, "cond_stage_model.model.")
	case role.name == "g" && te.Format == "open_clip":
		w.renamed(te.Prefix, "conditioner.embedders.0.model.")
	default:
		w.err = fmt.Errorf("a transformers-layout CLIP-%s file cannot be written into a checkpoint yet", strings.ToUpper(role.name))
	}
	c := &CLIP{Runtime: rt, Encoders: []*TextEncoder{enc}, Name: f.Name(), Weights: w}
	return &Checkpoint{CLIP: c, Detected: det, Family: te.Family, file: f}, nil
}

// LoadVAE loads a standalone VAE file (the vae folder) or the VAE of a checkpoint, as
// VAELoader does: keys under "first_stage_model.", "vae." or none. The latent format
// is guessed from the channel count (SD15's for 4 channels); a checkpoint's VAE loaded
// this way takes its family's.
func LoadVAE(rt *gpu.Runtime, path string) (*Checkpoint, error) {
	f, err := openFile(path)
	if err != nil {
		return nil, err
	}
	ck, err := loadVAEFile(rt, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return ck, nil
}

func loadVAEFile(rt *gpu.Runtime, f *tensorfile.File) (*Checkpoint, error) {
	det, err := detectFile(f)
	if err != nil {
		return nil, err
	}
	if det.VAE == nil {
		return nil, &UnsupportedError{Path: f.Name(), What: fmt.Sprintf("no VAE in it (it holds a %s, %s)", det.Kind, det.Family)}
	}
	if !isDiffusersVAE(f, det.VAE.Prefix) {
		if det.VAE.Unsupported != "" {
			return nil, &UnsupportedError{Path: f.Name(), What: det.VAE.Unsupported}
		}
	}
	v, err := loadVAE(rt, statedict.NewFileSource(rt, f), det.VAE.Prefix, f.Name())
	if err != nil {
		return nil, err
	}
	if det.Diffusion != nil {
		v.Latent = FamilyLatent(det.Diffusion.Family)
	}
	return &Checkpoint{VAE: v, Detected: det, Family: det.Family, file: f}, nil
}

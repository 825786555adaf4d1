package builtin

import (
	"context"
	"fmt"
	"math"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/gpu/resample"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// Inpainting nodes (nodes.py VAEEncodeForInpaint, SetLatentNoiseMask,
// InpaintModelConditioning; comfy_extras/nodes_differential_diffusion.py).

// inpaintInputs is the part VAEEncodeForInpaint and InpaintModelConditioning share:
// the mask resized bilinearly to the image, image and mask cropped (centred) to a
// multiple of cell, and the image with its masked pixels (mask ≥ 0.5) set to grey.
type inpaintInputs struct {
	// mask is (B, h, w) in 0…1 after the resize and crop; masked the grey-filled crop.
	mask   *Mask
	masked *Image
}

func prepareInpaint(pixels *Image, mask *Mask, cell int) (*inpaintInputs, error) {
	if mask.Batch != 1 && mask.Batch != pixels.Batch {
		return nil, fmt.Errorf("a batch of %d masks for %d images", mask.Batch, pixels.Batch)
	}
	H, W := pixels.Height, pixels.Width
	full := mask.Pix
	if mask.Height != H || mask.Width != W {
		// torch.nn.functional.interpolate(mode="bilinear") to the image's size.
		var err error
		if full, err = resample.Upscale(mask.Pix, mask.Batch, 1, mask.Height, mask.Width, W, H, "bilinear", "disabled"); err != nil {
			return nil, fmt.Errorf("mask: %w", err)
		}
	}
	h, w := H/cell*cell, W/cell*cell
	if h == 0 || w == 0 {
		return nil, fmt.Errorf("a %dx%d image is smaller than the %d-pixel cell", W, H, cell)
	}
	y0, x0 := (H%cell)/2, (W%cell)/2
	m, err := NewMask(mask.Batch, h, w)
	if err != nil {
		return nil, err
	}
	for b := 0; b < mask.Batch; b++ {
		for y := 0; y < h; y++ {
			copy(m.Pix[(b*h+y)*w:(b*h+y+1)*w], full[(b*H+y+y0)*W+x0:])
		}
	}
	c := pixels.Channels
	im, err := NewImage(pixels.Batch, h, w, c)
	if err != nil {
		return nil, err
	}
	for b := 0; b < pixels.Batch; b++ {
		mp := m.Plane(b % m.Batch)
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				src := pixels.Pix[((b*H+y+y0)*W+x+x0)*c:]
				dst := im.Pix[((b*h+y)*w+x)*c:]
				copy(dst[:c], src[:c])
				keep := 1 - float32(math.RoundToEven(float64(mp[y*w+x])))
				for ch := 0; ch < min(3, c); ch++ {
					dst[ch] = (dst[ch]-0.5)*keep + 0.5
				}
			}
		}
	}
	return &inpaintInputs{mask: m, masked: im}, nil
}

// maskTensor4 is a mask as a (B, 1, H, W) tensor (mask.reshape(-1, 1, H, W)).
func maskTensor4(rt *gpu.Runtime, m *Mask) (*gpu.Tensor, error) {
	return rt.FromFloat32(append([]float32(nil), m.Pix...), m.Batch, 1, m.Height, m.Width)
}

// growMask is VAEEncodeForInpaint's grow: the rounded mask convolved with a g×g box of
// ones (padding ⌈(g−1)/2⌉), clamped to 0…1, cut to the mask's size and rounded.
func growMask(m *Mask, g int) *Mask {
	out := &Mask{Batch: m.Batch, Height: m.Height, Width: m.Width, Pix: make([]float32, len(m.Pix))}
	h, w := m.Height, m.Width
	if g == 0 {
		for i, v := range m.Pix {
			out.Pix[i] = float32(math.RoundToEven(float64(v)))
		}
		return out
	}
	pad := g / 2 // ⌈(g−1)/2⌉
	for b := 0; b < m.Batch; b++ {
		src, dst := m.Plane(b), out.Plane(b)
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				var s float32
				for dy := 0; dy < g && s < 1; dy++ {
					yy := y + dy - pad
					if yy < 0 || yy >= h {
						continue
					}
					for dx := 0; dx < g; dx++ {
						xx := x + dx - pad
						if xx >= 0 && xx < w {
							s += float32(math.RoundToEven(float64(src[yy*w+xx])))
						}
					}
				}
				if s >= 0.5 {
					dst[y*w+x] = 1
				}
			}
		}
	}
	return out
}

// VAEEncodeForInpaint is ComfyUI's VAEEncodeForInpaint: the masked area set to grey
// before encoding, and the mask, grown by grow_mask_by pixels, as the latent's noise
// mask.
type VAEEncodeForInpaint struct {
	Pixels     *Image  `input:"pixels"`
	VAE        *sd.VAE `input:"vae"`
	Mask       *Mask   `input:"mask"`
	GrowMaskBy int     `input:"grow_mask_by"`
}

// Schema implements nodes.Typed.
func (*VAEEncodeForInpaint) Schema() graph.Schema {
	return graph.Schema{
		Name: "VAEEncodeForInpaint", DisplayName: "VAE Encode (for Inpainting)", Category: "latent/inpaint",
		Inputs: []graph.Input{
			socket("pixels", "IMAGE"), socket("vae", "VAE"), socket("mask", "MASK"),
			{Name: "grow_mask_by", Type: graph.TypeInt, Default: 6, Min: graph.Num(0), Max: graph.Num(64), Step: graph.Num(1)},
		},
		Outputs: outputs("LATENT"),
	}
}

// Run implements nodes.Typed (nodes.py VAEEncodeForInpaint.encode).
func (n *VAEEncodeForInpaint) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	in, err := prepareInpaint(n.Pixels, n.Mask, n.VAE.Downscale())
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: VAEEncodeForInpaint: %w", err)
	}
	z, err := n.VAE.Encode(ctx, toVAEImage(in.masked))
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: VAEEncodeForInpaint: %w", err)
	}
	nm, err := maskTensor4(n.VAE.Runtime, growMask(in.mask, n.GrowMaskBy))
	if err != nil {
		z.Release()
		return nodes.Result{}, err
	}
	return nodes.One(&sd.Latent{Samples: z, NoiseMask: nm}, nil)
}

// SetLatentNoiseMask is ComfyUI's SetLatentNoiseMask: a copy of the latent whose
// sampling is limited to the mask.
type SetLatentNoiseMask struct {
	Samples *sd.Latent `input:"samples"`
	Mask    *Mask      `input:"mask"`
}

// Schema implements nodes.Typed.
func (*SetLatentNoiseMask) Schema() graph.Schema {
	return graph.Schema{
		Name: "SetLatentNoiseMask", DisplayName: "Set Latent Noise Mask", Category: "latent/inpaint",
		Inputs:  []graph.Input{socket("samples", "LATENT"), socket("mask", "MASK")},
		Outputs: outputs("LATENT"),
	}
}

// Run implements nodes.Typed.
func (n *SetLatentNoiseMask) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	nm, err := maskTensor4(n.Samples.Samples.Runtime(), n.Mask)
	if err != nil {
		return nodes.Result{}, err
	}
	out := *n.Samples
	out.NoiseMask = nm
	return nodes.One(&out, nil)
}

// InpaintModelConditioning is ComfyUI's InpaintModelConditioning: the grey-filled image
// and the mask go into the conditioning (an inpainting model's concat inputs), the
// latent is the unmasked image's, with the mask as its noise mask when noise_mask.
type InpaintModelConditioning struct {
	Positive  sd.Conditioning `input:"positive"`
	Negative  sd.Conditioning `input:"negative"`
	VAE       *sd.VAE         `input:"vae"`
	Pixels    *Image          `input:"pixels"`
	Mask      *Mask           `input:"mask"`
	NoiseMask bool            `input:"noise_mask"`
}

// Schema implements nodes.Typed.
func (*InpaintModelConditioning) Schema() graph.Schema {
	return graph.Schema{
		Name: "InpaintModelConditioning", DisplayName: "InpaintModelConditioning", Category: "conditioning/inpaint",
		Inputs: []graph.Input{
			socket("positive", "CONDITIONING"), socket("negative", "CONDITIONING"), socket("vae", "VAE"),
			socket("pixels", "IMAGE"), socket("mask", "MASK"),
			{Name: "noise_mask", Type: graph.TypeBoolean, Default: true,
				Tooltip: "Add a noise mask to the latent so sampling will only happen within the mask. Might improve results or completely break things depending on the model."},
		},
		Outputs: []graph.Output{{Type: "CONDITIONING", Name: "positive"}, {Type: "CONDITIONING", Name: "negative"}, {Type: "LATENT", Name: "latent"}},
	}
}

// Run implements nodes.Typed (nodes.py InpaintModelConditioning.encode; the cell is 8
// whatever the VAE, as there).
func (n *InpaintModelConditioning) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	in, err := prepareInpaint(n.Pixels, n.Mask, 8)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: InpaintModelConditioning: %w", err)
	}
	concat, err := n.VAE.Encode(ctx, toVAEImage(in.masked))
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: InpaintModelConditioning: %w", err)
	}
	orig, err := n.VAE.Encode(ctx, toVAEImage(n.Pixels))
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: InpaintModelConditioning: %w", err)
	}
	mask, err := maskTensor4(n.VAE.Runtime, in.mask)
	if err != nil {
		return nodes.Result{}, err
	}
	latent := &sd.Latent{Samples: orig}
	if n.NoiseMask {
		latent.NoiseMask = mask
	}
	set := func(e *sd.Cond) { e.ConcatLatent, e.ConcatMask = concat, mask }
	return nodes.Outputs(withEntries(n.Positive, set), withEntries(n.Negative, set), latent)
}

// DifferentialDiffusion is ComfyUI's DifferentialDiffusion ("soft inpainting"): at
// each step only the part of the noise mask at or above a threshold falling from 1 to
// 0 over the run is denoised, so a soft mask's grey levels become how long an area is
// repainted.
type DifferentialDiffusion struct {
	Model    *sd.Model `input:"model"`
	Strength *float64  `input:"strength"`
}

// Schema implements nodes.Typed.
func (*DifferentialDiffusion) Schema() graph.Schema {
	name := "Differential Diffusion"
	extra := v3Extra(1, &name)
	extra["experimental"] = true
	return graph.Schema{
		Name: "DifferentialDiffusion", DisplayName: name, Category: "_for_testing",
		PythonModule: "comfy_extras.nodes_differential_diffusion",
		Inputs: []graph.Input{
			socketV3("model", "MODEL"),
			{Name: "strength", Type: graph.TypeFloat, Section: graph.Optional, Default: 1.0, Min: graph.Num(0.0), Max: graph.Num(1.0), Step: graph.Num(0.01)},
		},
		Outputs: outputs("MODEL"),
		Extra:   extra,
	}
}

// Run implements nodes.Typed.
func (n *DifferentialDiffusion) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	strength := 1.0
	if n.Strength != nil {
		strength = *n.Strength
	}
	return nodes.One(n.Model.WithDenoiseMask(sd.DifferentialDiffusion(strength)), nil)
}

// Interface guards.
var (
	_ nodes.Typed = (*VAEEncodeForInpaint)(nil)
	_ nodes.Typed = (*SetLatentNoiseMask)(nil)
	_ nodes.Typed = (*InpaintModelConditioning)(nil)
	_ nodes.Typed = (*DifferentialDiffusion)(nil)
)

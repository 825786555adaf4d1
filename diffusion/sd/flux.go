package sd

import (
	"context"
	"fmt"

	"github.com/forgeflow/forgeflow/diffusion/flux"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/diffusion/t5"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/detect"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// Flux.1 dev, schnell and Kontext as a MODEL (comfy/supported_models.py Flux and
// FluxSchnell, comfy/model_base.py Flux): the transformer of diffusion/flux behind the
// Network interface, the Flux latent format, CONST (flow) model sampling, the pooled
// CLIP-L output as y, Flux's guidance and the reference latents from the conditioning.

// FluxNetwork runs a Flux transformer.
type FluxNetwork struct{ Model *flux.Model }

// Forward implements Network: Flux.forward with the batch's guidance, pooled vector,
// reference latents and skipped blocks. A model that takes more channels than it
// outputs (Flux Fill) given a latent alone gets model_base.Flux.concat_cond's defaults
// for an entry without concat_latent_image and concat_mask: a zero image and the run's
// noise mask (all ones without one).
func (n FluxNetwork) Forward(ctx context.Context, rt *gpu.Runtime, in NetInputs) (*gpu.Tensor, error) {
	fi := flux.Inputs{
		X: in.X, Timesteps: in.Timesteps, Context: in.Context, Y: in.Y, Guidance: in.Guidance,
		RefLatents: in.RefLatents, RefMethod: in.RefMethod,
		SkipDouble: in.SkipDouble, SkipSingle: in.SkipSingle, AttentionMask: in.AttentionMask,
	}
	if n.Model.ConcatChannels() > 0 && in.X != nil && in.X.Rank() == 4 && in.X.Dim(1) == n.Model.Config.OutChannels {
		c, err := n.Model.FillConcat(rt, in.X.Dim(0), in.X.Dim(2), in.X.Dim(3), nil, in.DenoiseMask)
		if err != nil {
			return nil, err
		}
		defer c.Release()
		fi.Concat = c
	}
	return n.Model.Forward(ctx, rt, fi)
}

// fluxConcat is model_base.Flux.concat_cond for one conditioning entry of a run on a
// latent of shape (N, C, H, W): its concat_latent_image (nil: zeros) and concat_mask
// (InpaintModelConditioning's; nil: the run's noise mask, nil: ones), as (N, extra, H,
// W) values.
func fluxConcat(rt *gpu.Runtime, fm *flux.Model, c Cond, shape [4]int, noiseMask []float32) ([]float32, error) {
	n, ch, h, w := shape[0], shape[1], shape[2], shape[3]
	mask := c.ConcatMask
	var err error
	switch {
	case mask != nil && mask.Rank() == 3:
		if mask, err = gpu.Reshape(rt, mask, mask.Dim(0), 1, mask.Dim(1), mask.Dim(2)); err != nil {
			return nil, fmt.Errorf("concat_mask: %w", err)
		}
		defer mask.Release()
	case mask == nil && noiseMask != nil:
		if mask, err = rt.FromFloat32(noiseMask, n, ch, h, w); err != nil {
			return nil, err
		}
		defer mask.Release()
	}
	t, err := fm.FillConcat(rt, n, h, w, c.ConcatLatent, mask)
	if err != nil {
		return nil, err
	}
	defer t.Release()
	return t.Float32()
}

// ReadsDenoiseMask reports whether Forward reads NetInputs.DenoiseMask: a Flux Fill's
// does.
func (n FluxNetwork) ReadsDenoiseMask() bool { return n.Model.ConcatChannels() > 0 }

// NewFluxModel wraps a Flux transformer in the Model ComfyUI samples it with: its default
// model sampling (dev: ModelSamplingFlux shift 1.15; schnell: flow, shift 1), the Flux
// latent format, y from the pooled output, contexts batched only with equal token counts
// (CONDRegular), a guidance value on every entry (3.5 unless FluxGuidance or
// CLIPTextEncodeFlux set one; schnell ignores it) and the entries' reference latents.
func NewFluxModel(rt *gpu.Runtime, m *flux.Model, name string) *Model {
	return &Model{Runtime: rt, Net: FluxNetwork{m}, Sampling: m.DefaultSampling(), Latent: FluxLatent,
		PooledY: true, Guidance: true, ExactContext: true, References: true, Name: name}
}

// loadFluxModel binds the Flux transformer d describes from src (f's tensors), with
// UNETLoader's weight_dtype, as a MODEL.
func loadFluxModel(rt *gpu.Runtime, f *tensorfile.File, src statedict.Source, d *detect.Diffusion, weightDType string) (*Model, error) {
	name := f.Name()
	if d.Unsupported != "" {
		return nil, &UnsupportedError{Path: name, What: d.Unsupported}
	}
	fm, err := flux.Load(rt, src, d.Prefix, flux.Options{WeightDType: weightDType})
	if err != nil {
		return nil, &FormatError{Path: name, Err: err}
	}
	m := NewFluxModel(rt, fm, name)
	m.Weights = newWeights(f, d.Prefix).renamed(d.Prefix, unetPrefix)
	return m, nil
}

// Key prefixes of a Flux all-in-one checkpoint (supported_models.Flux: vae_key_prefix
// "vae.", text_encoder_key_prefix "text_encoders.").
const (
	fluxVAEPrefix   = "vae."
	fluxCLIPLPrefix = "text_encoders.clip_l.transformer."
	fluxT5Prefix    = "text_encoders.t5xxl.transformer."
)

// loadFluxCheckpoint is load_state_dict_guess_config for a Flux all-in-one file (such as
// ComfyUI's flux1-schnell-fp8 and flux1-dev-fp8): the transformer under
// model.diffusion_model., the VAE under vae. and the text encoders under
// text_encoders.clip_l/t5xxl.transformer. A part that is absent loads as nil, as in
// ComfyUI.
func loadFluxCheckpoint(rt *gpu.Runtime, f *tensorfile.File, det *detect.Model, opts LoadOptions) (*Checkpoint, error) {
	name := f.Name()
	d := det.Diffusion
	ck := &Checkpoint{Detected: det, Family: d.Family, file: f}
	if !opts.SkipModel {
		m, err := loadFluxModel(rt, f, statedict.NewFileSource(rt, f), d, "")
		if err != nil {
			return nil, err
		}
		ck.Model = m
	}
	src := statedict.NewFileSource(rt, f)
	if !opts.SkipVAE {
		prefix := fluxVAEPrefix
		if det.VAE != nil {
			prefix = det.VAE.Prefix
		}
		if len(keysUnder(f, prefix)) == 0 {
			opts.logger().Warn("checkpoint holds no VAE (no vae.* tensors)", "path", name)
		} else {
			v, err := loadVAE(rt, src, prefix, name)
			if err != nil {
				return nil, err
			}
			v.Latent = FluxLatent
			ck.VAE = v
		}
	}
	if !opts.SkipCLIP {
		c, err := loadFluxCheckpointCLIP(rt, src, opts)
		if err != nil {
			return nil, err
		}
		if c == nil {
			opts.logger().Warn("checkpoint holds no Flux text encoders (CLIP-L and T5-XXL); its CLIP output is empty", "path", name)
		} else {
			c.Name = name
			c.Weights = newWeights(f, "text_encoders.")
			ck.CLIP = c
		}
	}
	return ck, nil
}

// loadFluxCheckpointCLIP is supported_models.Flux.clip_target: FluxClipModel, CLIP-L and
// T5-XXL, nil when the file holds neither. ComfyUI builds both encoders whatever the
// file holds; a checkpoint with only one of them is refused here rather than run with
// uninitialised weights.
func loadFluxCheckpointCLIP(rt *gpu.Runtime, src *statedict.FileSource, opts LoadOptions) (*CLIP, error) {
	hasL := src.Has(fluxCLIPLPrefix + "text_model.final_layer_norm.weight")
	hasT5 := src.Has(fluxT5Prefix + "encoder.final_layer_norm.weight")
	switch {
	case !hasL && !hasT5:
		return nil, nil
	case !hasL || !hasT5:
		return nil, &FormatError{Path: src.File().Name(), Err: fmt.Errorf("a Flux checkpoint needs both CLIP-L (%s) and T5-XXL (%s) text encoders, it holds one", fluxCLIPLPrefix, fluxT5Prefix)}
	}
	l, err := bindTextModel(rt, src, fluxCLIPLPrefix+"text_model.", roleSD1L, "", opts)
	if err != nil {
		return nil, err
	}
	te, err := loadT5(rt, src, fluxT5Prefix, t5.FluxMinLength, opts)
	if err != nil {
		return nil, err
	}
	return &CLIP{Runtime: rt, Kind: CLIPFlux, Encoders: []*TextEncoder{l}, T5: te}, nil
}

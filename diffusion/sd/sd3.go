package sd

import (
	"fmt"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/mmdit"
	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/diffusion/t5"
	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/detect"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// SD3 and SD3.5 (comfy/supported_models.py SD3, model_base.SD3): an MMDiT sampled as
// discrete flow with shift 3, the SD3 latent format, text encoders CLIP-L, CLIP-G and
// T5-XXL (any of them may be missing from a checkpoint).

// SD3Shift is the model sampling shift of SD3 checkpoints (sampling_settings).
const SD3Shift = 3.0

// NewSD3Model wraps an MMDiT in the Model SD3 samples with: ModelSamplingDiscreteFlow
// (shift 3, multiplier 1000), the SD3 latent format, the pooled text output as y, text
// contexts batched only with equal token counts (CONDRegular).
func NewSD3Model(rt *gpu.Runtime, m *mmdit.Model, name string) *Model {
	return &Model{Runtime: rt, Net: MMDiTNetwork{m}, Sampling: sampling.NewFlowShift(SD3Shift, 1000, 1000),
		Latent: SD3Latent, PooledY: m.Config.ADMInChannels > 0, ExactContext: true, Name: name}
}

// loadSD3Checkpoint is load_state_dict_guess_config for an SD3 all-in-one file: the
// MMDiT under model.diffusion_model., the VAE under first_stage_model., and whichever
// text encoders lie under text_encoders.clip_l/clip_g/t5xxl.transformer.
func loadSD3Checkpoint(rt *gpu.Runtime, f *tensorfile.File, det *detect.Model, opts LoadOptions) (*Checkpoint, error) {
	name := f.Name()
	if u := det.Diffusion.Unsupported; u != "" {
		return nil, &UnsupportedError{Path: name, What: u}
	}
	src := statedict.NewFileSource(rt, f)
	ck := &Checkpoint{Detected: det, Family: detect.FamilySD3, file: f}
	if !opts.SkipModel {
		m, _, err := mmdit.Load(rt, src, unetPrefix)
		if err != nil {
			return nil, &FormatError{Path: name, Err: err}
		}
		ck.Model = NewSD3Model(rt, m, name)
		ck.Model.Weights = newWeights(f, unetPrefix)
	}
	if !opts.SkipVAE {
		if len(keysUnder(f, vaePrefix)) == 0 {
			opts.logger().Warn("checkpoint holds no VAE (no first_stage_model.* tensors)", "path", name)
		} else {
			v, err := loadVAE(rt, src, vaePrefix, name)
			if err != nil {
				return nil, err
			}
			v.Latent = SD3Latent
			ck.VAE = v
		}
	}
	if !opts.SkipCLIP {
		c, err := loadSD3CheckpointCLIP(rt, src, opts)
		if err != nil {
			return nil, err
		}
		if c == nil {
			opts.logger().Warn("checkpoint holds no text encoder weights; its CLIP output is empty", "path", name)
		} else {
			c.Name = name
			c.Weights = newWeights(f, "text_encoders.")
			ck.CLIP = c
		}
	}
	return ck, nil
}

// loadSD3CheckpointCLIP is supported_models.SD3.clip_target: an encoder is present when
// its final layer norm is (nil when none is).
func loadSD3CheckpointCLIP(rt *gpu.Runtime, src *statedict.FileSource, opts LoadOptions) (*CLIP, error) {
	c := &CLIP{Runtime: rt, Kind: CLIPSD3}
	if src.Has(sd3CLIPLPrefix + "text_model.final_layer_norm.weight") {
		l, err := bindTextModel(rt, src, sd3CLIPLPrefix+"text_model.", roleSDXLL, "", opts)
		if err != nil {
			return nil, err
		}
		c.Encoders = append(c.Encoders, l)
	}
	if src.Has(sd3CLIPGPrefix + "text_model.final_layer_norm.weight") {
		proj := sd3CLIPGPrefix + "text_projection.weight"
		if !src.Has(proj) {
			proj = ""
		}
		g, err := bindTextModel(rt, src, sd3CLIPGPrefix+"text_model.", roleSDXLG, proj, opts)
		if err != nil {
			return nil, err
		}
		c.Encoders = append(c.Encoders, g)
	}
	if src.Has(sd3T5Prefix + "encoder.final_layer_norm.weight") {
		te, err := loadT5(rt, src, sd3T5Prefix, t5.SD3MinLength, opts)
		if err != nil {
			return nil, err
		}
		c.T5 = te
	}
	if len(c.Encoders) == 0 && c.T5 == nil {
		return nil, nil
	}
	return c, nil
}

// DiffusionModelOptions configure LoadDiffusionModel.
type DiffusionModelOptions struct {
	// WeightDType is UNETLoader's weight_dtype: "default" (or "") keeps the file's
	// dtypes; "fp8_e4m3fn", "fp8_e4m3fn_fast" and "fp8_e5m2" store every float tensor
	// in that float8 type, as ComfyUI builds the model in it (vectors are widened to
	// F32 again after the rounding).
	WeightDType string
	// GGUF accepts GGUF files (ComfyUI-GGUF's UnetLoaderGGUF); UNETLoader refuses them
	// as ComfyUI's own loader does.
	GGUF bool
	// DequantDType is UnetLoaderGGUFAdvanced's dequant_dtype, the arithmetic GGUF blocks
	// are decoded in (dequantSource): "", "default", "target" and "float32" decode in
	// float32; "float16" and "bfloat16" round as ComfyUI-GGUF's block kernels do.
	DequantDType string
	// UNetHeads overrides the attention layout of SD UNets (tests only).
	UNetHeads unet.Heads
}

// LoadDiffusionModel loads a diffusion_models (unet) file as UNETLoader does
// (load_diffusion_model_state_dict): the network alone, keys bare or under
// model.diffusion_model., its family's model sampling and latent format. SD1.x, SD2.x
// and SDXL UNets, SD3 MMDiTs and Flux transformers load. The result
// holds only Model.
func LoadDiffusionModel(rt *gpu.Runtime, path string, opts DiffusionModelOptions) (*Checkpoint, error) {
	var f *tensorfile.File
	var err error
	if opts.GGUF {
		f, err = openFormats(path, "")
	} else {
		f, err = openFormats(path, "GGUF diffusion models (load them with UnetLoaderGGUF)", tensorfile.Safetensors, tensorfile.Torch)
	}
	if err != nil {
		return nil, err
	}
	ck, err := loadDiffusionModel(rt, f, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	return ck, nil
}

func loadDiffusionModel(rt *gpu.Runtime, f *tensorfile.File, opts DiffusionModelOptions) (*Checkpoint, error) {
	name := f.Name()
	det, err := detectFile(f)
	if err != nil {
		return nil, err
	}
	d := det.Diffusion
	if d == nil {
		return nil, &UnsupportedError{Path: name, What: fmt.Sprintf("no diffusion model in it (it holds a %s, %s)", det.Kind, det.Family)}
	}
	if _, ok := f.Info("conv_in.weight"); ok && d.Variant == "diffusers" && f.Format() != tensorfile.GGUF {
		// A UNet in diffusers' names, served under the original ones (diffusers.go),
		// as load_diffusion_model converts it.
		if opts.WeightDType != "" && opts.WeightDType != "default" {
			return nil, &UnsupportedError{Path: name, What: fmt.Sprintf("weight_dtype %s for a diffusers-format UNet", opts.WeightDType)}
		}
		return bindDiffusersUNet(rt, f, LoadOptions{UNetHeads: opts.UNetHeads})
	}
	if d.Unsupported != "" {
		return nil, &UnsupportedError{Path: name, What: d.Unsupported}
	}
	fsrc := statedict.NewFileSource(rt, f)
	// stored serves the file's tensors, GGUF blocks marked with their dequantization
	// arithmetic; src also applies UNETLoader's weight_dtype (Flux applies it itself).
	stored, err := dequantSource(fsrc, opts.DequantDType)
	if err != nil {
		return nil, err
	}
	// A scaled-fp8 MMDiT's linear layers and scales keep the file's float8 type whatever
	// the weight_dtype (ComfyUI's scaled_fp8_ops override it).
	scaled := false
	if d.MMDiT != nil {
		if _, scaled, err = statedict.ScaledFP8(stored, d.Prefix); err != nil {
			return nil, &FormatError{Path: name, Err: err}
		}
	}
	keep := func(key string) bool {
		rest, ok := strings.CutPrefix(key, d.Prefix)
		return scaled && ok && (mmdit.LinearParam(rest) || statedict.ScaledFP8Key(rest))
	}
	src := stored
	switch opts.WeightDType {
	case "", "default":
	case "fp8_e4m3fn", "fp8_e4m3fn_fast":
		src = castSource{stored, rt, gpu.F8E4M3FN, keep}
	case "fp8_e5m2":
		src = castSource{stored, rt, gpu.F8E5M2, keep}
	default:
		return nil, fmt.Errorf("sd: weight_dtype %q is not one of default, fp8_e4m3fn, fp8_e4m3fn_fast, fp8_e5m2", opts.WeightDType)
	}
	ck := &Checkpoint{Detected: det, Family: d.Family, file: f}
	switch {
	case d.MMDiT != nil:
		m, _, err := mmdit.Load(rt, src, d.Prefix)
		if err != nil {
			return nil, &FormatError{Path: name, Err: err}
		}
		ck.Model = NewSD3Model(rt, m, name)
		ck.Model.Weights = newWeights(f, d.Prefix).renamed(d.Prefix, unetPrefix)
	case d.Flux != nil:
		if ck.Model, err = loadFluxModel(rt, f, stored, d, opts.WeightDType); err != nil {
			return nil, err
		}
	case d.UNet != nil:
		if d.Variant == "inpaint" {
			return nil, &UnsupportedError{Path: name, What: "inpainting UNets (9 input channels) are not implemented"}
		}
		m, err := loadUNetModel(rt, fsrc, src, d, d.Family, opts.UNetHeads)
		if err != nil {
			return nil, err
		}
		m.Weights = newWeights(f, d.Prefix).renamed(d.Prefix, unetPrefix)
		ck.Model = m
	default:
		return nil, &UnsupportedError{Path: name, What: fmt.Sprintf("%s diffusion models are not implemented in this loader", d.Family)}
	}
	return ck, nil
}

// castSource serves every float tensor of a file but those keep reports in one dtype
// (UNETLoader's fp8 weight_dtype); GGUF blocks stay as stored.
type castSource struct {
	statedict.Source
	rt   *gpu.Runtime
	to   gpu.DType
	keep func(key string) bool
}

// Tensor implements statedict.Source.
func (s castSource) Tensor(key string) (*gpu.Tensor, error) {
	t, err := s.Source.Tensor(key)
	if err != nil || !t.DType().IsFloat() || t.DType() == s.to || s.keep(key) {
		return t, err
	}
	c, err := gpu.Cast(s.rt, t, s.to)
	t.Release()
	if err != nil {
		return nil, fmt.Errorf("sd: %s: %w", key, err)
	}
	return c, nil
}

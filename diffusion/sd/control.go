package sd

import (
	"context"
	"fmt"
	"math"

	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/gpu/resample"
)

// Control is a ControlNet or T2I-Adapter attached to conditioning entries (ComfyUI's
// cond["control"], set by ControlNetApply and ControlNetApplyAdvanced; implemented in
// diffusion/controlnet). Entries batch together only when they hold the same Control
// (comfy/samplers.py can_concat_cond compares the objects by identity), so a Control
// must be a comparable value, normally a pointer.
type Control interface {
	// Start prepares the control for one sampling run of m (ControlBase.pre_run): the
	// timestep range in sigmas, per-run caches. The run is closed when sampling ends.
	Start(ctx context.Context, m *Model) (ControlRun, error)
}

// ControlRun is a Control during one sampling run.
type ControlRun interface {
	// Residuals is get_control for one UNet batch: the residuals to add, or nil when
	// neither the control nor any control chained before it is active at in.Sigma. The
	// caller releases every tensor of the result after the UNet call.
	Residuals(ctx context.Context, in ControlInputs) (*unet.Control, error)
	// Close releases what the run holds.
	Close()
}

// ControlInputs is one UNet batch as a control sees it (the arguments of ComfyUI's
// get_control after calculate_input).
type ControlInputs struct {
	// X is the batch's latent in the model's input scale (calculate_input applied),
	// (B, C, H, W) without the inpainting model's concatenated channels.
	X         *gpu.Tensor
	Timesteps *gpu.Tensor // (B) the model's timesteps
	Sigma     float32
	Context   *gpu.Tensor // (B, T, D) text conditioning
	Y         *gpu.Tensor // (B, adm) label vector, or nil
	// Batched is how many conditioning entries the batch holds (get_control's
	// batched_number): a hint batch is split into that many equal parts.
	Batched int
}

// DenoiseMaskFunc changes the noise mask at every step (ComfyUI's
// model_options["denoise_mask_function"], set by DifferentialDiffusion). It gets the
// model, the step's sigma, the run's sigmas and the prepared mask (latent-sized, 1 =
// denoise) and returns the mask to use; it must not modify mask.
type DenoiseMaskFunc func(m *Model, sigma float32, sigmas, mask []float32) []float32

// WithDenoiseMask returns a copy of m whose noise mask f adjusts per step
// (set_model_denoise_mask_function, which replaces any earlier one).
func (m *Model) WithDenoiseMask(f DenoiseMaskFunc) *Model {
	c := *m
	c.DenoiseMask = f
	return &c
}

// DifferentialDiffusion is the denoise mask function of ComfyUI's DifferentialDiffusion
// node (comfy_extras/nodes_differential_diffusion.py forward): with timesteps t(σ) of the model,
// the threshold (t(σ) − t(σ_to)) / (t(σ_from) − t(σ_to)) from the run's first sigma
// to its last (at least sigma_min), the binary mask mask ≥ threshold, blended with the
// mask itself when strength < 1. float32 as torch computes it.
func DifferentialDiffusion(strength float64) DenoiseMaskFunc {
	return func(m *Model, sigma float32, sigmas, mask []float32) []float32 {
		ms := m.Sampling
		sigmaTo := ms.SigmaMin()
		if last := sigmas[len(sigmas)-1]; last > sigmaTo {
			sigmaTo = last
		}
		tsFrom, tsTo, cur := ms.Timestep(sigmas[0]), ms.Timestep(sigmaTo), ms.Timestep(sigma)
		threshold := (cur - tsTo) / (tsFrom - tsTo)
		out := make([]float32, len(mask))
		blend := strength > 0 && strength < 1
		s := float32(strength)
		for i, v := range mask {
			var b float32
			if v >= threshold {
				b = 1
			}
			if blend {
				b = s*b + (1-s)*v
			}
			out[i] = b
		}
		return out
	}
}

// startControls starts every control of the prepared lists once, keyed by identity.
func startControls(ctx context.Context, m *Model, lists ...[]modelCond) (map[Control]ControlRun, error) {
	runs := map[Control]ControlRun{}
	for _, list := range lists {
		for _, c := range list {
			if c.control == nil {
				continue
			}
			if _, ok := runs[c.control]; ok {
				continue
			}
			r, err := c.control.Start(ctx, m)
			if err != nil {
				closeControls(runs)
				return nil, fmt.Errorf("control: %w", err)
			}
			runs[c.control] = r
		}
	}
	return runs, nil
}

func closeControls(runs map[Control]ControlRun) {
	for _, r := range runs {
		r.Close()
	}
}

// controlToUncond gives the negative list the controls of positive entries marked
// ControlApplyToUncond (ControlNetApply's control_apply_to_uncond), as
// comfy/samplers.py apply_empty_x_to_equal_area does: when no area-less negative
// entry has a control, the i-th such positive control goes to the area-less negative
// entry i (modulo their count), replacing it when it has none and adding a copy when
// it has one.
func controlToUncond(pos, neg []modelCond) []modelCond {
	var controls []Control
	for _, c := range pos {
		if c.area == nil && c.controlToUncond && c.control != nil {
			controls = append(controls, c.control)
		}
	}
	var others []int
	for i, c := range neg {
		if c.area != nil {
			continue
		}
		if c.control != nil {
			return neg
		}
		others = append(others, i)
	}
	if len(others) == 0 {
		return neg
	}
	for x, ctl := range controls {
		t := others[x%len(others)]
		if neg[t].control != nil {
			n := neg[t]
			n.control = ctl
			neg = append(neg, n)
		} else {
			neg[t].control = ctl
		}
	}
	return neg
}

// isInpaintModel reports whether the UNet takes the inpainting concat (mask and masked
// image, comfy/supported_models_base.py inpaint_model: in_channels > 4); an
// InstructPix2Pix UNet takes its own (ip2p.go).
func (m *Model) isInpaintModel() bool {
	return m.UNet != nil && !m.IP2P && m.Latent.Channels > 0 && m.inChannels() > m.Latent.Channels
}

// inChannels is the UNet's input conv width, 0 when unknown.
func (m *Model) inChannels() int {
	if m.UNet == nil || len(m.UNet.Input) == 0 || len(m.UNet.Input[0]) == 0 || m.UNet.Input[0][0].In == nil {
		return 0
	}
	return m.UNet.Input[0][0].In.Weight.Dim(1)
}

// blankInpaintLatent is the latent of a zero image for SD inpainting models
// (BaseModel.set_inpaint blank_inpaint_image_like).
var blankInpaintLatent = [4]float32{0.8223, -0.6876, 0.6364, 0.1380}

// concatCond builds an inpainting model's c_concat for one conditioning entry
// (comfy/model_base.py BaseModel.concat_cond with concat_keys mask, masked_image):
// the mask (the entry's concat_mask, else the run's noise mask; all ones without
// either) and the masked image (the entry's concat_latent_image in model space, else
// the run's latent; the blank latent without a mask), each resized to the latent and
// its batch. latent is the run's (processed) latent, mask its prepared noise mask or
// nil; the result is (N, 1+C, H, W).
func concatCond(m *Model, c Cond, shape [4]int, latent, mask []float32) ([]float32, error) {
	n, ch, h, w := shape[0], shape[1], shape[2], shape[3]
	plane := h * w
	var maskData []float32 // (N, 1, H, W)
	if c.ConcatMask != nil {
		d, mb, err := maskPlanes(c.ConcatMask, h, w)
		if err != nil {
			return nil, fmt.Errorf("concat_mask: %w", err)
		}
		maskData = resizeToBatch(d, mb, plane, n)
	} else if mask != nil {
		// The prepared mask is (N, C, H, W): its first channel.
		maskData = make([]float32, 0, n*plane)
		for b := 0; b < n; b++ {
			maskData = append(maskData, mask[b*ch*plane:b*ch*plane+plane]...)
		}
	}
	for i, v := range maskData {
		maskData[i] = float32(math.RoundToEven(float64(v)))
	}
	var image []float32 // (N, C, H, W)
	if maskData != nil {
		if c.ConcatLatent != nil {
			d, err := concatLatent(m, c.ConcatLatent, ch, h, w)
			if err != nil {
				return nil, fmt.Errorf("concat_latent_image: %w", err)
			}
			image = resizeToBatch(d, c.ConcatLatent.Dim(0), ch*plane, n)
		} else {
			image = resizeToBatch(latent, n, ch*plane, n)
		}
	}
	out := make([]float32, 0, n*(1+ch)*plane)
	for b := 0; b < n; b++ {
		if maskData != nil {
			out = append(out, maskData[b*plane:(b+1)*plane]...)
			out = append(out, image[b*ch*plane:(b+1)*ch*plane]...)
			continue
		}
		for i := 0; i < plane; i++ {
			out = append(out, 1)
		}
		for k := 0; k < ch; k++ {
			v := float32(1)
			if k < len(blankInpaintLatent) {
				v = blankInpaintLatent[k]
			}
			for i := 0; i < plane; i++ {
				out = append(out, v)
			}
		}
	}
	return out, nil
}

// concatLatent is a concat_latent_image in the model's space (process_latent_in),
// resized bilinearly (centre crop) to h×w when its size differs.
func concatLatent(m *Model, t *gpu.Tensor, ch, h, w int) ([]float32, error) {
	if t.Rank() != 4 || t.Dim(1) != ch {
		return nil, fmt.Errorf("%v is not a (N, %d, H, W) latent", t.Shape(), ch)
	}
	d, err := t.Float32()
	if err != nil {
		return nil, err
	}
	d = m.Latent.processIn(d)
	if t.Dim(2) != h || t.Dim(3) != w {
		return resample.Upscale(d, t.Dim(0), ch, t.Dim(2), t.Dim(3), w, h, "bilinear", "center")
	}
	return d, nil
}

// maskPlanes returns a mask (…, H', W') as planes of h×w, resized bilinearly with a
// centre crop when its size differs, and the plane count.
func maskPlanes(t *gpu.Tensor, h, w int) ([]float32, int, error) {
	s := t.Shape()
	if len(s) < 2 || t.Numel() == 0 {
		return nil, 0, fmt.Errorf("mask %v is empty or not (…, H, W)", s)
	}
	mh, mw := s[len(s)-2], s[len(s)-1]
	d, err := t.Float32()
	if err != nil {
		return nil, 0, err
	}
	planes := len(d) / (mh * mw)
	if mh != h || mw != w {
		if d, err = resample.Upscale(d, planes, 1, mh, mw, w, h, "bilinear", "center"); err != nil {
			return nil, 0, err
		}
	}
	return d, planes, nil
}

// resizeToBatch is comfy.utils.resize_to_batch_size over items of per values: the same
// data when the count matches, else items picked evenly (fewer) or stretched (more).
func resizeToBatch(data []float32, in, per, n int) []float32 {
	if in == n {
		return data
	}
	if n <= 1 {
		return data[:n*per]
	}
	out := make([]float32, 0, n*per)
	for i := 0; i < n; i++ {
		var j int
		if n < in {
			scale := float64(in-1) / float64(n-1)
			j = int(math.RoundToEven(float64(i) * scale))
		} else {
			j = int(math.Floor((float64(i) + 0.5) * float64(in) / float64(n)))
		}
		j = min(j, in-1)
		out = append(out, data[j*per:(j+1)*per]...)
	}
	return out
}

package sd

import (
	"context"
	"errors"
	"fmt"

	"github.com/forgeflow/forgeflow/diffusion/rng"
	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/gpu/resample"
)

// StepFunc is called after every sampling step with the 0-based step, the number of
// steps and the denoised estimate x0 of the given shape (in the model's latent space).
// x0 is valid during the call only (the sampler reuses it): copy what must be kept.
type StepFunc func(step, total int, x0 []float32, shape [4]int)

// Noise is ComfyUI's NOISE: the initial noise of a run (RandomNoise, DisableNoise).
type Noise struct {
	Seed     uint64
	Disabled bool // all zeros (DisableNoise, KSamplerAdvanced add_noise "disable")
}

// Generate returns the noise for a latent of the given shape: torch.randn from
// manual_seed(seed) over the whole batch, or per batch_index when the latent carries one
// (comfy/sample.py prepare_noise).
func (n Noise) Generate(shape []int, batchIndex []int) ([]float32, error) {
	if n.Disabled {
		return make([]float32, numel(shape)), nil
	}
	if len(batchIndex) > 0 && len(batchIndex) != shape[0] {
		// ComfyUI would fail to add noise of a different batch size; say why.
		return nil, fmt.Errorf("sd: latent batch_index has %d entries for a batch of %d", len(batchIndex), shape[0])
	}
	return rng.PrepareNoise(n.Seed, shape, batchIndex)
}

func numel(shape []int) int {
	p := 1
	for _, d := range shape {
		p *= d
	}
	return p
}

// LatentData returns a latent's samples as (N, C, H, W) float32 data, checked.
func LatentData(l *Latent) ([]float32, [4]int, error) {
	if l == nil || l.Samples == nil {
		return nil, [4]int{}, errors.New("sd: latent has no samples")
	}
	if l.Samples.Rank() != 4 {
		return nil, [4]int{}, fmt.Errorf("sd: latent samples %v are not (N, C, H, W)", l.Samples.Shape())
	}
	var s [4]int
	copy(s[:], l.Samples.Shape())
	if s[0] == 0 || s[1] == 0 || s[2] == 0 || s[3] == 0 {
		return nil, s, fmt.Errorf("sd: latent samples %v are empty", s)
	}
	d, err := l.Samples.Float32()
	if err != nil {
		return nil, s, fmt.Errorf("sd: latent samples: %w", err)
	}
	return d, s, nil
}

// fixEmptyLatentChannels gives an all-zero latent with the wrong channel count the
// model's channel count (comfy/sample.py fix_empty_latent_channels: EmptyLatentImage
// always makes 4 channels).
func fixEmptyLatentChannels(m *Model, data []float32, shape [4]int) ([]float32, [4]int, error) {
	want := m.Latent.Channels
	if want == 0 || want == shape[1] {
		return data, shape, nil
	}
	if !allZero(data) {
		return nil, shape, fmt.Errorf("sd: the latent has %d channels, the model %s takes %d", shape[1], m.Name, want)
	}
	shape[1] = want
	return make([]float32, numel(shape[:])), shape, nil
}

func allZero(d []float32) bool {
	for _, v := range d {
		if v != 0 {
			return false
		}
	}
	return true
}

// SampleResult is what a sampling run produced, both (N, C, H, W) in the VAE's latent
// space (process_out applied).
type SampleResult struct {
	Samples []float32
	// Denoised is the last step's x0 estimate (SamplerCustom's denoised_output), nil when
	// no step ran.
	Denoised []float32
	Shape    [4]int
}

// Sample runs sampler over sigmas with this guider: ComfyUI's CFGGuider.sample with
// KSAMPLER.sample inside. noise has the latent's size; latent is the (fixed) latent data
// of the given shape; mask, when not nil, is the latent's noise_mask. seed is the
// sampler's extra_args seed (SDE and ancestral noise).
func (g *Guider) Sample(ctx context.Context, sampler sampling.Sampler, sigmas, noise, latent []float32, shape [4]int,
	mask *gpu.Tensor, seed uint64, step StepFunc) (*SampleResult, error) {
	m := g.Model
	if m == nil || m.Sampling == nil {
		return nil, errors.New("sd: sample: the guider has no model")
	}
	size := numel(shape[:])
	if len(noise) != size || len(latent) != size {
		return nil, fmt.Errorf("sd: sample: noise (%d) and latent (%d) must hold %v = %d values", len(noise), len(latent), shape, size)
	}
	if sampler.Func == nil {
		return nil, fmt.Errorf("sd: sample: sampler %q has no function", sampler.Name)
	}
	if len(sigmas) == 0 {
		return &SampleResult{Samples: append([]float32(nil), latent...), Shape: shape}, nil
	}
	// An all-zero latent (an empty image) is not shifted into the model's space.
	lat := latent
	if !allZero(latent) {
		lat = m.Latent.processIn(latent)
	}
	d := &denoiser{g: g, shape: shape, keepUncond: sampler.CFGPP, sigmas: sigmas, seed: seed}
	defer d.release()
	if mask != nil {
		var err error
		if d.mask, err = prepareMask(mask, shape); err != nil {
			return nil, err
		}
		d.latent, d.noise = lat, noise
		if sampler.Inpaint == sampling.InpaintFreshNoise {
			// The re-noising of the masked-out area uses fresh noise from seed+1.
			d.noise = make([]float32, size)
			rng.New(seed + 1).Randn(d.noise)
		}
	}
	p, err := g.prepareFor(shape, lat, d.mask)
	if err != nil {
		return nil, fmt.Errorf("sd: sample: %w", err)
	}
	d.p = p
	for _, list := range [][]modelCond{p.pos, p.mid, p.neg} {
		if err := d.finishConds(list); err != nil {
			return nil, fmt.Errorf("sd: sample: %w", err)
		}
	}
	if d.controls, err = startControls(ctx, m, p.pos, p.mid, p.neg); err != nil {
		return nil, fmt.Errorf("sd: sample: %w", err)
	}
	defer closeControls(d.controls)
	var last []float32
	opts := &sampling.Options{ModelSampling: m.Sampling, Seed: seed}
	total := len(sigmas) - 1
	opts.Callback = func(i int, denoised, _ []float32) {
		// denoised may be the sampler's buffer: kept by copy, in one buffer for the run.
		last = append(last[:0], denoised...)
		if step != nil {
			step(i, total, denoised, shape)
		}
	}
	out, err := sampler.Sample(ctx, d, sigmas, noise, lat, opts)
	if err != nil {
		return nil, err
	}
	res := &SampleResult{Samples: m.Latent.processOut(out), Shape: shape}
	if last != nil {
		res.Denoised = m.Latent.processOut(last)
	}
	return res, nil
}

// processIn maps a VAE latent into the diffusion model's space: (z − shift)·scale.
func (f LatentFormat) processIn(z []float32) []float32 {
	scale, shift := float32(f.scaleOrOne()), float32(f.Shift)
	out := make([]float32, len(z))
	for i, v := range z {
		if f.Shift != 0 {
			v -= shift
		}
		out[i] = v * scale
	}
	return out
}

// processOut maps back: z/scale + shift.
func (f LatentFormat) processOut(z []float32) []float32 {
	scale, shift := float32(f.scaleOrOne()), float32(f.Shift)
	out := make([]float32, len(z))
	for i, v := range z {
		v /= scale
		if f.Shift != 0 {
			v += shift
		}
		out[i] = v
	}
	return out
}

func (f LatentFormat) scaleOrOne() float64 {
	if f.Scale == 0 {
		return 1
	}
	return f.Scale
}

// prepareMask resizes a noise mask to the latent (comfy.utils.reshape_mask): bilinear
// to H×W, repeated over the channels and the batch.
func prepareMask(mask *gpu.Tensor, shape [4]int) ([]float32, error) {
	ms := mask.Shape()
	if len(ms) < 2 {
		return nil, fmt.Errorf("sd: noise mask %v has fewer than 2 dimensions", ms)
	}
	mh, mw := ms[len(ms)-2], ms[len(ms)-1]
	if mh == 0 || mw == 0 {
		return nil, fmt.Errorf("sd: noise mask %v is empty", ms)
	}
	data, err := mask.Float32()
	if err != nil {
		return nil, fmt.Errorf("sd: noise mask: %w", err)
	}
	planes := len(data) / (mh * mw)
	n, c, h, w := shape[0], shape[1], shape[2], shape[3]
	resized := data
	if mh != h || mw != w {
		if resized, err = resample.Upscale(data, planes, 1, mh, mw, w, h, "bilinear", "disabled"); err != nil {
			return nil, fmt.Errorf("sd: noise mask: %w", err)
		}
	}
	out := make([]float32, 0, n*c*h*w)
	for b := 0; b < n; b++ {
		plane := resized[(b%planes)*h*w : (b%planes+1)*h*w]
		for ch := 0; ch < c; ch++ {
			out = append(out, plane...)
		}
	}
	return out, nil
}

// KSamplerParams are the widgets of KSampler and KSamplerAdvanced (nodes.py
// common_ksampler).
type KSamplerParams struct {
	Seed      uint64
	Steps     int
	CFG       float64
	Sampler   string
	Scheduler string
	Denoise   float64
	// DisableNoise starts from the latent as it is (add_noise "disable").
	DisableNoise bool
	// StartStep and LastStep cut the schedule (start_at_step, end_at_step); a negative
	// value leaves that end alone.
	StartStep, LastStep int
	// ForceFullDenoise sets the last sigma of a cut schedule to 0
	// (return_with_leftover_noise "disable").
	ForceFullDenoise bool
}

// KSample is ComfyUI's common_ksampler: noise from the seed (per batch_index), the
// KSampler schedule (denoise, start/last step), CFG guidance and the sampler. It returns
// the new latent (batch_index and noise_mask kept).
func KSample(ctx context.Context, m *Model, positive, negative Conditioning, latent *Latent, p KSamplerParams, step StepFunc) (*Latent, error) {
	if m == nil || m.Sampling == nil || m.Runtime == nil {
		return nil, errors.New("sd: ksampler: incomplete model")
	}
	if p.Steps < 1 {
		return nil, fmt.Errorf("sd: ksampler: %d steps", p.Steps)
	}
	data, shape, err := LatentData(latent)
	if err != nil {
		return nil, err
	}
	if data, shape, err = fixEmptyLatentChannels(m, data, shape); err != nil {
		return nil, err
	}
	noise, err := Noise{Seed: p.Seed, Disabled: p.DisableNoise}.Generate(shape[:], latent.BatchIndex)
	if err != nil {
		return nil, err
	}
	sampler, err := sampling.LookupSampler(p.Sampler)
	if err != nil {
		return nil, err
	}
	sigmas, err := sampling.KSamplerSigmas(m.Sampling, p.Scheduler, p.Sampler, p.Steps, p.Denoise)
	if err != nil {
		return nil, err
	}
	if p.LastStep >= 0 && p.LastStep < len(sigmas)-1 {
		sigmas = append([]float32(nil), sigmas[:p.LastStep+1]...)
		if p.ForceFullDenoise {
			sigmas[len(sigmas)-1] = 0
		}
	}
	if p.StartStep >= 0 {
		if p.StartStep >= len(sigmas)-1 {
			// Nothing left to do: ComfyUI hands the latent back untouched.
			return latentLike(m.Runtime, latent, data, shape)
		}
		sigmas = sigmas[p.StartStep:]
	}
	g := NewCFGGuider(m, positive, negative, p.CFG)
	res, err := g.Sample(ctx, sampler, sigmas, noise, data, shape, latent.NoiseMask, p.Seed, step)
	if err != nil {
		return nil, err
	}
	return latentLike(m.Runtime, latent, res.Samples, shape)
}

// CustomSample is SamplerCustomAdvanced (and SamplerCustom through a CFG guider): the
// noise, guider, sampler and sigmas given separately. It returns the output latent and
// the last step's denoised estimate (the output again when no step ran).
func CustomSample(ctx context.Context, noise Noise, g *Guider, sampler sampling.Sampler, sigmas []float32, latent *Latent, step StepFunc) (out, denoised *Latent, err error) {
	if g == nil || g.Model == nil || g.Model.Runtime == nil {
		return nil, nil, errors.New("sd: custom sample: incomplete guider")
	}
	data, shape, err := LatentData(latent)
	if err != nil {
		return nil, nil, err
	}
	if data, shape, err = fixEmptyLatentChannels(g.Model, data, shape); err != nil {
		return nil, nil, err
	}
	nz, err := noise.Generate(shape[:], latent.BatchIndex)
	if err != nil {
		return nil, nil, err
	}
	res, err := g.Sample(ctx, sampler, sigmas, nz, data, shape, latent.NoiseMask, noise.Seed, step)
	if err != nil {
		return nil, nil, err
	}
	if out, err = latentLike(g.Model.Runtime, latent, res.Samples, shape); err != nil {
		return nil, nil, err
	}
	denoised = out
	if res.Denoised != nil {
		if denoised, err = latentLike(g.Model.Runtime, latent, res.Denoised, shape); err != nil {
			return nil, nil, err
		}
	}
	return out, denoised, nil
}

// latentLike returns a copy of l's dict with new samples (ComfyUI's latent.copy()).
func latentLike(rt *gpu.Runtime, l *Latent, data []float32, shape [4]int) (*Latent, error) {
	t, err := rt.FromFloat32(data, shape[:]...)
	if err != nil {
		return nil, err
	}
	return &Latent{Samples: t, BatchIndex: l.BatchIndex, NoiseMask: l.NoiseMask}, nil
}

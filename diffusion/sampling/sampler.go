package sampling

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/forgeflow/forgeflow/diffusion/rng"
	"github.com/forgeflow/forgeflow/internal/sleef"
)

// Model is the denoiser a sampler drives: the diffusion model behind classifier-free
// guidance (ComfyUI's CFGGuider + KSamplerX0Inpaint). Denoise returns the guided
// denoised estimate of x at noise level sigma and, for the *_cfg_pp samplers, the
// unconditional prediction (nil when the guider has none). x and the results have the
// latent's shape; the returned slices must not alias x.
type Model interface {
	Denoise(ctx context.Context, x []float32, sigma float32) (denoised, uncond []float32, err error)
}

// IntoModel is a Model that writes its denoised estimate into a buffer the sampler owns,
// so that the samplers written for it (euler, ddim, dpmpp_2m) allocate nothing per step
// once their buffers exist. DenoiseInto writes the estimate of x at sigma into dst (the
// latent's size, not aliasing x) and returns the unconditional prediction as Denoise
// does, except that this slice is the model's and valid only until its next call.
type IntoModel interface {
	Model
	DenoiseInto(ctx context.Context, dst, x []float32, sigma float32) (uncond []float32, err error)
}

// NoiseSampler returns fresh noise of the latent's size for a step from sigma to
// sigmaNext (ComfyUI's noise_sampler(sigma, sigma_next)).
type NoiseSampler func(sigma, sigmaNext float32) []float32

// Options carry what a sampler needs besides the model, x and the sigmas.
type Options struct {
	// ModelSampling selects the eps/v or flow (CONST) branches of some samplers and maps
	// sigmas for the SNR-based ones.
	ModelSampling ModelSampling
	// Seed seeds the default noise samplers, as ComfyUI passes extra_args["seed"].
	Seed uint64
	// Noise overrides the sampler's default noise (ComfyUI's extra_options
	// "noise_sampler"); nil keeps the default.
	Noise NoiseSampler
	// Callback is called once per step with the step index, the denoised estimate and
	// the current x (ComfyUI's callback(i, denoised, x, total)). It may be nil. Both
	// slices may be the sampler's working buffers, overwritten by the next step: a
	// callback copies what it keeps.
	Callback func(i int, denoised, x []float32)

	// run holds the descriptor's Params during Sampler.Sample (nil: DefaultParams).
	run *Params
}

// SamplerFunc is one sampling algorithm: it starts from x (already noised) and walks
// the sigmas, returning the final x. x is the sampler's to overwrite (Sampler.Sample
// passes a fresh copy). It must return ctx.Err() soon after cancellation.
type SamplerFunc func(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error)

// Sampler describes one of ComfyUI's sampler_name values: the algorithm and what the
// layers around it do differently for it. The table behind LookupSampler is the one
// place where a sampler's name decides anything; every layer (schedules, the guider,
// inpainting, the SAMPLER node value) reads these fields instead.
type Sampler struct {
	// Name is ComfyUI's sampler_name ("euler", "dpmpp_2m_sde_gpu", ...).
	Name string
	// Func runs the algorithm.
	Func SamplerFunc
	// CFGPP marks the CFG++ samplers (the *_cfg_pp names): they step with the
	// unconditional prediction, so the guider computes it even at cfg 1 (ComfyUI's
	// disable_cfg1_optimization).
	CFGPP bool
	// DiscardPenultimate makes KSampler schedule one step more and drop the
	// second-to-last sigma (ComfyUI's DISCARD_PENULTIMATE_SIGMA_SAMPLERS).
	DiscardPenultimate bool
	// Inpaint says how the area outside a noise mask is re-noised at each step.
	Inpaint InpaintNoise
	// Noise is the fresh noise the sampler draws while it steps.
	Noise StepNoise
	// Params are the settings a Sampler* node chose; nil runs DefaultParams.
	Params *Params
}

// InpaintNoise is how KSamplerX0Inpaint re-noises the kept area of a masked latent.
type InpaintNoise uint8

const (
	// InpaintSameNoise re-noises with the sampling's own start noise (the default).
	InpaintSameNoise InpaintNoise = iota
	// InpaintFreshNoise re-noises with fresh noise drawn from seed+1: ComfyUI's ddim is
	// euler with inpaint_options {"random": True}.
	InpaintFreshNoise
)

// StepNoise is what a sampler adds to x while it steps, besides the start noise.
type StepNoise uint8

const (
	// NoStepNoise: an ODE solver; the result depends only on the start noise.
	NoStepNoise StepNoise = iota
	// GaussianStepNoise: fresh torch.randn noise each step from a generator seeded
	// with the sampler's seed (default_noise_sampler): the ancestral samplers, ddpm, lcm
	// and the SDE solvers er_sde, sa_solver and seeds_*.
	GaussianStepNoise
	// BrownianStepNoise: noise from a Brownian tree over the schedule's sigma range
	// (BrownianTreeNoiseSampler): dpmpp_sde and the dpmpp_*m_sde family.
	BrownianStepNoise
)

// samplerTable lists the implemented samplers in ComfyUI's SAMPLER_NAMES order.
var samplerTable = []Sampler{
	{Name: "euler", Func: sampleEuler},
	{Name: "euler_cfg_pp", Func: sampleEulerCFGPP, CFGPP: true},
	{Name: "euler_ancestral", Func: sampleEulerAncestral, Noise: GaussianStepNoise},
	{Name: "euler_ancestral_cfg_pp", Func: sampleEulerAncestralCFGPP, CFGPP: true, Noise: GaussianStepNoise},
	{Name: "heun", Func: sampleHeun},
	{Name: "heunpp2", Func: sampleHeunPP2},
	{Name: "dpm_2", Func: sampleDPM2, DiscardPenultimate: true},
	{Name: "dpm_2_ancestral", Func: sampleDPM2Ancestral, DiscardPenultimate: true, Noise: GaussianStepNoise},
	{Name: "lms", Func: sampleLMS},
	{Name: "dpm_fast", Func: sampleDPMFast},
	{Name: "dpm_adaptive", Func: sampleDPMAdaptive},
	{Name: "dpmpp_2s_ancestral", Func: sampleDPMPP2SAncestral, Noise: GaussianStepNoise},
	{Name: "dpmpp_2s_ancestral_cfg_pp", Func: sampleDPMPP2SAncestralCFGPP, CFGPP: true, Noise: GaussianStepNoise},
	{Name: "dpmpp_sde", Func: sampleDPMPPSDE, Noise: BrownianStepNoise},
	{Name: "dpmpp_sde_gpu", Func: sampleDPMPPSDE, Noise: BrownianStepNoise},
	{Name: "dpmpp_2m", Func: sampleDPMPP2M},
	{Name: "dpmpp_2m_cfg_pp", Func: sampleDPMPP2MCFGPP, CFGPP: true},
	{Name: "dpmpp_2m_sde", Func: sampleDPMPP2MSDEMidpoint, Noise: BrownianStepNoise},
	{Name: "dpmpp_2m_sde_gpu", Func: sampleDPMPP2MSDEMidpoint, Noise: BrownianStepNoise},
	{Name: "dpmpp_2m_sde_heun", Func: sampleDPMPP2MSDEHeun, Noise: BrownianStepNoise},
	{Name: "dpmpp_2m_sde_heun_gpu", Func: sampleDPMPP2MSDEHeun, Noise: BrownianStepNoise},
	{Name: "dpmpp_3m_sde", Func: sampleDPMPP3MSDE, Noise: BrownianStepNoise},
	{Name: "dpmpp_3m_sde_gpu", Func: sampleDPMPP3MSDE, Noise: BrownianStepNoise},
	{Name: "ddpm", Func: sampleDDPM, Noise: GaussianStepNoise},
	{Name: "lcm", Func: sampleLCM, Noise: GaussianStepNoise},
	{Name: "ipndm", Func: sampleIPNDM},
	{Name: "ipndm_v", Func: sampleIPNDMV},
	{Name: "deis", Func: sampleDEIS},
	{Name: "res_multistep", Func: sampleResMultistep},
	{Name: "res_multistep_cfg_pp", Func: sampleResMultistepCFGPP, CFGPP: true},
	{Name: "res_multistep_ancestral", Func: sampleResMultistepAncestral, Noise: GaussianStepNoise},
	{Name: "res_multistep_ancestral_cfg_pp", Func: sampleResMultistepAncestralCFGPP, CFGPP: true, Noise: GaussianStepNoise},
	{Name: "gradient_estimation", Func: sampleGradientEstimation},
	{Name: "gradient_estimation_cfg_pp", Func: sampleGradientEstimationCFGPP, CFGPP: true},
	{Name: "er_sde", Func: sampleERSDE, Noise: GaussianStepNoise},
	{Name: "seeds_2", Func: sampleSEEDS2, Noise: GaussianStepNoise},
	{Name: "seeds_3", Func: sampleSEEDS3, Noise: GaussianStepNoise},
	{Name: "sa_solver", Func: sampleSASolver, Noise: GaussianStepNoise},
	{Name: "sa_solver_pece", Func: sampleSASolverPECE, Noise: GaussianStepNoise},
	{Name: "ddim", Func: sampleEuler, Inpaint: InpaintFreshNoise},
	{Name: "uni_pc", Func: sampleUniPC, DiscardPenultimate: true},
	{Name: "uni_pc_bh2", Func: sampleUniPCBH2, DiscardPenultimate: true},
}

// SamplerNames lists the implemented sampler names, in ComfyUI's order.
func SamplerNames() []string {
	names := make([]string, len(samplerTable))
	for i, s := range samplerTable {
		names[i] = s.Name
	}
	return names
}

// LookupSampler returns the named sampler's descriptor.
func LookupSampler(name string) (Sampler, error) {
	for _, s := range samplerTable {
		if s.Name == name {
			return s, nil
		}
	}
	return Sampler{}, fmt.Errorf("sampling: unknown sampler %q", name)
}

// Sample looks the named sampler up and runs it (Sampler.Sample).
func Sample(ctx context.Context, name string, m Model, sigmas, noise, latent []float32, o *Options) ([]float32, error) {
	s, err := LookupSampler(name)
	if err != nil {
		return nil, err
	}
	return s.Sample(ctx, m, sigmas, noise, latent, o)
}

// Sample runs the sampler the way ComfyUI's KSAMPLER.sample does: the initial noise is
// scaled into the latent (max denoise when the first sigma is the model's largest), the
// sampler walks the sigmas, and flow latents are un-scaled at the end. noise and latent
// have the latent's size; latent may be nil for an empty (all-zero) latent.
func (s Sampler) Sample(ctx context.Context, m Model, sigmas, noise, latent []float32, o *Options) ([]float32, error) {
	if s.Func == nil {
		return nil, fmt.Errorf("sampling: sampler %q has no function", s.Name)
	}
	if o == nil || o.ModelSampling == nil {
		return nil, errors.New("sampling: sample needs a model sampling")
	}
	if latent == nil {
		latent = make([]float32, len(noise))
	}
	if len(latent) != len(noise) {
		return nil, fmt.Errorf("sampling: noise has %d values, latent %d", len(noise), len(latent))
	}
	if len(sigmas) == 0 {
		return append([]float32(nil), latent...), nil
	}
	ms := o.ModelSampling
	maxSigma, first := float64(ms.SigmaMax()), float64(sigmas[0])
	maxDenoise := math.Abs(maxSigma-first) <= 1e-5*max(math.Abs(maxSigma), math.Abs(first)) || first > maxSigma
	x := make([]float32, len(noise))
	NoiseScaling(ms.Prediction(), sigmas[0], noise, latent, x, maxDenoise)
	// The sampler gets its own copy of the schedule: uni_pc rewrites the final sigma in
	// place, as upstream does to the caller's tensor, and the closing inverse noise
	// scaling below must see the rewritten value just as KSAMPLER.sample does.
	sched := append([]float32(nil), sigmas...)
	run := *o
	run.run = s.Params
	x, err := s.Func(ctx, m, x, sched, &run)
	if err != nil {
		return nil, err
	}
	out := make([]float32, len(x))
	InverseNoiseScaling(ms.Prediction(), sched[len(sched)-1], x, out)
	return out, nil
}

// GaussianNoise is ComfyUI's default_noise_sampler: a fresh CPU generator seeded with
// seed, drawing torch.randn of the latent's size on every call.
func GaussianNoise(seed uint64, size int) NoiseSampler {
	g := rng.New(seed)
	return func(_, _ float32) []float32 {
		out := make([]float32, size)
		g.Randn(out)
		return out
	}
}

// brownianNoise is the SDE samplers' default: ComfyUI's BrownianTreeNoiseSampler over
// the smallest positive and the largest sigma of the schedule.
func brownianNoise(sigmas []float32, seed uint64, size int) (NoiseSampler, error) {
	lo, hi := float32(math.Inf(1)), float32(math.Inf(-1))
	for _, s := range sigmas {
		if s > 0 {
			lo = min(lo, s)
		}
		hi = max(hi, s)
	}
	tree, err := rng.NewBrownianTree(lo, hi, size, seed)
	if err != nil {
		return nil, err
	}
	return tree.Noise, nil
}

func (o *Options) gaussian(size int) NoiseSampler {
	if o.Noise != nil {
		return o.Noise
	}
	return GaussianNoise(o.Seed, size)
}

// gaussianReused is gaussian for a sampler that reads each draw before it asks for the
// next: the default noise comes in one buffer, refilled by every call.
func (o *Options) gaussianReused(size int) NoiseSampler {
	if o.Noise != nil {
		return o.Noise
	}
	g := rng.New(o.Seed)
	buf := make([]float32, size)
	return func(_, _ float32) []float32 {
		g.Randn(buf)
		return buf
	}
}

func (o *Options) brownian(sigmas []float32, size int) (NoiseSampler, error) {
	if o.Noise != nil {
		return o.Noise, nil
	}
	return brownianNoise(sigmas, o.Seed, size)
}

func (o *Options) step(i int, denoised, x []float32) {
	if o.Callback != nil {
		o.Callback(i, denoised, x)
	}
}

func (o *Options) isFlow() bool {
	return o.ModelSampling != nil && o.ModelSampling.Prediction() == Flow
}

// denoise calls the model after checking for cancellation.
func denoise(ctx context.Context, m Model, x []float32, sigma float32) ([]float32, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d, _, err := m.Denoise(ctx, x, sigma)
	return d, err
}

// denoiseInto is denoise writing the estimate into dst when m is an IntoModel; another
// Model returns a new slice of its own (dst unused). Either way the result is what the
// step reads: dst's contents last until the caller passes dst again.
func denoiseInto(ctx context.Context, m Model, dst, x []float32, sigma float32) ([]float32, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if im, ok := m.(IntoModel); ok {
		if _, err := im.DenoiseInto(ctx, dst, x, sigma); err != nil {
			return nil, err
		}
		return dst, nil
	}
	d, _, err := m.Denoise(ctx, x, sigma)
	return d, err
}

// Scalar helpers that round like torch's float32 0-d tensor maths.

func log32(v float32) float32 { return float32(math.Log(float64(v))) }

// exp32 is torch.exp on a float32 tensor: SLEEF's expf, which the SDE samplers' midpoint
// sigmas need bit for bit (the Brownian tree rounds query times to 6 decimals).
func exp32(v float32) float32   { return sleef.Expf(v) }
func expm132(v float32) float32 { return float32(math.Expm1(float64(v))) }
func sqrt32(v float32) float32  { return float32(math.Sqrt(float64(v))) }

// ancestralStep is k-diffusion's get_ancestral_step in float32: the sigma to step down to
// and the noise to add so that the step ends at sigmaTo.
func ancestralStep(from, to, eta float32) (down, up float32) {
	if eta == 0 {
		return to, 0
	}
	up = eta * sqrt32(to*to*(from*from-to*to)/(from*from))
	if !(up < to) { // Python's min(to, up) keeps "to" unless up is smaller
		up = to
	}
	return sqrt32(to*to - up*up), up
}

// toD is the Karras ODE derivative (x − denoised)/σ.
func toD(x, denoised []float32, sigma float32) []float32 {
	d := make([]float32, len(x))
	for i := range x {
		d[i] = (x[i] - denoised[i]) / sigma
	}
	return d
}

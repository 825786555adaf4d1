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
	// the current x (ComfyUI's callback(i, denoised, x, total)). It may be nil.
	Callback func(i int, denoised, x []float32)
}

// SamplerFunc is one sampling algorithm: it starts from x (already noised) and walks
// the sigmas, returning the final x. It must return ctx.Err() soon after cancellation.
type SamplerFunc func(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error)

// samplerTable lists the implemented samplers under ComfyUI's names in ComfyUI's
// SAMPLER_NAMES order.
var samplerTable = []struct {
	name string
	fn   SamplerFunc
}{
	{"euler", sampleEuler},
	{"euler_cfg_pp", sampleEulerCFGPP},
	{"euler_ancestral", sampleEulerAncestral},
	{"euler_ancestral_cfg_pp", sampleEulerAncestralCFGPP},
	{"heun", sampleHeun},
	{"heunpp2", sampleHeunPP2},
	{"dpm_2", sampleDPM2},
	{"dpm_2_ancestral", sampleDPM2Ancestral},
	{"lms", sampleLMS},
	{"dpm_fast", sampleDPMFast},
	{"dpm_adaptive", sampleDPMAdaptive},
	{"dpmpp_2s_ancestral", sampleDPMPP2SAncestral},
	{"dpmpp_2s_ancestral_cfg_pp", sampleDPMPP2SAncestralCFGPP},
	{"dpmpp_sde", sampleDPMPPSDE},
	{"dpmpp_sde_gpu", sampleDPMPPSDE},
	{"dpmpp_2m", sampleDPMPP2M},
	{"dpmpp_2m_cfg_pp", sampleDPMPP2MCFGPP},
	{"dpmpp_2m_sde", sampleDPMPP2MSDEMidpoint},
	{"dpmpp_2m_sde_gpu", sampleDPMPP2MSDEMidpoint},
	{"dpmpp_2m_sde_heun", sampleDPMPP2MSDEHeun},
	{"dpmpp_2m_sde_heun_gpu", sampleDPMPP2MSDEHeun},
	{"dpmpp_3m_sde", sampleDPMPP3MSDE},
	{"dpmpp_3m_sde_gpu", sampleDPMPP3MSDE},
	{"ddpm", sampleDDPM},
	{"lcm", sampleLCM},
	{"ipndm", sampleIPNDM},
	{"ipndm_v", sampleIPNDMV},
	{"deis", sampleDEIS},
	{"res_multistep", sampleResMultistep},
	{"res_multistep_cfg_pp", sampleResMultistepCFGPP},
	{"res_multistep_ancestral", sampleResMultistepAncestral},
	{"res_multistep_ancestral_cfg_pp", sampleResMultistepAncestralCFGPP},
	{"gradient_estimation", sampleGradientEstimation},
	{"gradient_estimation_cfg_pp", sampleGradientEstimationCFGPP},
	{"er_sde", sampleERSDE},
	{"seeds_2", sampleSEEDS2},
	{"seeds_3", sampleSEEDS3},
	{"sa_solver", sampleSASolver},
	{"sa_solver_pece", sampleSASolverPECE},
	{"ddim", sampleEuler},
	{"uni_pc", sampleUniPC},
	{"uni_pc_bh2", sampleUniPCBH2},
}

// SamplerNames lists the implemented sampler names, in ComfyUI's order.
func SamplerNames() []string {
	names := make([]string, len(samplerTable))
	for i, s := range samplerTable {
		names[i] = s.name
	}
	return names
}

// LookupSampler returns the named sampler.
func LookupSampler(name string) (SamplerFunc, error) {
	for _, s := range samplerTable {
		if s.name == name {
			return s.fn, nil
		}
	}
	return nil, fmt.Errorf("sampling: unknown sampler %q", name)
}

// Sample runs a sampler the way ComfyUI's KSAMPLER.sample does: the initial noise is
// scaled into the latent (max denoise when the first sigma is the model's largest), the
// sampler walks the sigmas, and flow latents are un-scaled at the end. noise and latent
// have the latent's size; latent may be nil for an empty (all-zero) latent.
func Sample(ctx context.Context, name string, m Model, sigmas, noise, latent []float32, o *Options) ([]float32, error) {
	fn, err := LookupSampler(name)
	if err != nil {
		return nil, err
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
	x, err = fn(ctx, m, x, sched, o)
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

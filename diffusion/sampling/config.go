package sampling

import (
	"fmt"
	"math"
)

// Config describes a model sampling the way ComfyUI configures one: the model-sampling
// class, the prediction type and the class's sampling_settings. Zero fields take
// ComfyUI's defaults for the class.
type Config struct {
	// Kind is the model-sampling class: "discrete" (ModelSamplingDiscrete: SD1.x, SD2.x,
	// SDXL), "discrete_flow" (ModelSamplingDiscreteFlow: SD3, AuraFlow) or "flux"
	// (ModelSamplingFlux).
	Kind string
	// Prediction is "eps" or "v_prediction" for the discrete kind; the flow kinds predict
	// a velocity ("const", the default for them).
	Prediction string
	// BetaSchedule names the discrete kind's β schedule: "linear" (the default: betas =
	// linspace(√LinearStart, √LinearEnd)², SD's scaled linear), "sqrt_linear", "sqrt" or
	// "cosine" (make_beta_schedule in comfy/ldm/modules/diffusionmodules/util.py).
	BetaSchedule string
	// LinearStart and LinearEnd bound the linear-family schedules (0.00085 and 0.012).
	LinearStart, LinearEnd float64
	// Timesteps is the size of the sigma table (1000 for the discrete kinds, 10000 for
	// Flux).
	Timesteps int
	// ZSNR rescales a discrete table to zero terminal SNR.
	ZSNR bool
	// Shift is the flow kinds' time shift (1.0 for discrete_flow, 1.15 for Flux).
	Shift float64
	// Multiplier maps discrete_flow sigmas to timesteps (1000).
	Multiplier float64
}

// cosineS is the offset of the cosine schedule (ComfyUI passes cosine_s=8e-3).
const cosineS = 8e-3

// New builds the model sampling c describes, as ComfyUI's model_sampling(model_config,
// model_type) does from the model type and sampling_settings.
func New(c Config) (ModelSampling, error) {
	switch c.Kind {
	case "discrete":
		pred, err := discretePrediction(c.Prediction)
		if err != nil {
			return nil, err
		}
		betas, err := betaSchedule(c)
		if err != nil {
			return nil, err
		}
		return newDiscreteFromBetas(pred, betas, c.ZSNR), nil
	case "discrete_flow", "flux":
		if c.Prediction != "" && c.Prediction != "const" {
			return nil, fmt.Errorf("sampling: %s model sampling predicts a velocity (const), not %q", c.Kind, c.Prediction)
		}
		if c.BetaSchedule != "" || c.ZSNR {
			return nil, fmt.Errorf("sampling: %s model sampling has no beta schedule", c.Kind)
		}
		if c.Kind == "flux" {
			shift, n := c.Shift, c.Timesteps
			if shift == 0 {
				shift = 1.15
			}
			if n == 0 {
				n = 10000
			}
			if n < 1 {
				return nil, fmt.Errorf("sampling: flux model sampling needs at least 1 timestep, not %d", n)
			}
			return newFlux(shift, n), nil
		}
		shift, mult, n := c.Shift, c.Multiplier, c.Timesteps
		if shift == 0 {
			shift = 1
		}
		if mult == 0 {
			mult = 1000
		}
		if n == 0 {
			n = 1000
		}
		if n < 1 {
			return nil, fmt.Errorf("sampling: discrete_flow model sampling needs at least 1 timestep, not %d", n)
		}
		return NewFlowShift(shift, mult, n), nil
	}
	return nil, fmt.Errorf("sampling: unknown model sampling kind %q (discrete, discrete_flow, flux)", c.Kind)
}

func discretePrediction(p string) (Prediction, error) {
	switch p {
	case "", "eps":
		return EPS, nil
	case "v_prediction":
		return VPrediction, nil
	}
	return 0, fmt.Errorf("sampling: discrete model sampling with %q prediction is not supported (eps, v_prediction)", p)
}

// betaSchedule is make_beta_schedule for the discrete kind's settings, in float64.
func betaSchedule(c Config) ([]float64, error) {
	start, end, n := c.LinearStart, c.LinearEnd, c.Timesteps
	if start == 0 {
		start = 0.00085
	}
	if end == 0 {
		end = 0.012
	}
	if n == 0 {
		n = 1000
	}
	if n < 2 {
		return nil, fmt.Errorf("sampling: discrete model sampling needs at least 2 timesteps, not %d", n)
	}
	if c.BetaSchedule == "" || c.BetaSchedule == "linear" {
		return linearBetas(start, end, n), nil
	}
	betas := make([]float64, n)
	switch c.BetaSchedule {
	case "sqrt_linear":
		for i := range betas {
			betas[i] = linspace64(start, end, n, i)
		}
	case "sqrt":
		for i := range betas {
			betas[i] = math.Sqrt(linspace64(start, end, n, i))
		}
	case "cosine":
		// alphā(t) = cos²((t/n + s)/(1 + s)·π/2) normalised to alphā(0); β = 1 − ᾱ(t+1)/ᾱ(t),
		// clamped to [0, 0.999].
		alpha := func(i int) float64 {
			c := math.Cos((float64(i)/float64(n) + cosineS) / (1 + cosineS) * math.Pi / 2)
			return c * c
		}
		a0 := alpha(0)
		prev := 1.0
		for i := range betas {
			next := alpha(i+1) / a0
			betas[i] = min(max(1-next/prev, 0), 0.999)
			prev = next
		}
	default:
		// ComfyUI 0.3.64 also names "squaredcos_cap_v2", but its schedule comes back as a
		// numpy array that torch.cumprod rejects: no ComfyUI model samples with it.
		return nil, fmt.Errorf("sampling: unknown beta schedule %q (linear, sqrt_linear, sqrt, cosine)", c.BetaSchedule)
	}
	return betas, nil
}

// newDiscreteFromBetas builds the sigma table from a β schedule as ComfyUI's
// _register_schedule does: ᾱ = cumprod(1 − β), σ = √((1 − ᾱ)/ᾱ) in float64, optionally
// rescaled to zero terminal SNR, stored in float32 with its float32 logs.
func newDiscreteFromBetas(pred Prediction, betas []float64, zsnr bool) *Discrete {
	sig := make([]float64, len(betas))
	cum := 1.0
	for i, b := range betas {
		cum *= 1 - b
		sig[i] = math.Sqrt((1 - cum) / cum)
	}
	if zsnr {
		rescaleZeroTerminalSNR(sig)
	}
	d := &Discrete{pred: pred, sigmas: make([]float32, len(sig)), logSigmas: make([]float32, len(sig))}
	for i, s := range sig {
		d.sigmas[i] = float32(s)
		d.logSigmas[i] = float32(math.Log(s))
	}
	return d
}

// rescaleZeroTerminalSNR is ComfyUI's rescale_zero_terminal_snr_sigmas in float64: √ᾱ is
// shifted so the last step reaches 0 and scaled back to its first value; the last ᾱ is
// pinned at 4.8973451890853435e-08 so the last sigma stays finite.
func rescaleZeroTerminalSNR(sig []float64) {
	sqrtBar := make([]float64, len(sig))
	for i, s := range sig {
		sqrtBar[i] = math.Sqrt(1 / (s*s + 1))
	}
	first, last := sqrtBar[0], sqrtBar[len(sqrtBar)-1]
	for i, v := range sqrtBar {
		v = (v - last) * (first / (first - last))
		bar := v * v
		if i == len(sqrtBar)-1 {
			bar = 4.8973451890853435e-08
		}
		sig[i] = math.Sqrt((1 - bar) / bar)
	}
}

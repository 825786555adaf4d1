package sampling

import (
	"errors"
	"math"
)

// Prediction is what a model's output means.
type Prediction int

// The prediction types of ComfyUI's ModelType that forgeflow supports.
const (
	// EPS: the model predicts the noise (SD1.x, SDXL).
	EPS Prediction = iota
	// VPrediction: the model predicts v (SD2.x 768-v).
	VPrediction
	// Flow: rectified flow, the model predicts velocity (Flux, SD3); ComfyUI's CONST.
	Flow
	// EDM: Karras et al.'s preconditioning with sigma_data 0.5 (ComfyUI's EDM type as
	// ModelSamplingContinuousEDM's "edm" sampling sets it up; the other types use
	// sigma_data 1).
	EDM
)

// ModelSampling maps noise levels (sigmas) to model timesteps and back, and scales model
// inputs and outputs for one prediction type. ComfyUI's model_sampling object.
type ModelSampling interface {
	// Sigmas is the model's table of noise levels, ascending (float32 as ComfyUI keeps it).
	Sigmas() []float32
	SigmaMin() float32
	SigmaMax() float32
	// Timestep maps a sigma to the model's timestep input.
	Timestep(sigma float32) float32
	// Sigma maps a (fractional) timestep to a sigma.
	Sigma(t float32) float32
	// PercentToSigma maps a fraction of the sampling run (0 start, 1 end) to a sigma.
	PercentToSigma(percent float64) float64
	Prediction() Prediction
}

// Discrete is ComfyUI's ModelSamplingDiscrete: a 1000-step DDPM beta schedule.
type Discrete struct {
	pred      Prediction
	sigmas    []float32
	logSigmas []float32
}

// NewDiscrete builds the table from a linear beta schedule ("linear" in ComfyUI:
// betas = linspace(√start, √end, n)², in float64) as SD1.x, SD2.x and SDXL use with
// start 0.00085, end 0.012, 1000 timesteps.
func NewDiscrete(pred Prediction, linearStart, linearEnd float64, timesteps int) (*Discrete, error) {
	if timesteps < 2 {
		return nil, errors.New("sampling: discrete model sampling needs at least 2 timesteps")
	}
	if pred == Flow {
		return nil, errors.New("sampling: discrete model sampling does not support flow prediction")
	}
	return newDiscreteFromBetas(pred, linearBetas(linearStart, linearEnd, timesteps), false), nil
}

// linearBetas is ComfyUI's "linear" β schedule: linspace(√start, √end, n)² in float64.
func linearBetas(start, end float64, n int) []float64 {
	betas := make([]float64, n)
	a, b := math.Sqrt(start), math.Sqrt(end)
	for i := range betas {
		v := linspace64(a, b, n, i)
		betas[i] = v * v
	}
	return betas
}

// NewSD returns the model sampling of SD1.x/SD2.x/SDXL checkpoints.
func NewSD(pred Prediction) *Discrete {
	d, _ := NewDiscrete(pred, 0.00085, 0.012, 1000)
	return d
}

// linspace64 is element i of torch.linspace(a, b, n) in float64: the first half counts up
// from a, the second half down from b, as torch's kernel does.
func linspace64(a, b float64, n, i int) float64 {
	if n == 1 {
		return a
	}
	step := (b - a) / float64(n-1)
	if i < n/2 {
		return a + step*float64(i)
	}
	return b - step*float64(n-1-i)
}

// linspace32 is torch.linspace(a, b, n) in float32.
func linspace32(a, b float32, n int) []float32 {
	out := make([]float32, n)
	if n == 1 {
		out[0] = a
		return out
	}
	step := (b - a) / float32(n-1)
	for i := range out {
		if i < n/2 {
			out[i] = a + step*float32(i)
		} else {
			out[i] = b - step*float32(n-1-i)
		}
	}
	return out
}

func (d *Discrete) Sigmas() []float32      { return d.sigmas }
func (d *Discrete) SigmaMin() float32      { return d.sigmas[0] }
func (d *Discrete) SigmaMax() float32      { return d.sigmas[len(d.sigmas)-1] }
func (d *Discrete) Prediction() Prediction { return d.pred }

// Timestep returns the index of the table entry whose log-sigma is nearest (the first
// one on a tie), as a float.
func (d *Discrete) Timestep(sigma float32) float32 {
	ls := float32(math.Log(float64(sigma)))
	best, bestDist := 0, float32(math.Inf(1))
	for i, l := range d.logSigmas {
		dist := ls - l
		if dist < 0 {
			dist = -dist
		}
		if dist < bestDist {
			best, bestDist = i, dist
		}
	}
	return float32(best)
}

// Sigma interpolates log-sigma linearly between the two neighbouring table entries.
func (d *Discrete) Sigma(t float32) float32 {
	t = min(max(t, 0), float32(len(d.sigmas)-1))
	lo := float32(math.Floor(float64(t)))
	hi := float32(math.Ceil(float64(t)))
	w := t - lo
	ls := (1-w)*d.logSigmas[int(lo)] + w*d.logSigmas[int(hi)]
	return float32(math.Exp(float64(ls)))
}

// PercentToSigma follows ComfyUI: ≤0 gives a huge sigma (no limit), ≥1 gives 0.
func (d *Discrete) PercentToSigma(percent float64) float64 {
	if percent <= 0 {
		return 999999999.9
	}
	if percent >= 1 {
		return 0
	}
	return float64(d.Sigma(float32((1 - percent) * 999.0)))
}

// FlowShift is ComfyUI's ModelSamplingDiscreteFlow (SD3, AuraFlow): sigma(t) is the
// shifted time t' = shift·t / (1 + (shift−1)·t), timesteps are sigma × multiplier.
type FlowShift struct {
	shift      float64
	multiplier float64
	sigmas     []float32
}

// NewFlowShift builds the table for timesteps 1..n (ComfyUI: n = 1000, multiplier 1000).
func NewFlowShift(shift, multiplier float64, timesteps int) *FlowShift {
	f := &FlowShift{shift: shift, multiplier: multiplier, sigmas: make([]float32, timesteps)}
	for i := range f.sigmas {
		t := float32(i+1) / float32(timesteps) * float32(multiplier)
		f.sigmas[i] = f.Sigma(t)
	}
	return f
}

func (f *FlowShift) Sigmas() []float32      { return f.sigmas }
func (f *FlowShift) SigmaMin() float32      { return f.sigmas[0] }
func (f *FlowShift) SigmaMax() float32      { return f.sigmas[len(f.sigmas)-1] }
func (f *FlowShift) Prediction() Prediction { return Flow }

func (f *FlowShift) Timestep(sigma float32) float32 { return sigma * float32(f.multiplier) }

func (f *FlowShift) Sigma(t float32) float32 {
	return timeSNRShift32(f.shift, t/float32(f.multiplier))
}

func (f *FlowShift) PercentToSigma(percent float64) float64 {
	if percent <= 0 {
		return 1
	}
	if percent >= 1 {
		return 0
	}
	if f.shift == 1 {
		return 1 - percent
	}
	t := 1 - percent
	return f.shift * t / (1 + (f.shift-1)*t)
}

// timeSNRShift32 is ComfyUI's time_snr_shift on a float32 tensor.
func timeSNRShift32(shift float64, t float32) float32 {
	if shift == 1 {
		return t
	}
	a := float32(shift)
	return a * t / (1 + float32(shift-1)*t)
}

// Flux is ComfyUI's ModelSamplingFlux: sigma(t) = e^shift / (e^shift + (1/t − 1)),
// timesteps equal sigmas, a table of 10000 entries.
type Flux struct {
	shift  float64
	sigmas []float32
}

// NewFlux builds the table for the given shift (1.15 by default; the ModelSamplingFlux
// node derives it from the image size, see FluxShift).
func NewFlux(shift float64) *Flux { return newFlux(shift, 10000) }

// newFlux builds a table of n sigmas at t = 1/n … 1.
func newFlux(shift float64, n int) *Flux {
	f := &Flux{shift: shift, sigmas: make([]float32, n)}
	for i := range f.sigmas {
		f.sigmas[i] = f.Sigma(float32(i+1) / float32(n))
	}
	return f
}

// FluxShift is the shift the ModelSamplingFlux node computes for an image size: linear in
// the number of 2×2 latent patches, base_shift at 256 patches and max_shift at 4096.
func FluxShift(maxShift, baseShift float64, width, height int) float64 {
	const x1, x2 = 256.0, 4096.0
	mm := (maxShift - baseShift) / (x2 - x1)
	b := baseShift - mm*x1
	return float64(width*height)/(8*8*2*2)*mm + b
}

func (f *Flux) Sigmas() []float32              { return f.sigmas }
func (f *Flux) SigmaMin() float32              { return f.sigmas[0] }
func (f *Flux) SigmaMax() float32              { return f.sigmas[len(f.sigmas)-1] }
func (f *Flux) Prediction() Prediction         { return Flow }
func (f *Flux) Timestep(sigma float32) float32 { return sigma }

func (f *Flux) Sigma(t float32) float32 {
	e := float32(math.Exp(f.shift))
	return e / (e + (1/t - 1))
}

func (f *Flux) PercentToSigma(percent float64) float64 {
	if percent <= 0 {
		return 1
	}
	if percent >= 1 {
		return 0
	}
	e := math.Exp(f.shift)
	return e / (e + (1/(1-percent) - 1))
}

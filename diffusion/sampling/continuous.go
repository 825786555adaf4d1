package sampling

import (
	"fmt"
	"math"
)

// Continuous is ComfyUI's ModelSamplingContinuousEDM (comfy/model_sampling.py), or with
// V set its ModelSamplingContinuousV: 1000 noise levels spaced evenly in log-sigma
// between sigma_min and sigma_max. The EDM form maps a sigma to the timestep
// 0.25·ln σ, the V form to atan(σ)·2/π. The ModelSamplingContinuousEDM and
// ModelSamplingContinuousV nodes pair it with a prediction type.
type Continuous struct {
	pred   Prediction
	v      bool
	sigmas []float32
}

// NewContinuousEDM builds ModelSamplingContinuousEDM's table (set_parameters: sigmas =
// exp(linspace(ln sigmaMin, ln sigmaMax, 1000)) in float32) for a prediction type:
// EPS, VPrediction or EDM.
func NewContinuousEDM(pred Prediction, sigmaMin, sigmaMax float64) (*Continuous, error) {
	return newContinuous(pred, sigmaMin, sigmaMax, false)
}

// NewContinuousV is ModelSamplingContinuousV (the timestep is atan(σ)·2/π).
func NewContinuousV(pred Prediction, sigmaMin, sigmaMax float64) (*Continuous, error) {
	return newContinuous(pred, sigmaMin, sigmaMax, true)
}

func newContinuous(pred Prediction, sigmaMin, sigmaMax float64, v bool) (*Continuous, error) {
	if pred == Flow {
		return nil, fmt.Errorf("sampling: continuous model sampling does not support flow prediction")
	}
	if !(sigmaMin > 0) || !(sigmaMax > 0) || math.IsInf(sigmaMin, 0) || math.IsInf(sigmaMax, 0) {
		// ln(0) gives ComfyUI a table of zeros or infinities that no scheduler can use.
		return nil, fmt.Errorf("sampling: continuous model sampling needs sigma_min and sigma_max above 0, got %g and %g", sigmaMin, sigmaMax)
	}
	c := &Continuous{pred: pred, v: v}
	ls := linspace32(float32(math.Log(sigmaMin)), float32(math.Log(sigmaMax)), 1000)
	c.sigmas = make([]float32, len(ls))
	for i, l := range ls {
		c.sigmas[i] = float32(math.Exp(float64(l)))
	}
	return c, nil
}

func (c *Continuous) Sigmas() []float32      { return c.sigmas }
func (c *Continuous) SigmaMin() float32      { return c.sigmas[0] }
func (c *Continuous) SigmaMax() float32      { return c.sigmas[len(c.sigmas)-1] }
func (c *Continuous) Prediction() Prediction { return c.pred }

// Timestep is 0.25·ln σ (EDM) or atan(σ)/π·2 (V), in float32.
func (c *Continuous) Timestep(sigma float32) float32 {
	if c.v {
		return float32(math.Atan(float64(sigma))) / math.Pi * 2
	}
	return 0.25 * float32(math.Log(float64(sigma)))
}

// Sigma inverts Timestep: exp(t/0.25) or tan(t·π/2).
func (c *Continuous) Sigma(t float32) float32 {
	if c.v {
		return float32(math.Tan(float64(t * math.Pi / 2)))
	}
	return float32(math.Exp(float64(t / 0.25)))
}

// PercentToSigma interpolates log-sigma between the table's ends in float64, as
// ModelSamplingContinuousEDM.percent_to_sigma does (≤0: a huge sigma, ≥1: 0).
func (c *Continuous) PercentToSigma(percent float64) float64 {
	if percent <= 0 {
		return 999999999.9
	}
	if percent >= 1 {
		return 0
	}
	lo := math.Log(float64(c.SigmaMin()))
	return math.Exp((math.Log(float64(c.SigmaMax()))-lo)*(1-percent) + lo)
}

package builtin

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// The scheduler and sigma nodes of ComfyUI 0.3.64 beyond BasicScheduler and friends:
// comfy_extras/nodes_custom_sampler.py (Polyexponential, VP, BetaSampling, FlipSigmas,
// SetFirstSigma, ExtendIntermediateSigmas, SamplingPercentToSigma, AddNoise),
// nodes_align_your_steps.py, nodes_gits.py and nodes_optimalsteps.py.

// tabulatedDenoise is the io.Schema denoise input of the tabulated schedulers.
func tabulatedDenoise() graph.Input {
	return graph.Input{Name: "denoise", Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(0.0), Max: graph.Num(1.0), Step: graph.Num(0.01)}
}

func v3Scheduler(name, module string, inputs ...graph.Input) graph.Schema {
	s := schedulerSchema(name, inputs...)
	s.DisplayName = ""
	s.PythonModule = module
	s.Extra = v3Extra(1, nil)
	return s
}

// AlignYourStepsScheduler is ComfyUI's AlignYourStepsScheduler.
type AlignYourStepsScheduler struct {
	ModelType string  `input:"model_type"`
	Steps     int     `input:"steps"`
	Denoise   float64 `input:"denoise"`
}

// Schema implements nodes.Typed.
func (*AlignYourStepsScheduler) Schema() graph.Schema {
	return v3Scheduler("AlignYourStepsScheduler", "comfy_extras.nodes_align_your_steps",
		comboV3("model_type", sampling.AYSModelTypes...),
		graph.Input{Name: "steps", Type: graph.TypeInt, Default: 10, Min: graph.Num(1), Max: graph.Num(10000)},
		tabulatedDenoise())
}

// Run implements nodes.Typed.
func (n *AlignYourStepsScheduler) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	s, err := sampling.AYSSigmas(n.ModelType, n.Steps, n.Denoise)
	return nodes.One(Sigmas(s), err)
}

// GITSScheduler is ComfyUI's GITSScheduler.
type GITSScheduler struct {
	Coeff   float64 `input:"coeff"`
	Steps   int     `input:"steps"`
	Denoise float64 `input:"denoise"`
}

// Schema implements nodes.Typed.
func (*GITSScheduler) Schema() graph.Schema {
	return v3Scheduler("GITSScheduler", "comfy_extras.nodes_gits",
		graph.Input{Name: "coeff", Type: graph.TypeFloat, Default: 1.20, Min: graph.Num(0.80), Max: graph.Num(1.50), Step: graph.Num(0.05)},
		graph.Input{Name: "steps", Type: graph.TypeInt, Default: 10, Min: graph.Num(2), Max: graph.Num(1000)},
		tabulatedDenoise())
}

// Run implements nodes.Typed.
func (n *GITSScheduler) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	s, err := sampling.GITSSigmas(n.Coeff, n.Steps, n.Denoise)
	return nodes.One(Sigmas(s), err)
}

// OptimalStepsScheduler is ComfyUI's OptimalStepsScheduler.
type OptimalStepsScheduler struct {
	ModelType string  `input:"model_type"`
	Steps     int     `input:"steps"`
	Denoise   float64 `input:"denoise"`
}

// Schema implements nodes.Typed.
func (*OptimalStepsScheduler) Schema() graph.Schema {
	return v3Scheduler("OptimalStepsScheduler", "comfy_extras.nodes_optimalsteps",
		comboV3("model_type", sampling.OptimalStepsModelTypes...),
		graph.Input{Name: "steps", Type: graph.TypeInt, Default: 20, Min: graph.Num(3), Max: graph.Num(1000)},
		tabulatedDenoise())
}

// Run implements nodes.Typed.
func (n *OptimalStepsScheduler) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	s, err := sampling.OptimalStepsSigmas(n.ModelType, n.Steps, n.Denoise)
	return nodes.One(Sigmas(s), err)
}

// PolyexponentialScheduler is ComfyUI's PolyexponentialScheduler.
type PolyexponentialScheduler struct {
	sigmaRange
	Rho float64 `input:"rho"`
}

// Schema implements nodes.Typed.
func (*PolyexponentialScheduler) Schema() graph.Schema {
	return schedulerSchema("PolyexponentialScheduler", append(sigmaRangeInputs(),
		graph.Input{Name: "rho", Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(0.0), Max: graph.Num(100.0), Step: graph.Num(0.01), NoRound: true})...)
}

// Run implements nodes.Typed.
func (n *PolyexponentialScheduler) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if n.SigmaMax <= 0 || n.SigmaMin <= 0 {
		// log(0) is a math domain error in ComfyUI too.
		return nodes.Result{}, errors.New("builtin: PolyexponentialScheduler: sigma_max and sigma_min must be above 0")
	}
	return nodes.One(Sigmas(sampling.PolyexponentialSigmas(n.Steps, n.SigmaMin, n.SigmaMax, n.Rho)), nil)
}

// LaplaceScheduler is ComfyUI's LaplaceScheduler (no final 0, as upstream).
type LaplaceScheduler struct {
	sigmaRange
	Mu   float64 `input:"mu"`
	Beta float64 `input:"beta"`
}

// Schema implements nodes.Typed.
func (*LaplaceScheduler) Schema() graph.Schema {
	return schedulerSchema("LaplaceScheduler", append(sigmaRangeInputs(),
		graph.Input{Name: "mu", Type: graph.TypeFloat, Default: 0.0, Min: graph.Num(-10.0), Max: graph.Num(10.0), Step: graph.Num(0.1), NoRound: true},
		graph.Input{Name: "beta", Type: graph.TypeFloat, Default: 0.5, Min: graph.Num(0.0), Max: graph.Num(10.0), Step: graph.Num(0.1), NoRound: true})...)
}

// Run implements nodes.Typed.
func (n *LaplaceScheduler) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(Sigmas(sampling.LaplaceSigmas(n.Steps, n.SigmaMin, n.SigmaMax, n.Mu, n.Beta)), nil)
}

// VPScheduler is ComfyUI's VPScheduler.
type VPScheduler struct {
	Steps   int     `input:"steps"`
	BetaD   float64 `input:"beta_d"`
	BetaMin float64 `input:"beta_min"`
	EpsS    float64 `input:"eps_s"`
}

// Schema implements nodes.Typed.
func (*VPScheduler) Schema() graph.Schema {
	bound := func(name string, def float64) graph.Input {
		return graph.Input{Name: name, Type: graph.TypeFloat, Default: def, Min: graph.Num(0.0), Max: graph.Num(5000.0), Step: graph.Num(0.01), NoRound: true}
	}
	return schedulerSchema("VPScheduler", stepsInput(""), bound("beta_d", 19.9), bound("beta_min", 0.1),
		graph.Input{Name: "eps_s", Type: graph.TypeFloat, Default: 0.001, Min: graph.Num(0.0), Max: graph.Num(1.0), Step: graph.Num(0.0001), NoRound: true})
}

// Run implements nodes.Typed.
func (n *VPScheduler) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(Sigmas(sampling.VPSigmas(n.Steps, n.BetaD, n.BetaMin, n.EpsS)), nil)
}

// BetaSamplingScheduler is ComfyUI's BetaSamplingScheduler: the beta scheduler with
// its alpha and beta.
type BetaSamplingScheduler struct {
	Model *sd.Model `input:"model"`
	Steps int       `input:"steps"`
	Alpha float64   `input:"alpha"`
	Beta  float64   `input:"beta"`
}

// Schema implements nodes.Typed.
func (*BetaSamplingScheduler) Schema() graph.Schema {
	shape := func(name string) graph.Input {
		return graph.Input{Name: name, Type: graph.TypeFloat, Default: 0.6, Min: graph.Num(0.0), Max: graph.Num(50.0), Step: graph.Num(0.01), NoRound: true}
	}
	return schedulerSchema("BetaSamplingScheduler", socket("model", "MODEL"), stepsInput(""), shape("alpha"), shape("beta"))
}

// Run implements nodes.Typed.
func (n *BetaSamplingScheduler) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if n.Alpha <= 0 || n.Beta <= 0 {
		// scipy's beta.ppf is NaN there, and ComfyUI then fails on int(NaN).
		return nodes.Result{}, errors.New("builtin: BetaSamplingScheduler: alpha and beta must be above 0")
	}
	return nodes.One(Sigmas(sampling.BetaSigmas(n.Model.Sampling, n.Steps, n.Alpha, n.Beta)), nil)
}

func sigmasSchema(name string, inputs ...graph.Input) graph.Schema {
	return graph.Schema{Name: name, DisplayName: name, Category: "sampling/custom_sampling/sigmas", PythonModule: customSamplerModule,
		Inputs: inputs, Outputs: outputs("SIGMAS")}
}

// FlipSigmas is ComfyUI's FlipSigmas: the schedule reversed, a leading 0 replaced by
// 0.0001.
type FlipSigmas struct {
	Sigmas Sigmas `input:"sigmas"`
}

// Schema implements nodes.Typed.
func (*FlipSigmas) Schema() graph.Schema {
	return sigmasSchema("FlipSigmas", socket("sigmas", "SIGMAS"))
}

// Run implements nodes.Typed.
func (n *FlipSigmas) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	out := make(Sigmas, len(n.Sigmas))
	for i, v := range n.Sigmas {
		out[len(out)-1-i] = v
	}
	if len(out) > 0 && out[0] == 0 {
		out[0] = 0.0001
	}
	return nodes.One(out, nil)
}

// SetFirstSigma is ComfyUI's SetFirstSigma.
type SetFirstSigma struct {
	Sigmas Sigmas  `input:"sigmas"`
	Sigma  float64 `input:"sigma"`
}

// Schema implements nodes.Typed.
func (*SetFirstSigma) Schema() graph.Schema {
	return sigmasSchema("SetFirstSigma", socket("sigmas", "SIGMAS"),
		graph.Input{Name: "sigma", Type: graph.TypeFloat, Default: 136.0, Min: graph.Num(0.0), Max: graph.Num(20000.0), Step: graph.Num(0.001), NoRound: true})
}

// Run implements nodes.Typed.
func (n *SetFirstSigma) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if len(n.Sigmas) == 0 {
		return nodes.Result{}, errors.New("builtin: SetFirstSigma: the schedule is empty")
	}
	out := append(Sigmas(nil), n.Sigmas...)
	out[0] = float32(n.Sigma)
	return nodes.One(out, nil)
}

// ExtendIntermediateSigmas is ComfyUI's ExtendIntermediateSigmas: steps−1 extra sigmas
// inside every step whose start lies in [end_at_sigma, start_at_sigma].
type ExtendIntermediateSigmas struct {
	Sigmas       Sigmas  `input:"sigmas"`
	Steps        int     `input:"steps"`
	StartAtSigma float64 `input:"start_at_sigma"`
	EndAtSigma   float64 `input:"end_at_sigma"`
	Spacing      string  `input:"spacing"`
}

// Schema implements nodes.Typed.
func (*ExtendIntermediateSigmas) Schema() graph.Schema {
	return sigmasSchema("ExtendIntermediateSigmas", socket("sigmas", "SIGMAS"),
		graph.Input{Name: "steps", Type: graph.TypeInt, Default: 2, Min: graph.Num(1), Max: graph.Num(100)},
		graph.Input{Name: "start_at_sigma", Type: graph.TypeFloat, Default: -1.0, Min: graph.Num(-1.0), Max: graph.Num(20000.0), Step: graph.Num(0.01), NoRound: true},
		graph.Input{Name: "end_at_sigma", Type: graph.TypeFloat, Default: 12.0, Min: graph.Num(0.0), Max: graph.Num(20000.0), Step: graph.Num(0.01), NoRound: true},
		combo("spacing", "linear", "cosine", "sine"))
}

// Run implements nodes.Typed. The fractions are float32 as torch computes them:
// linspace(0, 1, steps+1) without its ends, through sin(x·π/2) (cosine) or
// 1 − cos(x·π/2) (sine).
func (n *ExtendIntermediateSigmas) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	start := float32(n.StartAtSigma)
	if n.StartAtSigma < 0 {
		start = float32(math.Inf(1))
	}
	end := float32(n.EndAtSigma)
	frac := sampling.Linspace32(0, 1, n.Steps+1)
	frac = frac[1 : len(frac)-1]
	pi := float32(math.Pi) // x·π in float32, then /2
	for i, x := range frac {
		switch n.Spacing {
		case "cosine":
			frac[i] = float32(math.Sin(float64(x * pi / 2)))
		case "sine":
			frac[i] = 1 - float32(math.Cos(float64(x*pi/2)))
		}
	}
	out := Sigmas{}
	for i := 0; i+1 < len(n.Sigmas); i++ {
		cur, next := n.Sigmas[i], n.Sigmas[i+1]
		out = append(out, cur)
		if end <= cur && cur <= start {
			for _, f := range frac {
				out = append(out, f*(next-cur)+cur)
			}
		}
	}
	if len(n.Sigmas) > 0 {
		out = append(out, n.Sigmas[len(n.Sigmas)-1])
	}
	return nodes.One(out, nil)
}

// SamplingPercentToSigma is ComfyUI's SamplingPercentToSigma: the sigma at a fraction
// of the model's schedule.
type SamplingPercentToSigma struct {
	Model             *sd.Model `input:"model"`
	SamplingPercent   float64   `input:"sampling_percent"`
	ReturnActualSigma bool      `input:"return_actual_sigma"`
}

// Schema implements nodes.Typed.
func (*SamplingPercentToSigma) Schema() graph.Schema {
	s := sigmasSchema("SamplingPercentToSigma", socketV3("model", "MODEL"),
		graph.Input{Name: "sampling_percent", Type: graph.TypeFloat, Default: 0.0, Min: graph.Num(0.0), Max: graph.Num(1.0), Step: graph.Num(0.0001)},
		graph.Input{Name: "return_actual_sigma", Type: graph.TypeBoolean, Default: false,
			Tooltip: "Return the actual sigma value instead of the value used for interval checks.\nThis only affects results at 0.0 and 1.0."})
	s.Outputs = []graph.Output{{Type: graph.TypeFloat, Name: "sigma_value"}}
	return s
}

// Run implements nodes.Typed. percent_to_sigma answers 999999999.9 at 0 and 0 at 1
// (interval bounds); return_actual_sigma gives the model's sigma_max and sigma_min
// there instead.
func (n *SamplingPercentToSigma) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	ms := n.Model.Sampling
	v := ms.PercentToSigma(n.SamplingPercent)
	if n.ReturnActualSigma {
		switch n.SamplingPercent {
		case 0:
			v = float64(ms.SigmaMax())
		case 1:
			v = float64(ms.SigmaMin())
		}
	}
	return nodes.One(v, nil)
}

// AddNoise is ComfyUI's AddNoise: the latent noised to the schedule's span
// (|σ_first − σ_last|, or the only sigma) with the model's noise scaling, in the
// model's latent space.
type AddNoise struct {
	Model       *sd.Model  `input:"model"`
	Noise       sd.Noise   `input:"noise"`
	Sigmas      Sigmas     `input:"sigmas"`
	LatentImage *sd.Latent `input:"latent_image"`
}

// Schema implements nodes.Typed.
func (*AddNoise) Schema() graph.Schema {
	return graph.Schema{Name: "AddNoise", DisplayName: "AddNoise", Category: "_for_testing/custom_sampling/noise", PythonModule: customSamplerModule,
		Inputs:  []graph.Input{socket("model", "MODEL"), socket("noise", "NOISE"), socket("sigmas", "SIGMAS"), socket("latent_image", "LATENT")},
		Outputs: outputs("LATENT")}
}

// Run implements nodes.Typed (AddNoise.add_noise): an empty latent is not shifted by
// process_latent_in, non-finite results become 0.
func (n *AddNoise) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if len(n.Sigmas) == 0 {
		return nodes.One(n.LatentImage, nil)
	}
	data, shape, err := sd.LatentData(n.LatentImage)
	if err != nil {
		return nodes.Result{}, err
	}
	noise, err := n.Noise.Generate(shape[:], n.LatentImage.BatchIndex)
	if err != nil {
		return nodes.Result{}, err
	}
	scale := n.Sigmas[0]
	if len(n.Sigmas) > 1 {
		scale = float32(math.Abs(float64(n.Sigmas[0] - n.Sigmas[len(n.Sigmas)-1])))
	}
	latent := append([]float32(nil), data...)
	for _, v := range latent {
		if v != 0 {
			n.Model.Latent.ProcessIn(latent)
			break
		}
	}
	out := make([]float32, len(latent))
	sampling.NoiseScaling(n.Model.Sampling.Prediction(), scale, noise, latent, out, false)
	n.Model.Latent.ProcessOut(out)
	for i, v := range out {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			out[i] = 0
		}
	}
	l, err := newLatent(n.LatentImage, out, shape)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: AddNoise: %w", err)
	}
	return nodes.One(l, nil)
}

// Interface guards.
var (
	_ nodes.Typed = (*AlignYourStepsScheduler)(nil)
	_ nodes.Typed = (*GITSScheduler)(nil)
	_ nodes.Typed = (*OptimalStepsScheduler)(nil)
	_ nodes.Typed = (*PolyexponentialScheduler)(nil)
	_ nodes.Typed = (*LaplaceScheduler)(nil)
	_ nodes.Typed = (*VPScheduler)(nil)
	_ nodes.Typed = (*BetaSamplingScheduler)(nil)
	_ nodes.Typed = (*FlipSigmas)(nil)
	_ nodes.Typed = (*SetFirstSigma)(nil)
	_ nodes.Typed = (*ExtendIntermediateSigmas)(nil)
	_ nodes.Typed = (*SamplingPercentToSigma)(nil)
	_ nodes.Typed = (*AddNoise)(nil)
)

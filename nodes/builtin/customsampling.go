package builtin

import (
	"context"
	"fmt"
	"math"

	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// Custom sampling nodes (comfy_extras/nodes_custom_sampler.py): SamplerCustom,
// SamplerCustomAdvanced and the nodes that make their SAMPLER, SIGMAS, NOISE and
// GUIDER inputs.

func customOutputs() []graph.Output {
	return []graph.Output{{Type: "LATENT", Name: "output"}, {Type: "LATENT", Name: "denoised_output"}}
}

// SamplerCustom is ComfyUI's SamplerCustom: a CFG guider and noise built from its
// inputs, sampled along the given sigmas.
type SamplerCustom struct {
	Model       *sd.Model       `input:"model"`
	AddNoise    bool            `input:"add_noise"`
	NoiseSeed   uint64          `input:"noise_seed"`
	CFG         float64         `input:"cfg"`
	Positive    sd.Conditioning `input:"positive"`
	Negative    sd.Conditioning `input:"negative"`
	Sampler     *Sampler        `input:"sampler"`
	Sigmas      Sigmas          `input:"sigmas"`
	LatentImage *sd.Latent      `input:"latent_image"`
}

// Schema implements nodes.Typed.
func (*SamplerCustom) Schema() graph.Schema {
	return graph.Schema{
		Name: "SamplerCustom", DisplayName: "SamplerCustom", Category: "sampling/custom_sampling", PythonModule: customSamplerModule,
		Inputs: []graph.Input{
			socket("model", "MODEL"),
			{Name: "add_noise", Type: graph.TypeBoolean, Default: true},
			seedInput("noise_seed", ""),
			cfgInput("cfg", ""),
			socket("positive", "CONDITIONING"), socket("negative", "CONDITIONING"),
			socket("sampler", "SAMPLER"), socket("sigmas", "SIGMAS"), socket("latent_image", "LATENT"),
		},
		Outputs: customOutputs(),
	}
}

// Run implements nodes.Typed. The sampler's seed is noise_seed even when no noise is
// added.
func (n *SamplerCustom) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	g := sd.NewCFGGuider(n.Model, n.Positive, n.Negative, n.CFG)
	noise := sd.Noise{Seed: n.NoiseSeed, Disabled: !n.AddNoise}
	out, den, err := sd.CustomSample(ctx, noise, g, n.Sampler.Sampler, n.Sigmas, n.LatentImage, stepReporter(env, n.Model.Latent))
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.Outputs(out, den)
}

// SamplerCustomAdvanced is ComfyUI's SamplerCustomAdvanced: noise, guider, sampler and
// sigmas all from other nodes.
type SamplerCustomAdvanced struct {
	Noise       sd.Noise   `input:"noise"`
	Guider      *sd.Guider `input:"guider"`
	Sampler     *Sampler   `input:"sampler"`
	Sigmas      Sigmas     `input:"sigmas"`
	LatentImage *sd.Latent `input:"latent_image"`
}

// Schema implements nodes.Typed.
func (*SamplerCustomAdvanced) Schema() graph.Schema {
	return graph.Schema{
		Name: "SamplerCustomAdvanced", DisplayName: "SamplerCustomAdvanced", Category: "sampling/custom_sampling", PythonModule: customSamplerModule,
		Inputs: []graph.Input{
			socket("noise", "NOISE"), socket("guider", "GUIDER"), socket("sampler", "SAMPLER"),
			socket("sigmas", "SIGMAS"), socket("latent_image", "LATENT"),
		},
		Outputs: customOutputs(),
	}
}

// Run implements nodes.Typed.
func (n *SamplerCustomAdvanced) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	out, den, err := sd.CustomSample(ctx, n.Noise, n.Guider, n.Sampler.Sampler, n.Sigmas, n.LatentImage, stepReporter(env, n.Guider.Model.Latent))
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.Outputs(out, den)
}

// KSamplerSelect is ComfyUI's KSamplerSelect: a SAMPLER by name.
type KSamplerSelect struct {
	SamplerName string `input:"sampler_name"`
}

// Schema implements nodes.Typed.
func (*KSamplerSelect) Schema() graph.Schema {
	return graph.Schema{
		Name: "KSamplerSelect", DisplayName: "KSamplerSelect", Category: "sampling/custom_sampling/samplers", PythonModule: customSamplerModule,
		Inputs:  []graph.Input{samplerCombo("")},
		Outputs: outputs("SAMPLER"),
	}
}

// Run implements nodes.Typed.
func (n *KSamplerSelect) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	s, err := sampling.LookupSampler(n.SamplerName)
	return nodes.One(&Sampler{s}, err)
}

func schedulerSchema(name string, inputs ...graph.Input) graph.Schema {
	return graph.Schema{Name: name, DisplayName: name, Category: "sampling/custom_sampling/schedulers",
		PythonModule: customSamplerModule, Inputs: inputs, Outputs: outputs("SIGMAS")}
}

// denoiseInput is the schedulers' denoise: 0 … 1, default 1.
func denoiseInput(minZeroInt bool) graph.Input {
	in := graph.Input{Name: "denoise", Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(0.0), Max: graph.Num(1.0), Step: graph.Num(0.01)}
	if minZeroInt {
		in.Min = graph.Num(0) // SDTurboScheduler writes its minimum as an int
	}
	return in
}

// BasicScheduler is ComfyUI's BasicScheduler: a scheduler of the registry on the
// model's sigmas.
type BasicScheduler struct {
	Model     *sd.Model `input:"model"`
	Scheduler string    `input:"scheduler"`
	Steps     int       `input:"steps"`
	Denoise   float64   `input:"denoise"`
}

// Schema implements nodes.Typed.
func (*BasicScheduler) Schema() graph.Schema {
	return schedulerSchema("BasicScheduler", socket("model", "MODEL"), schedulerCombo(""), stepsInput(""), denoiseInput(false))
}

// Run implements nodes.Typed.
func (n *BasicScheduler) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(basicSigmas(n.Model, n.Scheduler, n.Steps, n.Denoise))
}

// basicSigmas is BasicScheduler.get_sigmas: for denoise < 1 the schedule of
// int(steps/denoise) steps, cut to its last steps+1 sigmas.
func basicSigmas(m *sd.Model, name string, steps int, denoise float64) (Sigmas, error) {
	fn, err := sampling.LookupScheduler(name)
	if err != nil {
		return nil, err
	}
	total := steps
	if denoise < 1 {
		if denoise <= 0 {
			return Sigmas{}, nil
		}
		total = int(float64(steps) / denoise)
	}
	s := fn(m.Sampling, total)
	if len(s) > steps+1 {
		s = s[len(s)-(steps+1):]
	}
	return Sigmas(append([]float32(nil), s...)), nil
}

// sigmaBound is a scheduler's sigma_max or sigma_min: 0 … 5000, not rounded.
func sigmaBound(name string, def float64) graph.Input {
	return graph.Input{Name: name, Type: graph.TypeFloat, Default: def, Min: graph.Num(0.0), Max: graph.Num(5000.0), Step: graph.Num(0.01), NoRound: true}
}

// sigmaRange holds the inputs KarrasScheduler and ExponentialScheduler share.
type sigmaRange struct {
	Steps    int     `input:"steps"`
	SigmaMax float64 `input:"sigma_max"`
	SigmaMin float64 `input:"sigma_min"`
}

func sigmaRangeInputs() []graph.Input {
	return []graph.Input{stepsInput(""), sigmaBound("sigma_max", 14.614642), sigmaBound("sigma_min", 0.0291675)}
}

// KarrasScheduler is ComfyUI's KarrasScheduler.
type KarrasScheduler struct {
	sigmaRange
	Rho float64 `input:"rho"`
}

// Schema implements nodes.Typed.
func (*KarrasScheduler) Schema() graph.Schema {
	return schedulerSchema("KarrasScheduler", append(sigmaRangeInputs(),
		graph.Input{Name: "rho", Type: graph.TypeFloat, Default: 7.0, Min: graph.Num(0.0), Max: graph.Num(100.0), Step: graph.Num(0.01), NoRound: true})...)
}

// Run implements nodes.Typed.
func (n *KarrasScheduler) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if n.Rho == 0 {
		return nodes.Result{}, fmt.Errorf("builtin: KarrasScheduler: rho must be above 0")
	}
	return nodes.One(Sigmas(sampling.KarrasSigmas(n.Steps, n.SigmaMin, n.SigmaMax, n.Rho)), nil)
}

// ExponentialScheduler is ComfyUI's ExponentialScheduler.
type ExponentialScheduler struct {
	sigmaRange
}

// Schema implements nodes.Typed.
func (*ExponentialScheduler) Schema() graph.Schema {
	return schedulerSchema("ExponentialScheduler", sigmaRangeInputs()...)
}

// Run implements nodes.Typed.
func (n *ExponentialScheduler) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if n.SigmaMax <= 0 || n.SigmaMin <= 0 {
		// log(0) is a math domain error in ComfyUI too.
		return nodes.Result{}, fmt.Errorf("builtin: ExponentialScheduler: sigma_max and sigma_min must be above 0")
	}
	return nodes.One(Sigmas(sampling.ExponentialSigmas(n.Steps, n.SigmaMin, n.SigmaMax)), nil)
}

// SDTurboScheduler is ComfyUI's SDTurboScheduler.
type SDTurboScheduler struct {
	Model   *sd.Model `input:"model"`
	Steps   int       `input:"steps"`
	Denoise float64   `input:"denoise"`
}

// Schema implements nodes.Typed.
func (*SDTurboScheduler) Schema() graph.Schema {
	return schedulerSchema("SDTurboScheduler", socket("model", "MODEL"),
		graph.Input{Name: "steps", Type: graph.TypeInt, Default: 1, Min: graph.Num(1), Max: graph.Num(10)},
		denoiseInput(true))
}

// Run implements nodes.Typed.
func (n *SDTurboScheduler) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(turboSigmas(n.Model, n.Steps, n.Denoise), nil)
}

// turboSigmas is SDTurboScheduler.get_sigmas: timesteps 999, 899, …, 99 from
// 10 − int(10·denoise) on, steps of them, as sigmas, then 0.
func turboSigmas(m *sd.Model, steps int, denoise float64) Sigmas {
	start := 10 - int(10*denoise)
	out := Sigmas{}
	for i := start; i < min(start+steps, 10); i++ {
		out = append(out, m.Sampling.Sigma(float32(999-100*i)))
	}
	return append(out, 0)
}

func splitSchema(name string, second graph.Input) graph.Schema {
	return graph.Schema{Name: name, DisplayName: name, Category: "sampling/custom_sampling/sigmas", PythonModule: customSamplerModule,
		Inputs:  []graph.Input{socket("sigmas", "SIGMAS"), second},
		Outputs: []graph.Output{{Type: "SIGMAS", Name: "high_sigmas"}, {Type: "SIGMAS", Name: "low_sigmas"}}}
}

// SplitSigmas is ComfyUI's SplitSigmas: the schedule cut at a step.
type SplitSigmas struct {
	Sigmas Sigmas `input:"sigmas"`
	Step   int    `input:"step"`
}

// Schema implements nodes.Typed.
func (*SplitSigmas) Schema() graph.Schema {
	return splitSchema("SplitSigmas", graph.Input{Name: "step", Type: graph.TypeInt, Default: 0, Min: graph.Num(0), Max: graph.Num(10000)})
}

// Run implements nodes.Typed.
func (n *SplitSigmas) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	hi, lo := splitAt(n.Sigmas, n.Step)
	return nodes.Outputs(hi, lo)
}

// splitAt is sigmas[:step+1], sigmas[step:] with Python's clamped slices.
func splitAt(s Sigmas, step int) (Sigmas, Sigmas) {
	a := min(step+1, len(s))
	b := min(step, len(s))
	return append(Sigmas{}, s[:a]...), append(Sigmas{}, s[b:]...)
}

// SplitSigmasDenoise is ComfyUI's SplitSigmasDenoise: the schedule cut where denoise
// starts.
type SplitSigmasDenoise struct {
	Sigmas  Sigmas  `input:"sigmas"`
	Denoise float64 `input:"denoise"`
}

// Schema implements nodes.Typed.
func (*SplitSigmasDenoise) Schema() graph.Schema {
	return splitSchema("SplitSigmasDenoise", graph.Input{Name: "denoise", Type: graph.TypeFloat, Default: 1.0,
		Min: graph.Num(0.0), Max: graph.Num(1.0), Step: graph.Num(0.01)})
}

// Run implements nodes.Typed.
func (n *SplitSigmasDenoise) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	hi, lo := splitDenoise(n.Sigmas, n.Denoise)
	return nodes.Outputs(hi, lo)
}

// splitDenoise is SplitSigmasDenoise: total = round(steps·denoise) (half to even);
// high = sigmas[:-total] (empty when total is 0, as Python's [:-0]), low =
// sigmas[-(total+1):].
func splitDenoise(s Sigmas, denoise float64) (Sigmas, Sigmas) {
	steps := max(len(s)-1, 0)
	total := int(math.RoundToEven(float64(steps) * denoise))
	hi := Sigmas{}
	if total > 0 {
		hi = append(hi, s[:max(len(s)-total, 0)]...)
	}
	lo := append(Sigmas{}, s[max(len(s)-(total+1), 0):]...)
	return hi, lo
}

// RandomNoise is ComfyUI's RandomNoise: the NOISE of a seed.
type RandomNoise struct {
	NoiseSeed uint64 `input:"noise_seed"`
}

// Schema implements nodes.Typed.
func (*RandomNoise) Schema() graph.Schema {
	return graph.Schema{
		Name: "RandomNoise", DisplayName: "RandomNoise", Category: "sampling/custom_sampling/noise", PythonModule: customSamplerModule,
		Inputs:  []graph.Input{seedInput("noise_seed", "")},
		Outputs: outputs("NOISE"),
	}
}

// Run implements nodes.Typed.
func (n *RandomNoise) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(sd.Noise{Seed: n.NoiseSeed}, nil)
}

// DisableNoise is ComfyUI's DisableNoise: a NOISE of zeros.
type DisableNoise struct{}

// Schema implements nodes.Typed.
func (*DisableNoise) Schema() graph.Schema {
	return graph.Schema{
		Name: "DisableNoise", DisplayName: "DisableNoise", Category: "sampling/custom_sampling/noise", PythonModule: customSamplerModule,
		Outputs: outputs("NOISE"),
	}
}

// Run implements nodes.Typed.
func (*DisableNoise) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(sd.Noise{Disabled: true}, nil)
}

func guiderSchema(name string, inputs ...graph.Input) graph.Schema {
	return graph.Schema{Name: name, DisplayName: name, Category: "sampling/custom_sampling/guiders", PythonModule: customSamplerModule,
		Inputs: inputs, Outputs: outputs("GUIDER")}
}

// CFGGuider is ComfyUI's CFGGuider.
type CFGGuider struct {
	Model    *sd.Model       `input:"model"`
	Positive sd.Conditioning `input:"positive"`
	Negative sd.Conditioning `input:"negative"`
	CFG      float64         `input:"cfg"`
}

// Schema implements nodes.Typed.
func (*CFGGuider) Schema() graph.Schema {
	return guiderSchema("CFGGuider", socket("model", "MODEL"), socket("positive", "CONDITIONING"), socket("negative", "CONDITIONING"), cfgInput("cfg", ""))
}

// Run implements nodes.Typed.
func (n *CFGGuider) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(sd.NewCFGGuider(n.Model, n.Positive, n.Negative, n.CFG), nil)
}

// BasicGuider is ComfyUI's BasicGuider: one conditioning, no CFG.
type BasicGuider struct {
	Model        *sd.Model       `input:"model"`
	Conditioning sd.Conditioning `input:"conditioning"`
}

// Schema implements nodes.Typed.
func (*BasicGuider) Schema() graph.Schema {
	return guiderSchema("BasicGuider", socket("model", "MODEL"), socket("conditioning", "CONDITIONING"))
}

// Run implements nodes.Typed.
func (n *BasicGuider) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(sd.NewBasicGuider(n.Model, n.Conditioning), nil)
}

// DualCFGGuider is ComfyUI's DualCFGGuider.
type DualCFGGuider struct {
	Model            *sd.Model       `input:"model"`
	Cond1            sd.Conditioning `input:"cond1"`
	Cond2            sd.Conditioning `input:"cond2"`
	Negative         sd.Conditioning `input:"negative"`
	CFGConds         float64         `input:"cfg_conds"`
	CFGCond2Negative float64         `input:"cfg_cond2_negative"`
	Style            string          `input:"style"`
}

// Schema implements nodes.Typed.
func (*DualCFGGuider) Schema() graph.Schema {
	return guiderSchema("DualCFGGuider",
		socket("model", "MODEL"), socket("cond1", "CONDITIONING"), socket("cond2", "CONDITIONING"),
		socket("negative", "CONDITIONING"), cfgInput("cfg_conds", ""), cfgInput("cfg_cond2_negative", ""),
		combo("style", "regular", "nested"))
}

// Run implements nodes.Typed.
func (n *DualCFGGuider) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(sd.NewDualCFGGuider(n.Model, n.Cond1, n.Cond2, n.Negative, n.CFGConds, n.CFGCond2Negative, n.Style == "nested"), nil)
}

// Interface guards.
var (
	_ nodes.Typed = (*SamplerCustom)(nil)
	_ nodes.Typed = (*SamplerCustomAdvanced)(nil)
	_ nodes.Typed = (*KSamplerSelect)(nil)
	_ nodes.Typed = (*BasicScheduler)(nil)
	_ nodes.Typed = (*KarrasScheduler)(nil)
	_ nodes.Typed = (*ExponentialScheduler)(nil)
	_ nodes.Typed = (*SDTurboScheduler)(nil)
	_ nodes.Typed = (*SplitSigmas)(nil)
	_ nodes.Typed = (*SplitSigmasDenoise)(nil)
	_ nodes.Typed = (*RandomNoise)(nil)
	_ nodes.Typed = (*DisableNoise)(nil)
	_ nodes.Typed = (*CFGGuider)(nil)
	_ nodes.Typed = (*BasicGuider)(nil)
	_ nodes.Typed = (*DualCFGGuider)(nil)
)

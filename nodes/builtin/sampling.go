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

// Sampling nodes: nodes.py KSampler and KSamplerAdvanced, comfy_extras/
// nodes_custom_sampler.py (schedulers, sigma splits, noise, guiders, SamplerCustom*)
// and nodes_model_advanced.py ModelSamplingDiscrete. Sampler and scheduler combos come
// from the one registry in diffusion/sampling.

const (
	customSamplerModule = "comfy_extras.nodes_custom_sampler"
	modelAdvancedModule = "comfy_extras.nodes_model_advanced"
)

// Sampler is ComfyUI's SAMPLER value (KSamplerSelect): a sampler's descriptor from
// diffusion/sampling, whose fields say how it runs.
type Sampler struct{ sampling.Sampler }

// Sigmas is ComfyUI's SIGMAS value: a noise schedule, highest first.
type Sigmas []float32

func samplingNodes() []nodes.Node {
	return []nodes.Node{
		newKSampler(), newKSamplerAdvanced(), newSamplerCustom(), newSamplerCustomAdvanced(), newKSamplerSelect(),
		newBasicScheduler(), newKarrasScheduler(), newExponentialScheduler(), newSDTurboScheduler(),
		newSplitSigmas(), newSplitSigmasDenoise(), newRandomNoise(), newDisableNoise(),
		newCFGGuiderNode(), newBasicGuiderNode(), newDualCFGGuiderNode(), newModelSamplingDiscrete(),
	}
}

// Validate admits a schedule of finite, non-negative sigmas.
func (s Sigmas) Validate() error {
	for i, v := range s {
		if math.IsNaN(float64(v)) || v < 0 {
			return fmt.Errorf("builtin: sigma %d is %v", i, v)
		}
	}
	return nil
}

// checkModel admits a MODEL with its model sampling and runtime.
func checkModel(m *sd.Model) error {
	if m == nil || m.Sampling == nil || m.Runtime == nil {
		return errors.New("builtin: incomplete MODEL")
	}
	return nil
}

// checkSampler admits a SAMPLER of the sampler registry.
func checkSampler(s *Sampler) error {
	if s == nil {
		return errors.New("builtin: missing SAMPLER")
	}
	_, err := sampling.LookupSampler(s.Name)
	return err
}

// checkGuider admits a GUIDER with a model.
func checkGuider(g *sd.Guider) error {
	if g == nil || g.Model == nil {
		return errors.New("builtin: incomplete GUIDER")
	}
	return nil
}

func modelIn(in nodes.Inputs, name string) (*sd.Model, error) {
	m, err := typed[*sd.Model](in, name, "MODEL")
	if err == nil && (m == nil || m.Sampling == nil || m.Runtime == nil) {
		err = fmt.Errorf("builtin: input %q: incomplete MODEL", name)
	}
	return m, err
}

func sigmasIn(in nodes.Inputs, name string) (Sigmas, error) {
	s, err := typed[Sigmas](in, name, "SIGMAS")
	if err != nil {
		return nil, err
	}
	for i, v := range s {
		if math.IsNaN(float64(v)) || v < 0 {
			return nil, fmt.Errorf("builtin: input %q: sigma %d is %v", name, i, v)
		}
	}
	return s, nil
}

func samplerIn(in nodes.Inputs, name string) (sampling.Sampler, error) {
	s, err := typed[*Sampler](in, name, "SAMPLER")
	if err == nil && (s == nil || s.Func == nil) {
		err = fmt.Errorf("builtin: input %q: missing SAMPLER", name)
	}
	if err != nil {
		return sampling.Sampler{}, err
	}
	return s.Sampler, nil
}

// stepReporter turns sampling steps into the run's progress events and throttled
// latent previews (ComfyUI's latent_preview.prepare_callback with the Latent2RGB
// previewer).
func stepReporter(env *nodes.Env, f sd.LatentFormat) sd.StepFunc {
	if env == nil {
		return nil
	}
	var pv *sd.Previewer
	if env.Preview != nil {
		pv = &sd.Previewer{Format: f, Interval: sd.DefaultPreviewInterval, Send: func(b []byte) {
			env.Preview(nodes.PreviewImage{Format: "JPEG", Data: b})
		}}
	}
	return func(step, total int, x0 []float32, shape [4]int) {
		if env.Progress != nil {
			env.Progress(step+1, total)
		}
		if err := pv.Step(x0, shape); err != nil && env.Logger != nil {
			env.Logger.Warn("latent preview failed", "err", err)
		}
	}
}

func seedWidget(name string, tooltip bool) graph.Input {
	tip := ""
	if tooltip {
		tip = "The random seed used for creating the noise."
	}
	return seedInput(name, tip)
}

// seedInput is a seed widget: 0 … 2^64-1 (torch.manual_seed's range), with the
// front end's control_after_generate.
func seedInput(name, tooltip string) graph.Input {
	return graph.Input{Name: name, Type: graph.TypeInt, Default: 0, Min: graph.Num(0), Max: graph.Num(uint64(math.MaxUint64)),
		ControlAfterGenerate: true, Tooltip: tooltip}
}

func cfgWidget(name string, tooltip string) graph.Input {
	opts := map[string]any{"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}
	if tooltip != "" {
		opts["tooltip"] = tooltip
	}
	return widget(name, graph.TypeFloat, opts)
}

func stepsWidget(tooltip string) graph.Input {
	opts := map[string]any{"default": 20, "min": 1, "max": 10000}
	if tooltip != "" {
		opts["tooltip"] = tooltip
	}
	return widget("steps", graph.TypeInt, opts)
}

// withTip is a link input with a tooltip ({"tooltip": ...}).
func withTip(name, typ, tip string) graph.Input {
	return widget(name, typ, map[string]any{"tooltip": tip})
}

func comboTip(name, tip string, values func() []string) graph.Input {
	return graph.Input{Name: name, Type: graph.TypeCombo, Tooltip: tip, Choices: values}
}

func comboOf(name string, values func() []string) graph.Input {
	return graph.Input{Name: name, Type: graph.TypeCombo, Bare: true, Choices: values}
}

// ksamplerInputs reads the widgets KSampler and KSamplerAdvanced share.
func ksamplerInputs(in nodes.Inputs, seedName string) (*sd.Model, sd.Conditioning, sd.Conditioning, *sd.Latent, sd.KSamplerParams, error) {
	var p sd.KSamplerParams
	fail := func(err error) (*sd.Model, sd.Conditioning, sd.Conditioning, *sd.Latent, sd.KSamplerParams, error) {
		return nil, nil, nil, nil, p, err
	}
	m, err := modelIn(in, "model")
	if err != nil {
		return fail(err)
	}
	if p.Seed, err = seedIn(in, seedName); err != nil {
		return fail(err)
	}
	if p.Steps, err = intIn(in, "steps", 1, 10000); err != nil {
		return fail(err)
	}
	if p.CFG, err = floatIn(in, "cfg", 0, 100); err != nil {
		return fail(err)
	}
	if p.Sampler, err = in.String("sampler_name"); err != nil {
		return fail(err)
	}
	if p.Scheduler, err = in.String("scheduler"); err != nil {
		return fail(err)
	}
	pos, err := condIn(in, "positive")
	if err != nil {
		return fail(err)
	}
	neg, err := condIn(in, "negative")
	if err != nil {
		return fail(err)
	}
	l, _, _, err := latentIn(in, "latent_image")
	if err != nil {
		return fail(err)
	}
	return m, pos, neg, l, p, nil
}

func newKSampler() nodes.Node {
	return &simpleNode{schema: graph.Schema{
		Name: "KSampler", DisplayName: "KSampler", Category: "sampling",
		Description: "Uses the provided model, positive and negative conditioning to denoise the latent image.",
		Inputs: []graph.Input{
			withTip("model", "MODEL", "The model used for denoising the input latent."),
			seedWidget("seed", true),
			stepsWidget("The number of steps used in the denoising process."),
			cfgWidget("cfg", "The Classifier-Free Guidance scale balances creativity and adherence to the prompt. Higher values result in images more closely matching the prompt however too high values will negatively impact quality."),
			comboTip("sampler_name", "The algorithm used when sampling, this can affect the quality, speed, and style of the generated output.", sampling.SamplerNames),
			comboTip("scheduler", "The scheduler controls how noise is gradually removed to form the image.", sampling.SchedulerNames),
			withTip("positive", "CONDITIONING", "The conditioning describing the attributes you want to include in the image."),
			withTip("negative", "CONDITIONING", "The conditioning describing the attributes you want to exclude from the image."),
			withTip("latent_image", "LATENT", "The latent image to denoise."),
			widget("denoise", graph.TypeFloat, map[string]any{"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
				"tooltip": "The amount of denoising applied, lower values will maintain the structure of the initial image allowing for image to image sampling."}),
		},
		Outputs: outputs("LATENT"),
		Extra:   map[string]any{"output_tooltips": []any{"The denoised latent."}},
	}, run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		m, pos, neg, l, p, err := ksamplerInputs(in, "seed")
		if err != nil {
			return nodes.Result{}, err
		}
		if p.Denoise, err = floatIn(in, "denoise", 0, 1); err != nil {
			return nodes.Result{}, err
		}
		p.StartStep, p.LastStep = -1, -1
		out, err := sd.KSample(ctx, m, pos, neg, l, p, stepReporter(env, m.Latent))
		if err != nil {
			return nodes.Result{}, err
		}
		return one(out)
	}}
}

func newKSamplerAdvanced() nodes.Node {
	return &simpleNode{schema: graph.Schema{
		Name: "KSamplerAdvanced", DisplayName: "KSampler (Advanced)", Category: "sampling",
		Inputs: []graph.Input{
			socket("model", "MODEL"),
			combo("add_noise", "enable", "disable"),
			seedWidget("noise_seed", false),
			stepsWidget(""),
			cfgWidget("cfg", ""),
			comboOf("sampler_name", sampling.SamplerNames),
			comboOf("scheduler", sampling.SchedulerNames),
			socket("positive", "CONDITIONING"), socket("negative", "CONDITIONING"), socket("latent_image", "LATENT"),
			widget("start_at_step", graph.TypeInt, map[string]any{"default": 0, "min": 0, "max": 10000}),
			widget("end_at_step", graph.TypeInt, map[string]any{"default": 10000, "min": 0, "max": 10000}),
			combo("return_with_leftover_noise", "disable", "enable"),
		},
		Outputs: outputs("LATENT"),
	}, run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		m, pos, neg, l, p, err := ksamplerInputs(in, "noise_seed")
		if err != nil {
			return nodes.Result{}, err
		}
		addNoise, err := in.String("add_noise")
		if err != nil {
			return nodes.Result{}, err
		}
		leftover, err := in.String("return_with_leftover_noise")
		if err != nil {
			return nodes.Result{}, err
		}
		if addNoise != "enable" && addNoise != "disable" {
			return nodes.Result{}, fmt.Errorf("builtin: add_noise %q is not enable or disable", addNoise)
		}
		if leftover != "enable" && leftover != "disable" {
			return nodes.Result{}, fmt.Errorf("builtin: return_with_leftover_noise %q is not enable or disable", leftover)
		}
		if p.StartStep, err = intIn(in, "start_at_step", 0, 10000); err != nil {
			return nodes.Result{}, err
		}
		if p.LastStep, err = intIn(in, "end_at_step", 0, 10000); err != nil {
			return nodes.Result{}, err
		}
		p.Denoise = 1
		p.DisableNoise = addNoise == "disable"
		p.ForceFullDenoise = leftover != "enable"
		out, err := sd.KSample(ctx, m, pos, neg, l, p, stepReporter(env, m.Latent))
		if err != nil {
			return nodes.Result{}, err
		}
		return one(out)
	}}
}

func twoLatents(out, den *sd.Latent) (nodes.Result, error) {
	return nodes.Result{Outputs: []any{out, den}}, nil
}

func customOutputs() []graph.Output {
	return []graph.Output{{Type: "LATENT", Name: "output"}, {Type: "LATENT", Name: "denoised_output"}}
}

func newSamplerCustom() nodes.Node {
	return &simpleNode{schema: graph.Schema{
		Name: "SamplerCustom", DisplayName: "SamplerCustom", Category: "sampling/custom_sampling", PythonModule: customSamplerModule,
		Inputs: []graph.Input{
			socket("model", "MODEL"),
			widget("add_noise", graph.TypeBoolean, map[string]any{"default": true}),
			seedWidget("noise_seed", false),
			cfgWidget("cfg", ""),
			socket("positive", "CONDITIONING"), socket("negative", "CONDITIONING"),
			socket("sampler", "SAMPLER"), socket("sigmas", "SIGMAS"), socket("latent_image", "LATENT"),
		},
		Outputs: customOutputs(),
	}, run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		m, err := modelIn(in, "model")
		if err != nil {
			return nodes.Result{}, err
		}
		add, err := in.Bool("add_noise")
		if err != nil {
			return nodes.Result{}, err
		}
		seed, err := seedIn(in, "noise_seed")
		if err != nil {
			return nodes.Result{}, err
		}
		cfg, err := floatIn(in, "cfg", 0, 100)
		if err != nil {
			return nodes.Result{}, err
		}
		pos, err := condIn(in, "positive")
		if err != nil {
			return nodes.Result{}, err
		}
		neg, err := condIn(in, "negative")
		if err != nil {
			return nodes.Result{}, err
		}
		smp, err := samplerIn(in, "sampler")
		if err != nil {
			return nodes.Result{}, err
		}
		sig, err := sigmasIn(in, "sigmas")
		if err != nil {
			return nodes.Result{}, err
		}
		l, _, _, err := latentIn(in, "latent_image")
		if err != nil {
			return nodes.Result{}, err
		}
		// The sampler's seed is noise_seed even when no noise is added.
		out, den, err := sd.CustomSample(ctx, sd.Noise{Seed: seed, Disabled: !add}, sd.NewCFGGuider(m, pos, neg, cfg),
			smp, sig, l, stepReporter(env, m.Latent))
		if err != nil {
			return nodes.Result{}, err
		}
		return twoLatents(out, den)
	}}
}

func newSamplerCustomAdvanced() nodes.Node {
	return &simpleNode{schema: graph.Schema{
		Name: "SamplerCustomAdvanced", DisplayName: "SamplerCustomAdvanced", Category: "sampling/custom_sampling", PythonModule: customSamplerModule,
		Inputs: []graph.Input{
			socket("noise", "NOISE"), socket("guider", "GUIDER"), socket("sampler", "SAMPLER"),
			socket("sigmas", "SIGMAS"), socket("latent_image", "LATENT"),
		},
		Outputs: customOutputs(),
	}, run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		noise, err := typed[sd.Noise](in, "noise", "NOISE")
		if err != nil {
			return nodes.Result{}, err
		}
		g, err := typed[*sd.Guider](in, "guider", "GUIDER")
		if err == nil && (g == nil || g.Model == nil) {
			err = fmt.Errorf("builtin: input %q: incomplete GUIDER", "guider")
		}
		if err != nil {
			return nodes.Result{}, err
		}
		smp, err := samplerIn(in, "sampler")
		if err != nil {
			return nodes.Result{}, err
		}
		sig, err := sigmasIn(in, "sigmas")
		if err != nil {
			return nodes.Result{}, err
		}
		l, _, _, err := latentIn(in, "latent_image")
		if err != nil {
			return nodes.Result{}, err
		}
		out, den, err := sd.CustomSample(ctx, noise, g, smp, sig, l, stepReporter(env, g.Model.Latent))
		if err != nil {
			return nodes.Result{}, err
		}
		return twoLatents(out, den)
	}}
}

func newKSamplerSelect() nodes.Node {
	return &simpleNode{schema: graph.Schema{
		Name: "KSamplerSelect", DisplayName: "KSamplerSelect", Category: "sampling/custom_sampling/samplers", PythonModule: customSamplerModule,
		Inputs:  []graph.Input{comboOf("sampler_name", sampling.SamplerNames)},
		Outputs: outputs("SAMPLER"),
	}, run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		name, err := in.String("sampler_name")
		if err != nil {
			return nodes.Result{}, err
		}
		s, err := sampling.LookupSampler(name)
		if err != nil {
			return nodes.Result{}, err
		}
		return one(&Sampler{s})
	}}
}

func schedulerSchema(name string, inputs ...graph.Input) graph.Schema {
	return graph.Schema{Name: name, DisplayName: name, Category: "sampling/custom_sampling/schedulers",
		PythonModule: customSamplerModule, Inputs: inputs, Outputs: outputs("SIGMAS")}
}

func denoiseWidget(minZeroInt bool) graph.Input {
	var lo any = 0.0
	if minZeroInt {
		lo = 0 // SDTurboScheduler writes its minimum as an int
	}
	return widget("denoise", graph.TypeFloat, map[string]any{"default": 1.0, "min": lo, "max": 1.0, "step": 0.01})
}

func newBasicScheduler() nodes.Node {
	return &simpleNode{schema: schedulerSchema("BasicScheduler",
		socket("model", "MODEL"), comboOf("scheduler", sampling.SchedulerNames), stepsWidget(""), denoiseWidget(false),
	), run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		m, err := modelIn(in, "model")
		if err != nil {
			return nodes.Result{}, err
		}
		name, err := in.String("scheduler")
		if err != nil {
			return nodes.Result{}, err
		}
		steps, err := intIn(in, "steps", 1, 10000)
		if err != nil {
			return nodes.Result{}, err
		}
		denoise, err := floatIn(in, "denoise", 0, 1)
		if err != nil {
			return nodes.Result{}, err
		}
		s, err := basicSigmas(m, name, steps, denoise)
		if err != nil {
			return nodes.Result{}, err
		}
		return one(s)
	}}
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

func sigmaBound(name string, def float64) graph.Input {
	return widget(name, graph.TypeFloat, map[string]any{"default": def, "min": 0.0, "max": 5000.0, "step": 0.01, "round": false})
}

func readBounds(in nodes.Inputs) (steps int, hi, lo float64, err error) {
	if steps, err = intIn(in, "steps", 1, 10000); err != nil {
		return
	}
	if hi, err = floatIn(in, "sigma_max", 0, 5000); err != nil {
		return
	}
	lo, err = floatIn(in, "sigma_min", 0, 5000)
	return
}

func newKarrasScheduler() nodes.Node {
	return &simpleNode{schema: schedulerSchema("KarrasScheduler",
		stepsWidget(""), sigmaBound("sigma_max", 14.614642), sigmaBound("sigma_min", 0.0291675),
		widget("rho", graph.TypeFloat, map[string]any{"default": 7.0, "min": 0.0, "max": 100.0, "step": 0.01, "round": false}),
	), run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		steps, hi, lo, err := readBounds(in)
		if err != nil {
			return nodes.Result{}, err
		}
		rho, err := floatIn(in, "rho", 0, 100)
		if err != nil {
			return nodes.Result{}, err
		}
		if rho == 0 {
			return nodes.Result{}, fmt.Errorf("builtin: KarrasScheduler: rho must be above 0")
		}
		return one(Sigmas(sampling.KarrasSigmas(steps, lo, hi, rho)))
	}}
}

func newExponentialScheduler() nodes.Node {
	return &simpleNode{schema: schedulerSchema("ExponentialScheduler",
		stepsWidget(""), sigmaBound("sigma_max", 14.614642), sigmaBound("sigma_min", 0.0291675),
	), run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		steps, hi, lo, err := readBounds(in)
		if err != nil {
			return nodes.Result{}, err
		}
		if hi <= 0 || lo <= 0 {
			// log(0) is a math domain error in ComfyUI too.
			return nodes.Result{}, fmt.Errorf("builtin: ExponentialScheduler: sigma_max and sigma_min must be above 0")
		}
		return one(Sigmas(sampling.ExponentialSigmas(steps, lo, hi)))
	}}
}

func newSDTurboScheduler() nodes.Node {
	return &simpleNode{schema: schedulerSchema("SDTurboScheduler",
		socket("model", "MODEL"),
		widget("steps", graph.TypeInt, map[string]any{"default": 1, "min": 1, "max": 10}),
		denoiseWidget(true),
	), run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		m, err := modelIn(in, "model")
		if err != nil {
			return nodes.Result{}, err
		}
		steps, err := intIn(in, "steps", 1, 10)
		if err != nil {
			return nodes.Result{}, err
		}
		denoise, err := floatIn(in, "denoise", 0, 1)
		if err != nil {
			return nodes.Result{}, err
		}
		return one(turboSigmas(m, steps, denoise))
	}}
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

func newSplitSigmas() nodes.Node {
	return &simpleNode{schema: splitSchema("SplitSigmas",
		widget("step", graph.TypeInt, map[string]any{"default": 0, "min": 0, "max": 10000}),
	), run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		s, err := sigmasIn(in, "sigmas")
		if err != nil {
			return nodes.Result{}, err
		}
		step, err := intIn(in, "step", 0, 10000)
		if err != nil {
			return nodes.Result{}, err
		}
		hi, lo := splitAt(s, step)
		return nodes.Result{Outputs: []any{hi, lo}}, nil
	}}
}

// splitAt is sigmas[:step+1], sigmas[step:] with Python's clamped slices.
func splitAt(s Sigmas, step int) (Sigmas, Sigmas) {
	a := min(step+1, len(s))
	b := min(step, len(s))
	return append(Sigmas{}, s[:a]...), append(Sigmas{}, s[b:]...)
}

func newSplitSigmasDenoise() nodes.Node {
	return &simpleNode{schema: splitSchema("SplitSigmasDenoise",
		widget("denoise", graph.TypeFloat, map[string]any{"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
	), run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		s, err := sigmasIn(in, "sigmas")
		if err != nil {
			return nodes.Result{}, err
		}
		denoise, err := floatIn(in, "denoise", 0, 1)
		if err != nil {
			return nodes.Result{}, err
		}
		hi, lo := splitDenoise(s, denoise)
		return nodes.Result{Outputs: []any{hi, lo}}, nil
	}}
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

func newRandomNoise() nodes.Node {
	return &simpleNode{schema: graph.Schema{
		Name: "RandomNoise", DisplayName: "RandomNoise", Category: "sampling/custom_sampling/noise", PythonModule: customSamplerModule,
		Inputs:  []graph.Input{seedWidget("noise_seed", false)},
		Outputs: outputs("NOISE"),
	}, run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		seed, err := seedIn(in, "noise_seed")
		if err != nil {
			return nodes.Result{}, err
		}
		return one(sd.Noise{Seed: seed})
	}}
}

func newDisableNoise() nodes.Node {
	return &simpleNode{schema: graph.Schema{
		Name: "DisableNoise", DisplayName: "DisableNoise", Category: "sampling/custom_sampling/noise", PythonModule: customSamplerModule,
		Outputs: outputs("NOISE"),
	}, run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		return one(sd.Noise{Disabled: true})
	}}
}

func guiderSchema(name string, inputs ...graph.Input) graph.Schema {
	return graph.Schema{Name: name, DisplayName: name, Category: "sampling/custom_sampling/guiders", PythonModule: customSamplerModule,
		Inputs: inputs, Outputs: outputs("GUIDER")}
}

func newCFGGuiderNode() nodes.Node {
	return &simpleNode{schema: guiderSchema("CFGGuider",
		socket("model", "MODEL"), socket("positive", "CONDITIONING"), socket("negative", "CONDITIONING"), cfgWidget("cfg", ""),
	), run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		m, err := modelIn(in, "model")
		if err != nil {
			return nodes.Result{}, err
		}
		pos, err := condIn(in, "positive")
		if err != nil {
			return nodes.Result{}, err
		}
		neg, err := condIn(in, "negative")
		if err != nil {
			return nodes.Result{}, err
		}
		cfg, err := floatIn(in, "cfg", 0, 100)
		if err != nil {
			return nodes.Result{}, err
		}
		return one(sd.NewCFGGuider(m, pos, neg, cfg))
	}}
}

func newBasicGuiderNode() nodes.Node {
	return &simpleNode{schema: guiderSchema("BasicGuider",
		socket("model", "MODEL"), socket("conditioning", "CONDITIONING"),
	), run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		m, err := modelIn(in, "model")
		if err != nil {
			return nodes.Result{}, err
		}
		c, err := condIn(in, "conditioning")
		if err != nil {
			return nodes.Result{}, err
		}
		return one(sd.NewBasicGuider(m, c))
	}}
}

func newDualCFGGuiderNode() nodes.Node {
	return &simpleNode{schema: guiderSchema("DualCFGGuider",
		socket("model", "MODEL"), socket("cond1", "CONDITIONING"), socket("cond2", "CONDITIONING"),
		socket("negative", "CONDITIONING"), cfgWidget("cfg_conds", ""), cfgWidget("cfg_cond2_negative", ""),
		combo("style", "regular", "nested"),
	), run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		m, err := modelIn(in, "model")
		if err != nil {
			return nodes.Result{}, err
		}
		var conds [3]sd.Conditioning
		for i, name := range []string{"cond1", "cond2", "negative"} {
			if conds[i], err = condIn(in, name); err != nil {
				return nodes.Result{}, err
			}
		}
		c1, err := floatIn(in, "cfg_conds", 0, 100)
		if err != nil {
			return nodes.Result{}, err
		}
		c2, err := floatIn(in, "cfg_cond2_negative", 0, 100)
		if err != nil {
			return nodes.Result{}, err
		}
		style, err := in.String("style")
		if err != nil {
			return nodes.Result{}, err
		}
		if style != "regular" && style != "nested" {
			return nodes.Result{}, fmt.Errorf("builtin: DualCFGGuider: style %q is not regular or nested", style)
		}
		return one(sd.NewDualCFGGuider(m, conds[0], conds[1], conds[2], c1, c2, style == "nested"))
	}}
}

func newModelSamplingDiscrete() nodes.Node {
	return &simpleNode{schema: graph.Schema{
		Name: "ModelSamplingDiscrete", DisplayName: "ModelSamplingDiscrete", Category: "advanced/model", PythonModule: modelAdvancedModule,
		Inputs: []graph.Input{
			socket("model", "MODEL"),
			combo("sampling", "eps", "v_prediction", "lcm", "x0", "img_to_img"),
			widget("zsnr", graph.TypeBoolean, map[string]any{"default": false}),
		},
		Outputs: outputs("MODEL"),
	}, run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		m, err := modelIn(in, "model")
		if err != nil {
			return nodes.Result{}, err
		}
		mode, err := in.String("sampling")
		if err != nil {
			return nodes.Result{}, err
		}
		zsnr, err := in.Bool("zsnr")
		if err != nil {
			return nodes.Result{}, err
		}
		var pred sampling.Prediction
		switch mode {
		case "eps":
			pred = sampling.EPS
		case "v_prediction":
			pred = sampling.VPrediction
		case "lcm", "x0", "img_to_img":
			return nodes.Result{}, fmt.Errorf("builtin: ModelSamplingDiscrete: sampling %q is not supported yet (eps and v_prediction are)", mode)
		default:
			return nodes.Result{}, fmt.Errorf("builtin: ModelSamplingDiscrete: unknown sampling %q", mode)
		}
		// The SD families' beta schedule (linear 0.00085 … 0.012, 1000 steps) with the
		// chosen prediction, as ModelSamplingAdvanced builds it from the model config.
		if !zsnr {
			return one(m.WithSampling(sampling.NewSD(pred)))
		}
		ms, err := sampling.NewDiscreteZSNR(pred, 0.00085, 0.012, 1000)
		if err != nil {
			return nodes.Result{}, err
		}
		return one(m.WithSampling(ms))
	}}
}

// registerSampling adds the conditioning, latent and sampling node classes
// (conditioning.go, latent.go, sampling.go).
func registerSampling(r *nodes.Registry, opts Options) error {
	all := append(append(conditioningNodes(), latentNodes(opts)...), samplingNodes()...)
	for _, n := range all {
		if err := r.Register(n); err != nil {
			return fmt.Errorf("builtin: %w", err)
		}
	}
	return nil
}

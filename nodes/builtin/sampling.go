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

// Sampling nodes: nodes.py KSampler and KSamplerAdvanced, nodes_model_advanced.py
// ModelSamplingDiscrete and ModelSamplingFlux, and the values and widgets they share with the custom sampling
// nodes (customsampling.go). Sampler and scheduler combos come from the one registry in
// diffusion/sampling.

const (
	customSamplerModule = "comfy_extras.nodes_custom_sampler"
	modelAdvancedModule = "comfy_extras.nodes_model_advanced"
)

// Sampler is ComfyUI's SAMPLER value (KSamplerSelect): a sampler's descriptor from
// diffusion/sampling, whose fields say how it runs.
type Sampler struct{ sampling.Sampler }

// Sigmas is ComfyUI's SIGMAS value: a noise schedule, highest first.
type Sigmas []float32

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

// checkSampler admits a SAMPLER that can run.
func checkSampler(s *Sampler) error {
	if s == nil || s.Func == nil {
		return errors.New("builtin: missing SAMPLER")
	}
	return nil
}

// checkGuider admits a GUIDER with a model.
func checkGuider(g *sd.Guider) error {
	if g == nil || g.Model == nil {
		return errors.New("builtin: incomplete GUIDER")
	}
	return nil
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

// seedInput is a seed widget: 0 … 2^64-1 (torch.manual_seed's range), with the
// front end's control_after_generate.
func seedInput(name, tooltip string) graph.Input {
	return graph.Input{Name: name, Type: graph.TypeInt, Default: 0, Min: graph.Num(0), Max: graph.Num(uint64(math.MaxUint64)),
		ControlAfterGenerate: true, Tooltip: tooltip}
}

// cfgInput is a classifier-free guidance scale: 0 … 100, default 8.
func cfgInput(name, tooltip string) graph.Input {
	return graph.Input{Name: name, Type: graph.TypeFloat, Default: 8.0, Min: graph.Num(0.0), Max: graph.Num(100.0),
		Step: graph.Num(0.1), Round: graph.Num(0.01), Tooltip: tooltip}
}

// stepsInput is the number of sampling steps: 1 … 10000, default 20.
func stepsInput(tooltip string) graph.Input {
	return graph.Input{Name: "steps", Type: graph.TypeInt, Default: 20, Min: graph.Num(1), Max: graph.Num(10000), Tooltip: tooltip}
}

// samplerCombo and schedulerCombo list the sampling registry's names.
func samplerCombo(tooltip string) graph.Input {
	return graph.Input{Name: "sampler_name", Type: graph.TypeCombo, Choices: sampling.SamplerNames, Tooltip: tooltip, Bare: tooltip == ""}
}

func schedulerCombo(tooltip string) graph.Input {
	return graph.Input{Name: "scheduler", Type: graph.TypeCombo, Choices: sampling.SchedulerNames, Tooltip: tooltip, Bare: tooltip == ""}
}

// ksampler holds the inputs KSampler and KSamplerAdvanced share.
type ksampler struct {
	Model       *sd.Model       `input:"model"`
	Steps       int             `input:"steps"`
	CFG         float64         `input:"cfg"`
	SamplerName string          `input:"sampler_name"`
	Scheduler   string          `input:"scheduler"`
	Positive    sd.Conditioning `input:"positive"`
	Negative    sd.Conditioning `input:"negative"`
	LatentImage *sd.Latent      `input:"latent_image"`
}

// sample runs common_ksampler (nodes.py) with p's seed, denoise and step range.
func (k *ksampler) sample(ctx context.Context, env *nodes.Env, p sd.KSamplerParams) (nodes.Result, error) {
	p.Steps, p.CFG, p.Sampler, p.Scheduler = k.Steps, k.CFG, k.SamplerName, k.Scheduler
	return nodes.One(sd.KSample(ctx, k.Model, k.Positive, k.Negative, k.LatentImage, p, stepReporter(env, k.Model.Latent)))
}

// KSampler is ComfyUI's KSampler: denoises the latent with the model, guided by the
// positive and negative conditioning.
type KSampler struct {
	ksampler
	Seed    uint64  `input:"seed"`
	Denoise float64 `input:"denoise"`
}

// Schema implements nodes.Typed.
func (*KSampler) Schema() graph.Schema {
	return graph.Schema{
		Name: "KSampler", DisplayName: "KSampler", Category: "sampling",
		Description: "Uses the provided model, positive and negative conditioning to denoise the latent image.",
		Inputs: []graph.Input{
			{Name: "model", Type: "MODEL", Tooltip: "The model used for denoising the input latent."},
			seedInput("seed", "The random seed used for creating the noise."),
			stepsInput("The number of steps used in the denoising process."),
			cfgInput("cfg", "The Classifier-Free Guidance scale balances creativity and adherence to the prompt. Higher values result in images more closely matching the prompt however too high values will negatively impact quality."),
			samplerCombo("The algorithm used when sampling, this can affect the quality, speed, and style of the generated output."),
			schedulerCombo("The scheduler controls how noise is gradually removed to form the image."),
			{Name: "positive", Type: "CONDITIONING", Tooltip: "The conditioning describing the attributes you want to include in the image."},
			{Name: "negative", Type: "CONDITIONING", Tooltip: "The conditioning describing the attributes you want to exclude from the image."},
			{Name: "latent_image", Type: "LATENT", Tooltip: "The latent image to denoise."},
			{Name: "denoise", Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(0.0), Max: graph.Num(1.0), Step: graph.Num(0.01),
				Tooltip: "The amount of denoising applied, lower values will maintain the structure of the initial image allowing for image to image sampling."},
		},
		Outputs: outputs("LATENT"),
		Extra:   map[string]any{"output_tooltips": []any{"The denoised latent."}},
	}
}

// Run implements nodes.Typed.
func (n *KSampler) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return n.sample(ctx, env, sd.KSamplerParams{Seed: n.Seed, Denoise: n.Denoise, StartStep: -1, LastStep: -1})
}

// KSamplerAdvanced is ComfyUI's KSamplerAdvanced ("KSampler (Advanced)"): a step range
// of the full schedule, with the initial noise and the final denoise optional.
type KSamplerAdvanced struct {
	ksampler
	AddNoise                string `input:"add_noise"`
	NoiseSeed               uint64 `input:"noise_seed"`
	StartAtStep             int    `input:"start_at_step"`
	EndAtStep               int    `input:"end_at_step"`
	ReturnWithLeftoverNoise string `input:"return_with_leftover_noise"`
}

// Schema implements nodes.Typed.
func (*KSamplerAdvanced) Schema() graph.Schema {
	return graph.Schema{
		Name: "KSamplerAdvanced", DisplayName: "KSampler (Advanced)", Category: "sampling",
		Inputs: []graph.Input{
			socket("model", "MODEL"),
			combo("add_noise", "enable", "disable"),
			seedInput("noise_seed", ""),
			stepsInput(""),
			cfgInput("cfg", ""),
			samplerCombo(""),
			schedulerCombo(""),
			socket("positive", "CONDITIONING"), socket("negative", "CONDITIONING"), socket("latent_image", "LATENT"),
			{Name: "start_at_step", Type: graph.TypeInt, Default: 0, Min: graph.Num(0), Max: graph.Num(10000)},
			{Name: "end_at_step", Type: graph.TypeInt, Default: 10000, Min: graph.Num(0), Max: graph.Num(10000)},
			combo("return_with_leftover_noise", "disable", "enable"),
		},
		Outputs: outputs("LATENT"),
	}
}

// Run implements nodes.Typed.
func (n *KSamplerAdvanced) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return n.sample(ctx, env, sd.KSamplerParams{Seed: n.NoiseSeed, Denoise: 1,
		StartStep: n.StartAtStep, LastStep: n.EndAtStep,
		DisableNoise: n.AddNoise == "disable", ForceFullDenoise: n.ReturnWithLeftoverNoise != "enable"})
}

// ModelSamplingDiscrete is ComfyUI's ModelSamplingDiscrete: the model with another
// prediction type (and zero terminal SNR) on the SD beta schedule.
type ModelSamplingDiscrete struct {
	Model    *sd.Model `input:"model"`
	Sampling string    `input:"sampling"`
	ZSNR     bool      `input:"zsnr"`
}

// Schema implements nodes.Typed.
func (*ModelSamplingDiscrete) Schema() graph.Schema {
	return graph.Schema{
		Name: "ModelSamplingDiscrete", DisplayName: "ModelSamplingDiscrete", Category: "advanced/model", PythonModule: modelAdvancedModule,
		Inputs: []graph.Input{
			socket("model", "MODEL"),
			combo("sampling", "eps", "v_prediction", "lcm", "x0", "img_to_img"),
			{Name: "zsnr", Type: graph.TypeBoolean, Default: false},
		},
		Outputs: outputs("MODEL"),
	}
}

// Run implements nodes.Typed. The SD families' beta schedule (linear 0.00085 … 0.012,
// 1000 steps) with the chosen prediction, as ModelSamplingAdvanced builds it from the
// model config.
func (n *ModelSamplingDiscrete) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	var pred sampling.Prediction
	switch n.Sampling {
	case "eps":
		pred = sampling.EPS
	case "v_prediction":
		pred = sampling.VPrediction
	default:
		return nodes.Result{}, fmt.Errorf("builtin: ModelSamplingDiscrete: sampling %q is not supported yet (eps and v_prediction are)", n.Sampling)
	}
	if !n.ZSNR {
		return nodes.One(n.Model.WithSampling(sampling.NewSD(pred)), nil)
	}
	ms, err := sampling.NewDiscreteZSNR(pred, 0.00085, 0.012, 1000)
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.One(n.Model.WithSampling(ms), nil)
}

// ModelSamplingFlux is ComfyUI's ModelSamplingFlux: Flux's model sampling with the
// shift for an image of width×height, linear in its 2×2-patch count between base_shift
// at 256 patches and max_shift at 4096.
type ModelSamplingFlux struct {
	Model     *sd.Model `input:"model"`
	MaxShift  float64   `input:"max_shift"`
	BaseShift float64   `input:"base_shift"`
	Width     int       `input:"width"`
	Height    int       `input:"height"`
}

// Schema implements nodes.Typed.
func (*ModelSamplingFlux) Schema() graph.Schema {
	shift := func(name string, def float64) graph.Input {
		return graph.Input{Name: name, Type: graph.TypeFloat, Default: def, Min: graph.Num(0.0), Max: graph.Num(100.0), Step: graph.Num(0.01)}
	}
	return graph.Schema{
		Name: "ModelSamplingFlux", DisplayName: "ModelSamplingFlux", Category: "advanced/model", PythonModule: modelAdvancedModule,
		Inputs: []graph.Input{
			socket("model", "MODEL"),
			shift("max_shift", 1.15), shift("base_shift", 0.5),
			step8("width", 1024, 16), step8("height", 1024, 16),
		},
		Outputs: outputs("MODEL"),
	}
}

// Run implements nodes.Typed (ModelSamplingFlux.patch: ModelSamplingFlux + CONST with
// the computed shift, on any model as ComfyUI allows).
func (n *ModelSamplingFlux) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	shift := sampling.FluxShift(n.MaxShift, n.BaseShift, n.Width, n.Height)
	return nodes.One(n.Model.WithSampling(sampling.NewFlux(shift)), nil)
}

// Interface guards.
var (
	_ nodes.Typed = (*KSampler)(nil)
	_ nodes.Typed = (*KSamplerAdvanced)(nil)
	_ nodes.Typed = (*ModelSamplingDiscrete)(nil)
	_ nodes.Typed = (*ModelSamplingFlux)(nil)
)

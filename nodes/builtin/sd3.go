package builtin

import (
	"context"

	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// SD3 and DiT nodes: nodes_sd3.py EmptySD3LatentImage, nodes_model_advanced.py
// ModelSamplingSD3 and ModelSamplingAuraFlow, nodes_slg.py SkipLayerGuidanceDiT and
// SkipLayerGuidanceDiTSimple, nodes_cfg.py CFGNorm, and nodes.py UNETLoader (every
// family sd.LoadDiffusionModel loads).

const (
	slgModule = "comfy_extras.nodes_slg"
	cfgModule = "comfy_extras.nodes_cfg"
)

// EmptySD3LatentImage makes a batch of zero 16-channel latents (SD3, Flux).
type EmptySD3LatentImage struct {
	opts      Options
	Width     int `input:"width"`
	Height    int `input:"height"`
	BatchSize int `input:"batch_size"`
}

// Schema implements nodes.Typed.
func (*EmptySD3LatentImage) Schema() graph.Schema {
	side := func(name string) graph.Input {
		return graph.Input{Name: name, Type: graph.TypeInt, Default: 1024, Min: graph.Num(16), Max: graph.Num(MaxResolution), Step: graph.Num(16)}
	}
	return graph.Schema{
		Name: "EmptySD3LatentImage", Category: "latent/sd3", PythonModule: sd3Module,
		Inputs: []graph.Input{side("width"), side("height"),
			{Name: "batch_size", Type: graph.TypeInt, Default: 1, Min: graph.Num(1), Max: graph.Num(4096)}},
		Outputs: outputs("LATENT"),
		Extra:   v3Extra(1, nil),
	}
}

// Run implements nodes.Typed: zeros (batch, 16, height/8, width/8).
func (n *EmptySD3LatentImage) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	shape := []int{n.BatchSize, 16, n.Height / 8, n.Width / 8}
	if _, err := sizeOf("latent", shape...); err != nil {
		return nodes.Result{}, err
	}
	rt, err := n.opts.runtime()
	if err != nil {
		return nodes.Result{}, err
	}
	t, err := rt.Zeros(gpu.F32, shape...)
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.One(&sd.Latent{Samples: t}, nil)
}

// ModelSamplingSD3 samples a model as discrete flow with the given shift (multiplier
// 1000).
type ModelSamplingSD3 struct {
	Model *sd.Model `input:"model"`
	Shift float64   `input:"shift"`
}

func flowShiftSchema(name string, shift float64) graph.Schema {
	return graph.Schema{
		Name: name, DisplayName: name, Category: "advanced/model", PythonModule: modelAdvancedModule,
		Inputs: []graph.Input{socket("model", "MODEL"),
			{Name: "shift", Type: graph.TypeFloat, Default: shift, Min: graph.Num(0.0), Max: graph.Num(100.0), Step: graph.Num(0.01)}},
		Outputs: outputs("MODEL"),
	}
}

// Schema implements nodes.Typed.
func (*ModelSamplingSD3) Schema() graph.Schema { return flowShiftSchema("ModelSamplingSD3", 3.0) }

// Run implements nodes.Typed (ModelSamplingSD3.patch: ModelSamplingDiscreteFlow with
// CONST prediction, set_parameters(shift, multiplier=1000)).
func (n *ModelSamplingSD3) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(n.Model.WithSampling(sampling.NewFlowShift(n.Shift, 1000, 1000)), nil)
}

// ModelSamplingAuraFlow is ModelSamplingSD3 with multiplier 1 (timesteps are sigmas).
type ModelSamplingAuraFlow struct {
	Model *sd.Model `input:"model"`
	Shift float64   `input:"shift"`
}

// Schema implements nodes.Typed.
func (*ModelSamplingAuraFlow) Schema() graph.Schema {
	return flowShiftSchema("ModelSamplingAuraFlow", 1.73)
}

// Run implements nodes.Typed (ModelSamplingAuraFlow.patch_aura).
func (n *ModelSamplingAuraFlow) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(n.Model.WithSampling(sampling.NewFlowShift(n.Shift, 1, 1000)), nil)
}

// layerList is the SLG nodes' layer string widget.
func layerList(name string) graph.Input {
	return graph.Input{Name: name, Type: graph.TypeString, Default: "7, 8, 9", Multiline: graph.Off}
}

func percent(name string, def float64) graph.Input {
	return graph.Input{Name: name, Type: graph.TypeFloat, Default: def, Min: graph.Num(0.0), Max: graph.Num(1.0), Step: graph.Num(0.001)}
}

func experimental(outputs int) map[string]any {
	extra := v3Extra(outputs, nil)
	extra["experimental"] = true
	return extra
}

// SkipLayerGuidanceDiT adds a guidance term that pushes the prediction away from the
// model's output with some blocks skipped.
type SkipLayerGuidanceDiT struct {
	Model          *sd.Model `input:"model"`
	DoubleLayers   string    `input:"double_layers"`
	SingleLayers   string    `input:"single_layers"`
	Scale          float64   `input:"scale"`
	StartPercent   float64   `input:"start_percent"`
	EndPercent     float64   `input:"end_percent"`
	RescalingScale float64   `input:"rescaling_scale"`
}

// Schema implements nodes.Typed.
func (*SkipLayerGuidanceDiT) Schema() graph.Schema {
	return graph.Schema{
		Name: "SkipLayerGuidanceDiT", Category: "advanced/guidance", PythonModule: slgModule,
		Description: "Generic version of SkipLayerGuidance node that can be used on every DiT model.",
		Inputs: []graph.Input{
			socketV3("model", "MODEL"), layerList("double_layers"), layerList("single_layers"),
			{Name: "scale", Type: graph.TypeFloat, Default: 3.0, Min: graph.Num(0.0), Max: graph.Num(10.0), Step: graph.Num(0.1)},
			percent("start_percent", 0.01), percent("end_percent", 0.15),
			{Name: "rescaling_scale", Type: graph.TypeFloat, Default: 0.0, Min: graph.Num(0.0), Max: graph.Num(10.0), Step: graph.Num(0.01)},
		},
		Outputs: outputs("MODEL"),
		Extra:   experimental(1),
	}
}

// Run implements nodes.Typed (SkipLayerGuidanceDiT.execute): the sigma range is taken
// from the model's sampling now; no layers leaves the model as it is.
func (n *SkipLayerGuidanceDiT) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	double, single := sd.ParseLayers(n.DoubleLayers), sd.ParseLayers(n.SingleLayers)
	if len(double) == 0 && len(single) == 0 {
		return nodes.One(n.Model, nil)
	}
	ms := n.Model.Sampling
	return nodes.One(n.Model.WithPostCFG(sd.SkipLayerGuidance{Double: double, Single: single, Scale: n.Scale,
		SigmaStart: ms.PercentToSigma(n.StartPercent), SigmaEnd: ms.PercentToSigma(n.EndPercent),
		Rescale: n.RescalingScale}), nil)
}

// SkipLayerGuidanceDiTSimple runs the negative prompt with some blocks skipped.
type SkipLayerGuidanceDiTSimple struct {
	Model        *sd.Model `input:"model"`
	DoubleLayers string    `input:"double_layers"`
	SingleLayers string    `input:"single_layers"`
	StartPercent float64   `input:"start_percent"`
	EndPercent   float64   `input:"end_percent"`
}

// Schema implements nodes.Typed.
func (*SkipLayerGuidanceDiTSimple) Schema() graph.Schema {
	return graph.Schema{
		Name: "SkipLayerGuidanceDiTSimple", Category: "advanced/guidance", PythonModule: slgModule,
		Description: "Simple version of the SkipLayerGuidanceDiT node that only modifies the uncond pass.",
		Inputs: []graph.Input{
			socketV3("model", "MODEL"), layerList("double_layers"), layerList("single_layers"),
			percent("start_percent", 0.0), percent("end_percent", 1.0),
		},
		Outputs: outputs("MODEL"),
		Extra:   experimental(1),
	}
}

// Run implements nodes.Typed (SkipLayerGuidanceDiTSimple.execute).
func (n *SkipLayerGuidanceDiTSimple) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	double, single := sd.ParseLayers(n.DoubleLayers), sd.ParseLayers(n.SingleLayers)
	if len(double) == 0 && len(single) == 0 {
		return nodes.One(n.Model, nil)
	}
	ms := n.Model.Sampling
	return nodes.One(n.Model.WithCondBatch(sd.SkipLayerGuidanceSimple{Double: double, Single: single,
		SigmaStart: ms.PercentToSigma(n.StartPercent), SigmaEnd: ms.PercentToSigma(n.EndPercent)}), nil)
}

// CFGNorm limits the guided prediction's per-pixel norm to the cond prediction's.
type CFGNorm struct {
	Model    *sd.Model `input:"model"`
	Strength float64   `input:"strength"`
}

// Schema implements nodes.Typed.
func (*CFGNorm) Schema() graph.Schema {
	return graph.Schema{
		Name: "CFGNorm", Category: "advanced/guidance", PythonModule: cfgModule,
		Inputs: []graph.Input{socketV3("model", "MODEL"),
			{Name: "strength", Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(0.0), Max: graph.Num(100.0), Step: graph.Num(0.01)}},
		Outputs: []graph.Output{{Type: "MODEL", Name: "patched_model"}},
		Extra:   experimental(1),
	}
}

// Run implements nodes.Typed (CFGNorm.execute).
func (n *CFGNorm) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(n.Model.WithPostCFG(sd.CFGNorm{Strength: n.Strength}), nil)
}

// UNETLoader loads a diffusion_models file as a MODEL.
type UNETLoader struct {
	env         *sdEnv
	UNetName    string `input:"unet_name,unchecked"`
	WeightDType string `input:"weight_dtype"`
}

// Schema implements nodes.Typed.
func (n *UNETLoader) Schema() graph.Schema {
	return graph.Schema{
		Name: "UNETLoader", DisplayName: "Load Diffusion Model", Category: "advanced/loaders",
		Inputs: []graph.Input{
			n.env.modelCombo("unet_name", "diffusion_models", ""),
			combo("weight_dtype", "default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"),
		},
		Outputs: outputs("MODEL"),
	}
}

// Run implements nodes.Typed (nodes.py UNETLoader.load_unet).
func (n *UNETLoader) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	path, err := n.env.resolve("diffusion_models", n.UNetName)
	if err != nil {
		return nodes.Result{}, err
	}
	ck, err := n.env.load(ctx, path, "diffusion_model:"+n.WeightDType, func(rt *gpu.Runtime, path string) (*sd.Checkpoint, error) {
		return sd.LoadDiffusionModel(rt, path, sd.DiffusionModelOptions{WeightDType: n.WeightDType})
	})
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.One(ck.Model, nil)
}

// Interface guards.
var (
	_ nodes.Typed = (*EmptySD3LatentImage)(nil)
	_ nodes.Typed = (*ModelSamplingSD3)(nil)
	_ nodes.Typed = (*ModelSamplingAuraFlow)(nil)
	_ nodes.Typed = (*SkipLayerGuidanceDiT)(nil)
	_ nodes.Typed = (*SkipLayerGuidanceDiTSimple)(nil)
	_ nodes.Typed = (*CFGNorm)(nil)
	_ nodes.Typed = (*UNETLoader)(nil)
)

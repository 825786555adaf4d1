package builtin

import (
	"context"
	"fmt"

	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// Model patch nodes: comfy_extras/nodes_freelunch.py FreeU and FreeU_V2,
// nodes_model_advanced.py RescaleCFG, ModelSamplingContinuousEDM and
// ModelSamplingContinuousV, nodes_pag.py PerturbedAttentionGuidance, nodes_sag.py
// SelfAttentionGuidance, nodes_perpneg.py PerpNeg and PerpNegGuider, nodes_fresca.py
// FreSca. Each returns a patched copy of its MODEL (sd.Model.Patches, codex/patches.md);
// the cached base model is never changed.

const (
	freeLunchModule = "comfy_extras.nodes_freelunch"
	pagModule       = "comfy_extras.nodes_pag"
	sagModule       = "comfy_extras.nodes_sag"
	perpNegModule   = "comfy_extras.nodes_perpneg"
	frescaModule    = "comfy_extras.nodes_fresca"
)

// freeUSchema is FreeU's and FreeU_V2's: four factors with the given defaults.
func freeUSchema(name string, b1, b2 float64) graph.Schema {
	factor := func(n string, def float64) graph.Input {
		return graph.Input{Name: n, Type: graph.TypeFloat, Default: def, Min: graph.Num(0.0), Max: graph.Num(10.0), Step: graph.Num(0.01)}
	}
	return graph.Schema{
		Name: name, DisplayName: name, Category: "model_patches/unet", PythonModule: freeLunchModule,
		Inputs:  []graph.Input{socket("model", "MODEL"), factor("b1", b1), factor("b2", b2), factor("s1", 0.9), factor("s2", 0.2)},
		Outputs: outputs("MODEL"),
	}
}

// unetOnly refuses models without a UNet for the patches that hook into one (ComfyUI
// installs them anyway and they never run).
func unetOnly(node string, m *sd.Model) error {
	if m.UNet == nil {
		return fmt.Errorf("%s: the model %s has no UNet (the patch applies to SD1.x, SD2.x and SDXL models)", node, m.Name)
	}
	return nil
}

// FreeU scales the UNet's backbone features and damps the skip connections' low
// frequencies in the output blocks.
type FreeU struct {
	Model *sd.Model `input:"model"`
	B1    float64   `input:"b1"`
	B2    float64   `input:"b2"`
	S1    float64   `input:"s1"`
	S2    float64   `input:"s2"`
}

// Schema implements nodes.Typed.
func (*FreeU) Schema() graph.Schema { return freeUSchema("FreeU", 1.1, 1.2) }

// Run implements nodes.Typed (FreeU.patch: set_model_output_block_patch).
func (n *FreeU) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if err := unetOnly("FreeU", n.Model); err != nil {
		return nodes.Result{}, err
	}
	return nodes.One(n.Model.WithOutputBlockPatch(sd.FreeU{B1: n.B1, B2: n.B2, S1: n.S1, S2: n.S2}), nil)
}

// FreeUV2 is FreeU_V2: FreeU with a structure-aware backbone factor.
type FreeUV2 struct {
	Model *sd.Model `input:"model"`
	B1    float64   `input:"b1"`
	B2    float64   `input:"b2"`
	S1    float64   `input:"s1"`
	S2    float64   `input:"s2"`
}

// Schema implements nodes.Typed.
func (*FreeUV2) Schema() graph.Schema { return freeUSchema("FreeU_V2", 1.3, 1.4) }

// Run implements nodes.Typed (FreeU_V2.patch).
func (n *FreeUV2) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if err := unetOnly("FreeU_V2", n.Model); err != nil {
		return nodes.Result{}, err
	}
	return nodes.One(n.Model.WithOutputBlockPatch(sd.FreeUV2{B1: n.B1, B2: n.B2, S1: n.S1, S2: n.S2}), nil)
}

// RescaleCFG rescales the guided prediction towards the cond's spread.
type RescaleCFG struct {
	Model      *sd.Model `input:"model"`
	Multiplier float64   `input:"multiplier"`
}

// Schema implements nodes.Typed.
func (*RescaleCFG) Schema() graph.Schema {
	return graph.Schema{
		Name: "RescaleCFG", DisplayName: "RescaleCFG", Category: "advanced/model", PythonModule: modelAdvancedModule,
		Inputs: []graph.Input{socket("model", "MODEL"),
			{Name: "multiplier", Type: graph.TypeFloat, Default: 0.7, Min: graph.Num(0.0), Max: graph.Num(1.0), Step: graph.Num(0.01)}},
		Outputs: outputs("MODEL"),
	}
}

// Run implements nodes.Typed (RescaleCFG.patch: set_model_sampler_cfg_function).
func (n *RescaleCFG) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(n.Model.WithCFGFunc(sd.RescaleCFG{Multiplier: n.Multiplier}, false), nil)
}

// PerturbedAttentionGuidance guides away from the prediction made with the middle
// block's self-attention map replaced by the identity.
type PerturbedAttentionGuidance struct {
	Model *sd.Model `input:"model"`
	Scale float64   `input:"scale"`
}

// Schema implements nodes.Typed.
func (*PerturbedAttentionGuidance) Schema() graph.Schema {
	return graph.Schema{
		Name: "PerturbedAttentionGuidance", Category: "model_patches/unet", PythonModule: pagModule,
		Inputs: []graph.Input{socketV3("model", "MODEL"),
			{Name: "scale", Type: graph.TypeFloat, Default: 3.0, Min: graph.Num(0.0), Max: graph.Num(100.0), Step: graph.Num(0.01), Round: graph.Num(0.01)}},
		Outputs: outputs("MODEL"),
		Extra:   v3Extra(1, nil),
	}
}

// Run implements nodes.Typed (PerturbedAttentionGuidance.execute).
func (n *PerturbedAttentionGuidance) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if err := unetOnly("PerturbedAttentionGuidance", n.Model); err != nil {
		return nodes.Result{}, err
	}
	return nodes.One(n.Model.WithPostCFG(sd.PerturbedAttentionGuidance{Scale: n.Scale}), nil)
}

// SelfAttentionGuidance guides away from the prediction on a latent blurred where the
// middle block's self-attention concentrates.
type SelfAttentionGuidance struct {
	Model     *sd.Model `input:"model"`
	Scale     float64   `input:"scale"`
	BlurSigma float64   `input:"blur_sigma"`
}

// Schema implements nodes.Typed.
func (*SelfAttentionGuidance) Schema() graph.Schema {
	name := "Self-Attention Guidance"
	return graph.Schema{
		Name: "SelfAttentionGuidance", DisplayName: name, Category: "_for_testing", PythonModule: sagModule,
		Inputs: []graph.Input{socketV3("model", "MODEL"),
			{Name: "scale", Type: graph.TypeFloat, Default: 0.5, Min: graph.Num(-2.0), Max: graph.Num(5.0), Step: graph.Num(0.01)},
			{Name: "blur_sigma", Type: graph.TypeFloat, Default: 2.0, Min: graph.Num(0.0), Max: graph.Num(10.0), Step: graph.Num(0.1)}},
		Outputs: outputs("MODEL"),
		Extra:   experimentalNamed(1, &name),
	}
}

// experimentalNamed is the io.Schema extras of an experimental node with a display
// name (nil: none).
func experimentalNamed(outputs int, displayName *string) map[string]any {
	extra := v3Extra(outputs, displayName)
	extra["experimental"] = true
	return extra
}

// Run implements nodes.Typed (SelfAttentionGuidance.execute: the post-CFG function with
// disable_cfg1_optimization and the attn1 replacement at ("middle", 0, 0)).
func (n *SelfAttentionGuidance) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if err := unetOnly("SelfAttentionGuidance", n.Model); err != nil {
		return nodes.Result{}, err
	}
	return nodes.One(sd.NewSelfAttentionGuidance(n.Scale, n.BlurSigma).Install(n.Model), nil)
}

// PerpNeg is the deprecated Perp-Neg model patch (PerpNegGuider replaces it).
type PerpNeg struct {
	Model             *sd.Model       `input:"model"`
	EmptyConditioning sd.Conditioning `input:"empty_conditioning"`
	NegScale          float64         `input:"neg_scale"`
}

func negScaleInput() graph.Input {
	return graph.Input{Name: "neg_scale", Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(0.0), Max: graph.Num(100.0), Step: graph.Num(0.01)}
}

// Schema implements nodes.Typed.
func (*PerpNeg) Schema() graph.Schema {
	name := "Perp-Neg (DEPRECATED by PerpNegGuider)"
	extra := experimentalNamed(1, &name)
	extra["deprecated"] = true
	return graph.Schema{
		Name: "PerpNeg", DisplayName: name, Category: "_for_testing", PythonModule: perpNegModule,
		Inputs:  []graph.Input{socketV3("model", "MODEL"), socketV3("empty_conditioning", "CONDITIONING"), negScaleInput()},
		Outputs: outputs("MODEL"),
		Extra:   extra,
	}
}

// Run implements nodes.Typed (PerpNeg.execute: set_model_sampler_cfg_function).
func (n *PerpNeg) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(n.Model.WithCFGFunc(sd.PerpNegPatch{Empty: n.EmptyConditioning, NegScale: n.NegScale}, false), nil)
}

// PerpNegGuider is the Perp-Neg guider: positive, negative and empty conditioning.
type PerpNegGuider struct {
	Model             *sd.Model       `input:"model"`
	Positive          sd.Conditioning `input:"positive"`
	Negative          sd.Conditioning `input:"negative"`
	EmptyConditioning sd.Conditioning `input:"empty_conditioning"`
	CFG               float64         `input:"cfg"`
	NegScale          float64         `input:"neg_scale"`
}

// Schema implements nodes.Typed.
func (*PerpNegGuider) Schema() graph.Schema {
	return graph.Schema{
		Name: "PerpNegGuider", Category: "_for_testing", PythonModule: perpNegModule,
		Inputs: []graph.Input{socketV3("model", "MODEL"), socketV3("positive", "CONDITIONING"),
			socketV3("negative", "CONDITIONING"), socketV3("empty_conditioning", "CONDITIONING"),
			{Name: "cfg", Type: graph.TypeFloat, Default: 8.0, Min: graph.Num(0.0), Max: graph.Num(100.0), Step: graph.Num(0.1), Round: graph.Num(0.01)},
			negScaleInput()},
		Outputs: outputs("GUIDER"),
		Extra:   experimentalNamed(1, nil),
	}
}

// Run implements nodes.Typed (PerpNegGuider.execute).
func (n *PerpNegGuider) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(sd.NewPerpNegGuider(n.Model, n.Positive, n.Negative, n.EmptyConditioning, n.CFG, n.NegScale), nil)
}

// FreSca scales the guidance's low and high spatial frequencies apart.
type FreSca struct {
	Model      *sd.Model `input:"model"`
	ScaleLow   float64   `input:"scale_low"`
	ScaleHigh  float64   `input:"scale_high"`
	FreqCutoff int       `input:"freq_cutoff"`
}

// Schema implements nodes.Typed.
func (*FreSca) Schema() graph.Schema {
	name := "FreSca"
	return graph.Schema{
		Name: "FreSca", DisplayName: name, Category: "_for_testing", PythonModule: frescaModule,
		Description: "Applies frequency-dependent scaling to the guidance",
		Inputs: []graph.Input{socketV3("model", "MODEL"),
			{Name: "scale_low", Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(0), Max: graph.Num(10), Step: graph.Num(0.01),
				Tooltip: "Scaling factor for low-frequency components"},
			{Name: "scale_high", Type: graph.TypeFloat, Default: 1.25, Min: graph.Num(0), Max: graph.Num(10), Step: graph.Num(0.01),
				Tooltip: "Scaling factor for high-frequency components"},
			{Name: "freq_cutoff", Type: graph.TypeInt, Default: 20, Min: graph.Num(1), Max: graph.Num(10000), Step: graph.Num(1),
				Tooltip: "Number of frequency indices around center to consider as low-frequency"}},
		Outputs: outputs("MODEL"),
		Extra:   experimentalNamed(1, &name),
	}
}

// Run implements nodes.Typed (FreSca.execute: set_model_sampler_pre_cfg_function).
func (n *FreSca) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(n.Model.WithPreCFG(sd.FreSca{ScaleLow: n.ScaleLow, ScaleHigh: n.ScaleHigh, FreqCutoff: n.FreqCutoff}, false), nil)
}

// continuousSchema is ModelSamplingContinuousEDM's and ModelSamplingContinuousV's.
func continuousSchema(name string, choices []string, sigmaMax, sigmaMin float64) graph.Schema {
	sigma := func(n string, def float64) graph.Input {
		return graph.Input{Name: n, Type: graph.TypeFloat, Default: def, Min: graph.Num(0.0), Max: graph.Num(1000.0), Step: graph.Num(0.001), NoRound: true}
	}
	return graph.Schema{
		Name: name, DisplayName: name, Category: "advanced/model", PythonModule: modelAdvancedModule,
		Inputs:  []graph.Input{socket("model", "MODEL"), combo("sampling", choices...), sigma("sigma_max", sigmaMax), sigma("sigma_min", sigmaMin)},
		Outputs: outputs("MODEL"),
	}
}

// ModelSamplingContinuousEDM samples a model on a continuous log-sigma schedule with
// another prediction type.
type ModelSamplingContinuousEDM struct {
	Model    *sd.Model `input:"model"`
	Sampling string    `input:"sampling"`
	SigmaMax float64   `input:"sigma_max"`
	SigmaMin float64   `input:"sigma_min"`
}

// Schema implements nodes.Typed.
func (*ModelSamplingContinuousEDM) Schema() graph.Schema {
	return continuousSchema("ModelSamplingContinuousEDM", []string{"v_prediction", "edm", "edm_playground_v2.5", "eps", "cosmos_rflow"}, 120.0, 0.002)
}

// Run implements nodes.Typed (ModelSamplingContinuousEDM.patch).
func (n *ModelSamplingContinuousEDM) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	var pred sampling.Prediction
	switch n.Sampling {
	case "eps":
		pred = sampling.EPS
	case "v_prediction":
		pred = sampling.VPrediction
	case "edm":
		pred = sampling.EDM
	default:
		// edm_playground_v2.5 also swaps in Playground's per-channel latent format;
		// cosmos_rflow is Cosmos's rectified flow. Neither model family runs here.
		return nodes.Result{}, fmt.Errorf("ModelSamplingContinuousEDM: sampling %q is not supported (eps, v_prediction and edm are)", n.Sampling)
	}
	ms, err := sampling.NewContinuousEDM(pred, n.SigmaMin, n.SigmaMax)
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.One(n.Model.WithSampling(ms), nil)
}

// ModelSamplingContinuousV samples a v-prediction model on a continuous schedule with
// the atan timestep mapping.
type ModelSamplingContinuousV struct {
	Model    *sd.Model `input:"model"`
	Sampling string    `input:"sampling"`
	SigmaMax float64   `input:"sigma_max"`
	SigmaMin float64   `input:"sigma_min"`
}

// Schema implements nodes.Typed.
func (*ModelSamplingContinuousV) Schema() graph.Schema {
	return continuousSchema("ModelSamplingContinuousV", []string{"v_prediction"}, 500.0, 0.03)
}

// Run implements nodes.Typed (ModelSamplingContinuousV.patch).
func (n *ModelSamplingContinuousV) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	ms, err := sampling.NewContinuousV(sampling.VPrediction, n.SigmaMin, n.SigmaMax)
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.One(n.Model.WithSampling(ms), nil)
}

// Interface guards.
var (
	_ nodes.Typed = (*FreeU)(nil)
	_ nodes.Typed = (*FreeUV2)(nil)
	_ nodes.Typed = (*RescaleCFG)(nil)
	_ nodes.Typed = (*PerturbedAttentionGuidance)(nil)
	_ nodes.Typed = (*SelfAttentionGuidance)(nil)
	_ nodes.Typed = (*PerpNeg)(nil)
	_ nodes.Typed = (*PerpNegGuider)(nil)
	_ nodes.Typed = (*FreSca)(nil)
	_ nodes.Typed = (*ModelSamplingContinuousEDM)(nil)
	_ nodes.Typed = (*ModelSamplingContinuousV)(nil)
)

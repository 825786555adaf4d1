package builtin

import (
	"context"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// Regional conditioning and guidance patches: nodes.py ConditioningSetMask,
// ConditioningSetAreaPercentage and ConditioningSetAreaStrength (resolved and weighted
// by the sampler, diffusion/sd condmask.go), and comfy_extras nodes_cfg.py CFGZeroStar,
// nodes_apg.py APG, nodes_tcfg.py TCFG, nodes_mahiro.py Mahiro and nodes_eps.py
// "Epsilon Scaling" (sampler pre-/post-CFG functions, diffusion/sd patch_guidance.go).

const (
	apgModule    = "comfy_extras.nodes_apg"
	tcfgModule   = "comfy_extras.nodes_tcfg"
	mahiroModule = "comfy_extras.nodes_mahiro"
	epsModule    = "comfy_extras.nodes_eps"
)

// areaStrengthInput is the strength widget of the area and mask nodes.
func areaStrengthInput() graph.Input {
	return graph.Input{Name: "strength", Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(0.0), Max: graph.Num(10.0), Step: graph.Num(0.01)}
}

// ConditioningSetMask weighs the conditioning by a mask.
type ConditioningSetMask struct {
	Conditioning sd.Conditioning `input:"conditioning"`
	Mask         *Mask           `input:"mask"`
	Strength     float64         `input:"strength"`
	SetCondArea  string          `input:"set_cond_area"`
}

// Schema implements nodes.Typed.
func (*ConditioningSetMask) Schema() graph.Schema {
	return graph.Schema{
		Name: "ConditioningSetMask", DisplayName: "Conditioning (Set Mask)", Category: "conditioning",
		Inputs: []graph.Input{socket("conditioning", "CONDITIONING"), socket("mask", "MASK"), areaStrengthInput(),
			combo("set_cond_area", "default", "mask bounds")},
		Outputs: outputs("CONDITIONING"),
	}
}

// Run implements nodes.Typed (ConditioningSetMask.append: mask, mask_strength and
// set_area_to_bounds on every entry; area and strength stay).
func (n *ConditioningSetMask) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	m := &sd.CondMask{Data: n.Mask.Pix, N: n.Mask.Batch, H: n.Mask.Height, W: n.Mask.Width}
	bounds := n.SetCondArea != "default"
	return nodes.One(withEntries(n.Conditioning, func(e *sd.Cond) {
		e.Mask, e.MaskStrength, e.SetAreaToBounds = m, n.Strength, bounds
	}), nil)
}

// ConditioningSetAreaPercentage limits the conditioning to a region given as
// fractions of the latent.
type ConditioningSetAreaPercentage struct {
	Conditioning sd.Conditioning `input:"conditioning"`
	Width        float64         `input:"width"`
	Height       float64         `input:"height"`
	X            float64         `input:"x"`
	Y            float64         `input:"y"`
	Strength     float64         `input:"strength"`
}

// Schema implements nodes.Typed.
func (*ConditioningSetAreaPercentage) Schema() graph.Schema {
	frac := func(name string, def float64) graph.Input {
		return graph.Input{Name: name, Type: graph.TypeFloat, Default: def, Min: graph.Num(0), Max: graph.Num(1.0), Step: graph.Num(0.01)}
	}
	return graph.Schema{
		Name: "ConditioningSetAreaPercentage", DisplayName: "Conditioning (Set Area with Percentage)", Category: "conditioning",
		Inputs: []graph.Input{socket("conditioning", "CONDITIONING"),
			frac("width", 1.0), frac("height", 1.0), frac("x", 0), frac("y", 0), areaStrengthInput()},
		Outputs: outputs("CONDITIONING"),
	}
}

// Run implements nodes.Typed (ConditioningSetAreaPercentage.append: the area
// ("percentage", h, w, y, x), the strength, and set_area_to_bounds off).
func (n *ConditioningSetAreaPercentage) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	p := &sd.AreaPercent{Height: n.Height, Width: n.Width, Y: n.Y, X: n.X}
	return nodes.One(withEntries(n.Conditioning, func(e *sd.Cond) {
		e.Area, e.AreaPercent, e.Strength, e.SetAreaToBounds = nil, p, n.Strength, false
	}), nil)
}

// ConditioningSetAreaStrength sets the conditioning's strength.
type ConditioningSetAreaStrength struct {
	Conditioning sd.Conditioning `input:"conditioning"`
	Strength     float64         `input:"strength"`
}

// Schema implements nodes.Typed.
func (*ConditioningSetAreaStrength) Schema() graph.Schema {
	return graph.Schema{
		Name: "ConditioningSetAreaStrength", DisplayName: "ConditioningSetAreaStrength", Category: "conditioning",
		Inputs:  []graph.Input{socket("conditioning", "CONDITIONING"), areaStrengthInput()},
		Outputs: outputs("CONDITIONING"),
	}
}

// Run implements nodes.Typed (ConditioningSetAreaStrength.append).
func (n *ConditioningSetAreaStrength) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(withEntries(n.Conditioning, func(e *sd.Cond) { e.Strength = n.Strength }), nil)
}

// patchedModel is the single "patched_model" output of the guidance nodes.
var patchedModel = []graph.Output{{Type: "MODEL", Name: "patched_model"}}

// CFGZeroStar rescales the uncond prediction by its optimal projection (CFG-Zero*).
type CFGZeroStar struct {
	Model *sd.Model `input:"model"`
}

// Schema implements nodes.Typed.
func (*CFGZeroStar) Schema() graph.Schema {
	return graph.Schema{
		Name: "CFGZeroStar", Category: "advanced/guidance", PythonModule: cfgModule,
		Inputs:  []graph.Input{socketV3("model", "MODEL")},
		Outputs: patchedModel,
		Extra:   v3Extra(1, nil),
	}
}

// Run implements nodes.Typed (CFGZeroStar.execute: set_model_sampler_post_cfg_function).
func (n *CFGZeroStar) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(n.Model.WithPostCFG(sd.CFGZeroStar{}), nil)
}

// APG is Adaptive Projected Guidance.
type APG struct {
	Model         *sd.Model `input:"model"`
	Eta           float64   `input:"eta"`
	NormThreshold float64   `input:"norm_threshold"`
	Momentum      float64   `input:"momentum"`
}

// Schema implements nodes.Typed.
func (*APG) Schema() graph.Schema {
	name := "Adaptive Projected Guidance"
	return graph.Schema{
		Name: "APG", DisplayName: name, Category: "sampling/custom_sampling", PythonModule: apgModule,
		Inputs: []graph.Input{socketV3("model", "MODEL"),
			{Name: "eta", Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(-10.0), Max: graph.Num(10.0), Step: graph.Num(0.01),
				Tooltip: "Controls the scale of the parallel guidance vector. Default CFG behavior at a setting of 1."},
			{Name: "norm_threshold", Type: graph.TypeFloat, Default: 5.0, Min: graph.Num(0.0), Max: graph.Num(50.0), Step: graph.Num(0.1),
				Tooltip: "Normalize guidance vector to this value, normalization disable at a setting of 0."},
			{Name: "momentum", Type: graph.TypeFloat, Default: 0.0, Min: graph.Num(-5.0), Max: graph.Num(1.0), Step: graph.Num(0.01),
				Tooltip: "Controls a running average of guidance during diffusion, disabled at a setting of 0."}},
		Outputs: outputs("MODEL"),
		Extra:   v3Extra(1, &name),
	}
}

// Run implements nodes.Typed (APG.execute: set_model_sampler_pre_cfg_function).
func (n *APG) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(n.Model.WithPreCFG(sd.NewAPG(n.Eta, n.NormThreshold, n.Momentum), false), nil)
}

// TCFG is Tangential Damping CFG.
type TCFG struct {
	Model *sd.Model `input:"model"`
}

// Schema implements nodes.Typed.
func (*TCFG) Schema() graph.Schema {
	name := "Tangential Damping CFG"
	return graph.Schema{
		Name: "TCFG", DisplayName: name, Category: "advanced/guidance", PythonModule: tcfgModule,
		Description: "TCFG – Tangential Damping CFG (2503.18137)\n\nRefine the uncond (negative) to align with the cond (positive) for improving quality.",
		Inputs:      []graph.Input{socketV3("model", "MODEL")},
		Outputs:     patchedModel,
		Extra:       v3Extra(1, &name),
	}
}

// Run implements nodes.Typed (TCFG.execute: set_model_sampler_pre_cfg_function).
func (n *TCFG) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(n.Model.WithPreCFG(sd.TCFG{}, false), nil)
}

// Mahiro scales the guidance along the positive prompt's direction.
type Mahiro struct {
	Model *sd.Model `input:"model"`
}

// Schema implements nodes.Typed.
func (*Mahiro) Schema() graph.Schema {
	name := "Mahiro is so cute that she deserves a better guidance function!! (。・ω・。)"
	return graph.Schema{
		Name: "Mahiro", DisplayName: name, Category: "_for_testing", PythonModule: mahiroModule,
		Description: "Modify the guidance to scale more on the 'direction' of the positive prompt rather than the difference between the negative prompt.",
		Inputs:      []graph.Input{socketV3("model", "MODEL")},
		Outputs:     patchedModel,
		Extra:       experimentalNamed(1, &name),
	}
}

// Run implements nodes.Typed (Mahiro.execute: set_model_sampler_post_cfg_function).
func (n *Mahiro) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(n.Model.WithPostCFG(sd.Mahiro{}), nil)
}

// EpsilonScaling is "Epsilon Scaling": the guided noise prediction divided by a factor.
type EpsilonScaling struct {
	Model         *sd.Model `input:"model"`
	ScalingFactor float64   `input:"scaling_factor"`
}

// Schema implements nodes.Typed.
func (*EpsilonScaling) Schema() graph.Schema {
	return graph.Schema{
		Name: "Epsilon Scaling", Category: "model_patches/unet", PythonModule: epsModule,
		Inputs: []graph.Input{socketV3("model", "MODEL"),
			{Name: "scaling_factor", Type: graph.TypeFloat, Default: 1.005, Min: graph.Num(0.5), Max: graph.Num(1.5), Step: graph.Num(0.001), Display: "number"}},
		Outputs: outputs("MODEL"),
		Extra:   v3Extra(1, nil),
	}
}

// Run implements nodes.Typed (EpsilonScaling.execute: set_model_sampler_post_cfg_function).
func (n *EpsilonScaling) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(n.Model.WithPostCFG(sd.EpsilonScaling{Factor: n.ScalingFactor}), nil)
}

// Interface guards.
var (
	_ nodes.Typed = (*ConditioningSetMask)(nil)
	_ nodes.Typed = (*ConditioningSetAreaPercentage)(nil)
	_ nodes.Typed = (*ConditioningSetAreaStrength)(nil)
	_ nodes.Typed = (*CFGZeroStar)(nil)
	_ nodes.Typed = (*APG)(nil)
	_ nodes.Typed = (*TCFG)(nil)
	_ nodes.Typed = (*Mahiro)(nil)
	_ nodes.Typed = (*EpsilonScaling)(nil)
)

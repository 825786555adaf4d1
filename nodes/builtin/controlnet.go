package builtin

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/forgeflow/forgeflow/diffusion/controlnet"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
	"github.com/forgeflow/forgeflow/weights/memory"
)

// ControlNet nodes (nodes.py ControlNetLoader, DiffControlNetLoader, ControlNetApply,
// ControlNetApplyAdvanced; comfy_extras/nodes_controlnet.py SetUnionControlNetType).
// T2I-Adapters load through ControlNetLoader too.

// checkControlNet admits a control model; ComfyUI's loader raises rather than return
// an empty one.
func checkControlNet(n *controlnet.Net) error {
	if n == nil {
		return errors.New("builtin: the control net is empty")
	}
	return nil
}

// loadControlNet loads a control model file through the model cache.
func (e *sdEnv) loadControlNet(ctx context.Context, name string, env *nodes.Env) (*controlnet.Net, error) {
	path, err := e.resolve("controlnet", name)
	if err != nil {
		return nil, err
	}
	rt, err := e.opts.runtime()
	if err != nil {
		return nil, err
	}
	load := func() (*controlnet.Net, error) {
		return controlnet.Load(rt, path, controlnet.LoadOptions{Logger: envLogger(env)})
	}
	if e.opts.Memory == nil {
		return load()
	}
	h, err := e.opts.Memory.LoadFile(ctx, path, "controlnet", func(ctx context.Context, path string) (memory.Loaded, error) {
		n, err := load()
		if err != nil {
			return memory.Loaded{}, err
		}
		return memory.Loaded{Value: n, Bytes: n.Bytes()}, nil
	})
	if err != nil {
		return nil, err
	}
	defer h.Release()
	return h.Value().(*controlnet.Net), nil
}

// ControlNetLoader is ComfyUI's ControlNetLoader.
type ControlNetLoader struct {
	env            *sdEnv
	ControlNetName string `input:"control_net_name,unchecked"`
}

// Schema implements nodes.Typed.
func (n *ControlNetLoader) Schema() graph.Schema {
	return graph.Schema{
		Name: "ControlNetLoader", DisplayName: "Load ControlNet Model", Category: "loaders",
		Inputs:  []graph.Input{n.env.modelCombo("control_net_name", "controlnet", "")},
		Outputs: outputs("CONTROL_NET"),
	}
}

// Run implements nodes.Typed.
func (n *ControlNetLoader) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	net, err := n.env.loadControlNet(ctx, n.ControlNetName, env)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: ControlNetLoader: %w", err)
	}
	return nodes.One(net, nil)
}

// DiffControlNetLoader is ComfyUI's DiffControlNetLoader: a "difference" ControlNet is
// added to the model's UNet weights; any other control model loads as with
// ControlNetLoader.
type DiffControlNetLoader struct {
	env            *sdEnv
	Model          *sd.Model `input:"model"`
	ControlNetName string    `input:"control_net_name,unchecked"`
}

// Schema implements nodes.Typed.
func (n *DiffControlNetLoader) Schema() graph.Schema {
	return graph.Schema{
		Name: "DiffControlNetLoader", DisplayName: "Load ControlNet Model (diff)", Category: "loaders",
		Inputs:  []graph.Input{socket("model", "MODEL"), n.env.modelCombo("control_net_name", "controlnet", "")},
		Outputs: outputs("CONTROL_NET"),
	}
}

// Run implements nodes.Typed. The result depends on the model, so it does not go
// through the file cache.
func (n *DiffControlNetLoader) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	path, err := n.env.resolve("controlnet", n.ControlNetName)
	if err != nil {
		return nodes.Result{}, err
	}
	rt, err := n.env.opts.runtime()
	if err != nil {
		return nodes.Result{}, err
	}
	net, err := controlnet.Load(rt, path, controlnet.LoadOptions{Model: n.Model, Logger: envLogger(env)})
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: DiffControlNetLoader: %w", err)
	}
	return nodes.One(net, nil)
}

// hintOf is image.movedim(-1, 1).
func hintOf(im *Image) controlnet.Hint {
	return controlnet.Hint{Data: im.NCHW(), N: im.Batch, C: im.Channels, H: im.Height, W: im.Width}
}

// controlStrengthInput is a ControlNet strength: 0 … 10 in steps of 0.01, default 1.
func controlStrengthInput() graph.Input {
	return graph.Input{Name: "strength", Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(0.0), Max: graph.Num(10.0), Step: graph.Num(0.01)}
}

func percentInput(name string, def float64) graph.Input {
	return graph.Input{Name: name, Type: graph.TypeFloat, Default: def, Min: graph.Num(0.0), Max: graph.Num(1.0), Step: graph.Num(0.001)}
}

// ControlNetApply is ComfyUI's deprecated ControlNetApply: every entry gets its own
// copy of the control (chained after the entry's), also given to the negative
// entries without one (control_apply_to_uncond).
type ControlNetApply struct {
	Conditioning sd.Conditioning `input:"conditioning"`
	ControlNet   *controlnet.Net `input:"control_net"`
	Image        *Image          `input:"image"`
	Strength     float64         `input:"strength"`
}

// Schema implements nodes.Typed.
func (*ControlNetApply) Schema() graph.Schema {
	return graph.Schema{
		Name: "ControlNetApply", DisplayName: "Apply ControlNet (OLD)", Category: "conditioning/controlnet",
		Inputs: []graph.Input{
			socket("conditioning", "CONDITIONING"), socket("control_net", "CONTROL_NET"),
			socket("image", "IMAGE"), controlStrengthInput(),
		},
		Outputs: outputs("CONDITIONING"),
		Extra:   map[string]any{"deprecated": true},
	}
}

// Run implements nodes.Typed (nodes.py ControlNetApply.apply_controlnet).
func (n *ControlNetApply) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if n.Strength == 0 {
		return nodes.One(n.Conditioning, nil)
	}
	hint := hintOf(n.Image)
	out := make(sd.Conditioning, len(n.Conditioning))
	for i, e := range n.Conditioning {
		a, err := controlnet.Apply(n.ControlNet, hint, n.Strength, 0, 1, e.Control)
		if err != nil {
			return nodes.Result{}, fmt.Errorf("builtin: ControlNetApply: %w", err)
		}
		e.Control, e.ControlApplyToUncond = a, true
		out[i] = e
	}
	return nodes.One(out, nil)
}

// ControlNetApplyAdvanced is ComfyUI's ControlNetApplyAdvanced ("Apply ControlNet"):
// one control per previous control, shared by the positive and negative entries that
// held it, active between start_percent and end_percent. The VAE is taken and, as in
// ComfyUI, only used by ControlNets that need one (none of the SD UNet ones).
type ControlNetApplyAdvanced struct {
	Positive     sd.Conditioning `input:"positive"`
	Negative     sd.Conditioning `input:"negative"`
	ControlNet   *controlnet.Net `input:"control_net"`
	Image        *Image          `input:"image"`
	Strength     float64         `input:"strength"`
	StartPercent float64         `input:"start_percent"`
	EndPercent   float64         `input:"end_percent"`
	VAE          *sd.VAE         `input:"vae"`
}

// Schema implements nodes.Typed.
func (*ControlNetApplyAdvanced) Schema() graph.Schema {
	vae := socket("vae", "VAE")
	vae.Section = graph.Optional
	return graph.Schema{
		Name: "ControlNetApplyAdvanced", DisplayName: "Apply ControlNet", Category: "conditioning/controlnet",
		Inputs: []graph.Input{
			socket("positive", "CONDITIONING"), socket("negative", "CONDITIONING"),
			socket("control_net", "CONTROL_NET"), socket("image", "IMAGE"), controlStrengthInput(),
			percentInput("start_percent", 0), percentInput("end_percent", 1), vae,
		},
		Outputs: []graph.Output{{Type: "CONDITIONING", Name: "positive"}, {Type: "CONDITIONING", Name: "negative"}},
	}
}

// Run implements nodes.Typed (nodes.py ControlNetApplyAdvanced.apply_controlnet).
func (n *ControlNetApplyAdvanced) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return applyAdvanced("ControlNetApplyAdvanced", n.Positive, n.Negative, n.ControlNet, n.Image, n.Strength, n.StartPercent, n.EndPercent)
}

// applyAdvanced is apply_controlnet of ControlNetApplyAdvanced and ControlNetApplySD3.
func applyAdvanced(class string, positive, negative sd.Conditioning, net *controlnet.Net, image *Image, strength, start, end float64) (nodes.Result, error) {
	if strength == 0 {
		return nodes.Outputs(positive, negative)
	}
	hint := hintOf(image)
	// Keyed by the entry's previous control, nil included (ComfyUI's cnets dict).
	cnets := map[sd.Control]*controlnet.Applied{}
	apply := func(list sd.Conditioning) (sd.Conditioning, error) {
		out := make(sd.Conditioning, len(list))
		for i, e := range list {
			a := cnets[e.Control]
			if a == nil {
				var err error
				if a, err = controlnet.Apply(net, hint, strength, start, end, e.Control); err != nil {
					return nil, err
				}
				cnets[e.Control] = a
			}
			e.Control, e.ControlApplyToUncond = a, false
			out[i] = e
		}
		return out, nil
	}
	pos, err := apply(positive)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: %s: %w", class, err)
	}
	neg, err := apply(negative)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: %s: %w", class, err)
	}
	return nodes.Outputs(pos, neg)
}

// ControlNetApplySD3 is comfy_extras/nodes_sd3.py's deprecated "Apply Controlnet with
// VAE": ControlNetApplyAdvanced with the VAE input required. The VAE serves the
// ControlNets that work in latent space (SD3, Flux), which are not implemented: their
// files fail to load with an error naming them; SD UNet ControlNets ignore it.
type ControlNetApplySD3 struct {
	Positive     sd.Conditioning `input:"positive"`
	Negative     sd.Conditioning `input:"negative"`
	ControlNet   *controlnet.Net `input:"control_net"`
	VAE          *sd.VAE         `input:"vae"`
	Image        *Image          `input:"image"`
	Strength     float64         `input:"strength"`
	StartPercent float64         `input:"start_percent"`
	EndPercent   float64         `input:"end_percent"`
}

// Schema implements nodes.Typed.
func (*ControlNetApplySD3) Schema() graph.Schema {
	name := "Apply Controlnet with VAE"
	extra := v3Extra(2, &name)
	extra["deprecated"] = true
	return graph.Schema{
		Name: "ControlNetApplySD3", DisplayName: name, Category: "conditioning/controlnet", PythonModule: sd3Module,
		Inputs: []graph.Input{
			socketV3("positive", "CONDITIONING"), socketV3("negative", "CONDITIONING"),
			socketV3("control_net", "CONTROL_NET"), socketV3("vae", "VAE"), socketV3("image", "IMAGE"),
			controlStrengthInput(), percentInput("start_percent", 0), percentInput("end_percent", 1),
		},
		Outputs: []graph.Output{{Type: "CONDITIONING", Name: "positive"}, {Type: "CONDITIONING", Name: "negative"}},
		Extra:   extra,
	}
}

// Run implements nodes.Typed.
func (n *ControlNetApplySD3) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return applyAdvanced("ControlNetApplySD3", n.Positive, n.Negative, n.ControlNet, n.Image, n.Strength, n.StartPercent, n.EndPercent)
}

// SetUnionControlNetType is ComfyUI's SetUnionControlNetType: a copy of the control
// net that runs with the chosen union control type ("auto": none).
type SetUnionControlNetType struct {
	ControlNet *controlnet.Net `input:"control_net"`
	Type       string          `input:"type"`
}

// Schema implements nodes.Typed.
func (*SetUnionControlNetType) Schema() graph.Schema {
	return graph.Schema{
		Name: "SetUnionControlNetType", DisplayName: "SetUnionControlNetType", Category: "conditioning/controlnet",
		PythonModule: "comfy_extras.nodes_controlnet",
		Inputs: []graph.Input{
			socket("control_net", "CONTROL_NET"),
			combo("type", append([]string{"auto"}, controlnet.UnionTypes...)...),
		},
		Outputs: outputs("CONTROL_NET"),
	}
}

// Run implements nodes.Typed.
func (n *SetUnionControlNetType) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	var types []int
	if i := slices.Index(controlnet.UnionTypes, n.Type); i >= 0 {
		types = []int{i}
	}
	return nodes.One(n.ControlNet.WithControlType(types), nil)
}

// Interface guards.
var (
	_ nodes.Typed = (*ControlNetLoader)(nil)
	_ nodes.Typed = (*DiffControlNetLoader)(nil)
	_ nodes.Typed = (*ControlNetApply)(nil)
	_ nodes.Typed = (*ControlNetApplyAdvanced)(nil)
	_ nodes.Typed = (*ControlNetApplySD3)(nil)
	_ nodes.Typed = (*SetUnionControlNetType)(nil)
)

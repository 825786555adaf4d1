package builtin

import (
	"context"

	"github.com/forgeflow/forgeflow/diffusion/lora"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// LoRA nodes (nodes.py LoraLoader, LoraLoaderModelOnly): comfy.sd.load_lora_for_models
// through diffusion/sd.LoadLoRA.

const loraDescription = "LoRAs are used to modify diffusion and CLIP models, altering the way in which latents are denoised such as applying styles. Multiple LoRA nodes can be linked together."

// strengthInput is a LoRA strength: −100 … 100 in steps of 0.01, default 1.
func strengthInput(name, tooltip string) graph.Input {
	return graph.Input{Name: name, Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(-100.0), Max: graph.Num(100.0),
		Step: graph.Num(0.01), Tooltip: tooltip}
}

// loadLoRA opens the LoRA file name of the loras folder, through the model cache when
// there is one. Like checkpoints, an evicted LoRA keeps its mapping: the networks
// patched with it read it again when another LoRA is stacked on the same weights.
func (e *sdEnv) loadLoRA(ctx context.Context, name string) (*lora.File, error) {
	return loadModelFile(ctx, e, "loras", name, "lora", lora.Open)
}

// LoraLoader applies a LoRA to a model and its CLIP.
type LoraLoader struct {
	env           *sdEnv
	Model         *sd.Model `input:"model"`
	CLIP          *sd.CLIP  `input:"clip"`
	LoRAName      string    `input:"lora_name,unchecked"`
	StrengthModel float64   `input:"strength_model"`
	StrengthCLIP  float64   `input:"strength_clip"`
}

// Schema implements nodes.Typed.
func (n *LoraLoader) Schema() graph.Schema {
	model, clip := socketV3("model", "MODEL"), socketV3("clip", "CLIP")
	model.Tooltip = "The diffusion model the LoRA will be applied to."
	clip.Tooltip = "The CLIP model the LoRA will be applied to."
	return graph.Schema{
		Name: "LoraLoader", DisplayName: "Load LoRA", Category: "loaders", Description: loraDescription,
		Inputs: []graph.Input{model, clip,
			n.env.modelCombo("lora_name", "loras", "The name of the LoRA."),
			strengthInput("strength_model", "How strongly to modify the diffusion model. This value can be negative."),
			strengthInput("strength_clip", "How strongly to modify the CLIP model. This value can be negative."),
		},
		Outputs: outputs("MODEL", "CLIP"),
		Extra:   map[string]any{"output_tooltips": []any{"The modified diffusion model.", "The modified CLIP model."}},
	}
}

// Run implements nodes.Typed (LoraLoader.load_lora): both strengths 0 give the inputs
// back unchanged, as ComfyUI does.
func (n *LoraLoader) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if n.StrengthModel == 0 && n.StrengthCLIP == 0 {
		return nodes.Outputs(n.Model, n.CLIP)
	}
	f, err := n.env.loadLoRA(ctx, n.LoRAName)
	if err != nil {
		return nodes.Result{}, err
	}
	m, c, err := sd.LoadLoRA(n.Model, n.CLIP, f, n.StrengthModel, n.StrengthCLIP, sd.LoRAOptions{Mode: n.env.opts.LoRAMode, Logger: envLogger(env)})
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.Outputs(m, c)
}

// LoraLoaderModelOnly applies a LoRA to a model alone.
type LoraLoaderModelOnly struct {
	env           *sdEnv
	Model         *sd.Model `input:"model"`
	LoRAName      string    `input:"lora_name,unchecked"`
	StrengthModel float64   `input:"strength_model"`
}

// Schema implements nodes.Typed.
func (n *LoraLoaderModelOnly) Schema() graph.Schema {
	return graph.Schema{
		Name: "LoraLoaderModelOnly", DisplayName: "LoraLoaderModelOnly", Category: "loaders", Description: loraDescription,
		Inputs: []graph.Input{socket("model", "MODEL"), n.env.modelCombo("lora_name", "loras", ""),
			strengthInput("strength_model", "")},
		Outputs: outputs("MODEL"),
		// ComfyUI's class inherits LoraLoader's two output tooltips.
		Extra: map[string]any{"output_tooltips": []any{"The modified diffusion model.", "The modified CLIP model."}},
	}
}

// Run implements nodes.Typed (LoraLoaderModelOnly.load_lora_model_only).
func (n *LoraLoaderModelOnly) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if n.StrengthModel == 0 {
		return nodes.One(n.Model, nil)
	}
	f, err := n.env.loadLoRA(ctx, n.LoRAName)
	if err != nil {
		return nodes.Result{}, err
	}
	m, _, err := sd.LoadLoRA(n.Model, nil, f, n.StrengthModel, 0, sd.LoRAOptions{Mode: n.env.opts.LoRAMode, Logger: envLogger(env)})
	return nodes.One(m, err)
}

// Interface guards.
var (
	_ nodes.Typed = (*LoraLoader)(nil)
	_ nodes.Typed = (*LoraLoaderModelOnly)(nil)
)

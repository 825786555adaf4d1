package builtin

import (
	"context"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// ComfyUI-GGUF's diffusion-model loaders, UnetLoaderGGUF and UnetLoaderGGUFAdvanced (its
// nodes.py). Like UNETLoader (sd3.go) they load a bare diffusion model (an SD UNet, an
// SD3 MMDiT or a Flux transformer, told apart by weights/detect) through
// sd.LoadDiffusionModel; GGUF weights stay in their blocks and are decoded panel by
// panel inside the matrix products.

// loadGGUFModel resolves name in the diffusion_models folder (UnetLoaderGGUF.load_unet
// looks it up in "unet", whatever the listing's filter) and loads it through the model
// cache with dequant_dtype (UnetLoaderGGUFAdvanced's; "default" for UnetLoaderGGUF).
// Loads that decode in the same arithmetic share one entry.
func (e *sdEnv) loadGGUFModel(ctx context.Context, name, dequantDType string) (*sd.Model, error) {
	path, err := e.resolve("diffusion_models", name)
	if err != nil {
		return nil, err
	}
	part := "diffusion_model:gguf"
	switch dequantDType {
	case "", "default", "target", "float32":
	default:
		part += ":" + dequantDType
	}
	ck, err := e.load(ctx, path, part, func(rt *gpu.Runtime, path string) (*sd.Checkpoint, error) {
		return sd.LoadDiffusionModel(rt, path, sd.DiffusionModelOptions{GGUF: true, DequantDType: dequantDType})
	})
	if err != nil {
		return nil, err
	}
	return ck.Model, nil
}

// ggufUnetCombo lists the .gguf files of the diffusion_models directories
// (ComfyUI-GGUF's "unet_gguf" folder).
func (e *sdEnv) ggufUnetCombo() graph.Input {
	return graph.Input{Name: "unet_name", Type: graph.TypeCombo, Bare: true,
		Choices: func() []string { return e.listExt("diffusion_models", ".gguf") }}
}

// UnetLoaderGGUF is ComfyUI-GGUF's UnetLoaderGGUF ("Unet Loader (GGUF)"): a .gguf
// diffusion model with its quantized weights kept as stored.
type UnetLoaderGGUF struct {
	env      *sdEnv
	UnetName string `input:"unet_name,unchecked"`
}

// Schema implements nodes.Typed.
func (n *UnetLoaderGGUF) Schema() graph.Schema {
	return graph.Schema{
		Name: "UnetLoaderGGUF", DisplayName: "Unet Loader (GGUF)", Category: ggufCategory, PythonModule: ggufModule,
		Inputs:  []graph.Input{n.env.ggufUnetCombo()},
		Outputs: outputs("MODEL"),
	}
}

// Run implements nodes.Typed (UnetLoaderGGUF.load_unet).
func (n *UnetLoaderGGUF) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(n.env.loadGGUFModel(ctx, n.UnetName, "default"))
}

// UnetLoaderGGUFAdvanced is ComfyUI-GGUF's UnetLoaderGGUFAdvanced ("Unet Loader
// (GGUF/Advanced)"). dequant_dtype is the arithmetic each GGUF block is decoded in
// inside the GEMM (sd.DiffusionModelOptions.DequantDType): float16 and bfloat16 round
// every product and sum of a block as ComfyUI-GGUF's kernels do; default, target and
// float32 decode in float32 (ComfyUI-GGUF's default is float16: codex/flux.md).
// patch_dtype is the type ComfyUI-GGUF computes LoRA patches in and patch_on_device
// where it keeps them on a GPU; neither changes a model without patches, and LoRA
// patches here are computed in float32 beside the quantized product.
type UnetLoaderGGUFAdvanced struct {
	env           *sdEnv
	UnetName      string `input:"unet_name,unchecked"`
	DequantDType  string `input:"dequant_dtype"`
	PatchDType    string `input:"patch_dtype"`
	PatchOnDevice bool   `input:"patch_on_device"`
}

// Schema implements nodes.Typed.
func (n *UnetLoaderGGUFAdvanced) Schema() graph.Schema {
	dtype := func(name string) graph.Input {
		return graph.Input{Name: name, Type: graph.TypeCombo, Default: "default", Choices: fixed(sd.DequantDTypes)}
	}
	return graph.Schema{
		Name: "UnetLoaderGGUFAdvanced", DisplayName: "Unet Loader (GGUF/Advanced)", Category: ggufCategory, PythonModule: ggufModule,
		Inputs: []graph.Input{
			n.env.ggufUnetCombo(),
			dtype("dequant_dtype"), dtype("patch_dtype"),
			{Name: "patch_on_device", Type: graph.TypeBoolean, Default: false},
		},
		Outputs: outputs("MODEL"),
	}
}

// Run implements nodes.Typed.
func (n *UnetLoaderGGUFAdvanced) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if n.PatchDType == "float16" || n.PatchDType == "bfloat16" {
		if log := envLogger(env); log != nil {
			log.Info("LoRA patches on GGUF weights are computed in float32; patch_dtype is not applied",
				"patch_dtype", n.PatchDType)
		}
	}
	return nodes.One(n.env.loadGGUFModel(ctx, n.UnetName, n.DequantDType))
}

// Interface guards.
var (
	_ nodes.Typed = (*UnetLoaderGGUF)(nil)
	_ nodes.Typed = (*UnetLoaderGGUFAdvanced)(nil)
)

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
// cache, sharing UnetLoaderGGUF's and UnetLoaderGGUFAdvanced's entry.
func (e *sdEnv) loadGGUFModel(ctx context.Context, name string) (*sd.Model, error) {
	path, err := e.resolve("diffusion_models", name)
	if err != nil {
		return nil, err
	}
	ck, err := e.load(ctx, path, "diffusion_model:gguf", func(rt *gpu.Runtime, path string) (*sd.Checkpoint, error) {
		return sd.LoadDiffusionModel(rt, path, sd.DiffusionModelOptions{GGUF: true})
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
	return nodes.One(n.env.loadGGUFModel(ctx, n.UnetName))
}

// ggufDTypes are UnetLoaderGGUFAdvanced's dequant_dtype and patch_dtype choices.
var ggufDTypes = []string{"default", "target", "float32", "float16", "bfloat16"}

// UnetLoaderGGUFAdvanced is ComfyUI-GGUF's UnetLoaderGGUFAdvanced ("Unet Loader
// (GGUF/Advanced)"). Its options steer where and in which type ComfyUI-GGUF
// dequantizes a weight before each matrix product; here blocks are decoded to float32
// inside the GEMM kernels whatever they say (float32 is what "default" and "target"
// give on a CPU), so the model is UnetLoaderGGUF's. dequant_dtype float16 or bfloat16
// would round each decoded weight once more in ComfyUI-GGUF; patch_dtype concerns LoRA
// patches and patch_on_device a GPU.
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
		return graph.Input{Name: name, Type: graph.TypeCombo, Default: "default", Choices: fixed(ggufDTypes)}
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
	if n.DequantDType == "float16" || n.DequantDType == "bfloat16" {
		if log := envLogger(env); log != nil {
			log.Info("GGUF weights are dequantized to float32 inside the matrix products; dequant_dtype is not applied",
				"dequant_dtype", n.DequantDType)
		}
	}
	return nodes.One(n.env.loadGGUFModel(ctx, n.UnetName))
}

// Interface guards.
var (
	_ nodes.Typed = (*UnetLoaderGGUF)(nil)
	_ nodes.Typed = (*UnetLoaderGGUFAdvanced)(nil)
)

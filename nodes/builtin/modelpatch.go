package builtin

import (
	"context"
	"log/slog"
	"strings"
	"sync"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// Model patch nodes of comfy_extras/nodes_attention_multiply.py
// (UNetSelfAttentionMultiply, UNetCrossAttentionMultiply, CLIPAttentionMultiply),
// nodes_model_downscale.py (PatchModelAddDownscale), nodes_hypertile.py (HyperTile), nodes_model_advanced.py
// (ModelComputeDtype) and nodes_torch_compile.py (TorchCompileModel). The attention
// multipliers scale weights through the LoRA weight-patch stack (sd.Model.ScaleWeights,
// codex/lora.md); Deep Shrink is a pair of UNet block patches (sd.DeepShrink).

const (
	attentionMultiplyModule = "comfy_extras.nodes_attention_multiply"
	modelDownscaleModule    = "comfy_extras.nodes_model_downscale"
	torchCompileModule      = "comfy_extras.nodes_torch_compile"
)

// multiplier is one of the attention multipliers' factors: 0 … 10, default 1.
func multiplier(name string) graph.Input {
	return graph.Input{Name: name, Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(0.0), Max: graph.Num(10.0), Step: graph.Num(0.01)}
}

// attentionMultiplySchema is the schema of the three attention multipliers (io.Schema,
// experimental) on a MODEL or CLIP input.
func attentionMultiplySchema(name, in, typ string) graph.Schema {
	extra := v3Extra(1, nil)
	extra["experimental"] = true
	return graph.Schema{
		Name: name, Category: "_for_testing/attention_experiments", PythonModule: attentionMultiplyModule,
		Inputs:  []graph.Input{socketV3(in, typ), multiplier("q"), multiplier("k"), multiplier("v"), multiplier("out")},
		Outputs: outputs(typ), Extra: extra,
	}
}

// attentionFactor returns the factor of a parameter key for attention_multiply's
// suffix match: the weight or bias of <attn>.to_q/to_k/to_v/to_out.0 (UNet) or
// self_attn.q_proj/k_proj/v_proj/out_proj (CLIP), 1 for any other key. names lists the
// q, k, v and out module suffixes.
func attentionFactor(names [4]string, q, k, v, out float64) func(string) float64 {
	factors := [4]float64{q, k, v, out}
	return func(key string) float64 {
		for i, n := range names {
			if strings.HasSuffix(key, n+".weight") || strings.HasSuffix(key, n+".bias") {
				return factors[i]
			}
		}
		return 1
	}
}

// unetAttention lists the UNet attention's module suffixes for attn ("attn1", "attn2").
func unetAttention(attn string) [4]string {
	return [4]string{attn + ".to_q", attn + ".to_k", attn + ".to_v", attn + ".to_out.0"}
}

// attentionMultiply is the shared body of the UNet attention multipliers.
type attentionMultiply struct {
	env   *sdEnv
	Model *sd.Model `input:"model"`
	Q     float64   `input:"q"`
	K     float64   `input:"k"`
	V     float64   `input:"v"`
	Out   float64   `input:"out"`
}

// run is attention_multiply: every matching parameter times its factor, as weight
// patches (stored dtype kept, a LoRA before it scaled with it, one after it not).
func (n *attentionMultiply) run(attn string) (nodes.Result, error) {
	return nodes.One(n.Model.ScaleWeights(attentionFactor(unetAttention(attn), n.Q, n.K, n.V, n.Out), n.env.opts.LoRAMode))
}

// UNetSelfAttentionMultiply scales the q, k, v and output projections of every UNet
// self-attention (attn1).
type UNetSelfAttentionMultiply struct{ attentionMultiply }

// Schema implements nodes.Typed.
func (*UNetSelfAttentionMultiply) Schema() graph.Schema {
	return attentionMultiplySchema("UNetSelfAttentionMultiply", "model", "MODEL")
}

// Run implements nodes.Typed (UNetSelfAttentionMultiply.execute).
func (n *UNetSelfAttentionMultiply) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return n.run("attn1")
}

// UNetCrossAttentionMultiply scales the q, k, v and output projections of every UNet
// cross-attention (attn2).
type UNetCrossAttentionMultiply struct{ attentionMultiply }

// Schema implements nodes.Typed.
func (*UNetCrossAttentionMultiply) Schema() graph.Schema {
	return attentionMultiplySchema("UNetCrossAttentionMultiply", "model", "MODEL")
}

// Run implements nodes.Typed (UNetCrossAttentionMultiply.execute).
func (n *UNetCrossAttentionMultiply) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return n.run("attn2")
}

// CLIPAttentionMultiply scales the q, k, v and output projections of every
// self-attention of the CLIP text encoders (T5 has none of these names and is left
// alone, as in ComfyUI).
type CLIPAttentionMultiply struct {
	env  *sdEnv
	CLIP *sd.CLIP `input:"clip"`
	Q    float64  `input:"q"`
	K    float64  `input:"k"`
	V    float64  `input:"v"`
	Out  float64  `input:"out"`
}

// Schema implements nodes.Typed.
func (*CLIPAttentionMultiply) Schema() graph.Schema {
	return attentionMultiplySchema("CLIPAttentionMultiply", "clip", "CLIP")
}

// Run implements nodes.Typed (CLIPAttentionMultiply.execute).
func (n *CLIPAttentionMultiply) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	names := [4]string{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"}
	return nodes.One(n.CLIP.ScaleWeights(attentionFactor(names, n.Q, n.K, n.V, n.Out), n.env.opts.LoRAMode))
}

// deepShrinkMethods are PatchModelAddDownscale's resize methods, in ComfyUI's order.
var deepShrinkMethods = []string{"bicubic", "nearest-exact", "bilinear", "area", "bislerp"}

// PatchModelAddDownscale is "Kohya Deep Shrink": during the first part of sampling the
// UNet runs its deeper blocks on a latent shrunk after input block block_number and
// resized back in the output blocks.
type PatchModelAddDownscale struct {
	Model              *sd.Model `input:"model"`
	BlockNumber        int       `input:"block_number"`
	DownscaleFactor    float64   `input:"downscale_factor"`
	StartPercent       float64   `input:"start_percent"`
	EndPercent         float64   `input:"end_percent"`
	DownscaleAfterSkip bool      `input:"downscale_after_skip"`
	DownscaleMethod    string    `input:"downscale_method"`
	UpscaleMethod      string    `input:"upscale_method"`
}

// Schema implements nodes.Typed.
func (*PatchModelAddDownscale) Schema() graph.Schema {
	display := "PatchModelAddDownscale (Kohya Deep Shrink)"
	percent := func(name string, def float64) graph.Input {
		return graph.Input{Name: name, Type: graph.TypeFloat, Default: def, Min: graph.Num(0.0), Max: graph.Num(1.0), Step: graph.Num(0.001)}
	}
	return graph.Schema{
		Name: "PatchModelAddDownscale", DisplayName: display, Category: "model_patches/unet", PythonModule: modelDownscaleModule,
		Inputs: []graph.Input{socketV3("model", "MODEL"),
			{Name: "block_number", Type: graph.TypeInt, Default: 3, Min: graph.Num(1), Max: graph.Num(32), Step: graph.Num(1)},
			{Name: "downscale_factor", Type: graph.TypeFloat, Default: 2.0, Min: graph.Num(0.1), Max: graph.Num(9.0), Step: graph.Num(0.001)},
			percent("start_percent", 0), percent("end_percent", 0.35),
			{Name: "downscale_after_skip", Type: graph.TypeBoolean, Default: true},
			comboV3("downscale_method", deepShrinkMethods...), comboV3("upscale_method", deepShrinkMethods...),
		},
		Outputs: outputs("MODEL"), Extra: v3Extra(1, &display),
	}
}

// Run implements nodes.Typed (PatchModelAddDownscale.execute): the sigma range from the
// model's percent_to_sigma, the input patch before or after the skip, the output patch.
func (n *PatchModelAddDownscale) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if err := unetOnly("PatchModelAddDownscale", n.Model); err != nil {
		return nodes.Result{}, err
	}
	p := sd.DeepShrink{Block: n.BlockNumber, Factor: n.DownscaleFactor,
		SigmaStart: n.Model.Sampling.PercentToSigma(n.StartPercent), SigmaEnd: n.Model.Sampling.PercentToSigma(n.EndPercent),
		DownMethod: n.DownscaleMethod, UpMethod: n.UpscaleMethod}
	return nodes.One(n.Model.WithInputBlockPatch(p, n.DownscaleAfterSkip).WithOutputBlockPatch(p), nil)
}

// HyperTile tiles the UNet's self-attention queries (nodes_hypertile.py): cheaper
// self-attention on large latents, with ComfyUI's seeded tile choices (sd.HyperTile).
type HyperTile struct {
	Model      *sd.Model `input:"model"`
	TileSize   int       `input:"tile_size"`
	SwapSize   int       `input:"swap_size"`
	MaxDepth   int       `input:"max_depth"`
	ScaleDepth bool      `input:"scale_depth"`
}

// Schema implements nodes.Typed.
func (*HyperTile) Schema() graph.Schema {
	return graph.Schema{
		Name: "HyperTile", Category: "model_patches/unet", PythonModule: "comfy_extras.nodes_hypertile",
		Inputs: []graph.Input{socketV3("model", "MODEL"),
			{Name: "tile_size", Type: graph.TypeInt, Default: 256, Min: graph.Num(1), Max: graph.Num(2048)},
			{Name: "swap_size", Type: graph.TypeInt, Default: 2, Min: graph.Num(1), Max: graph.Num(128)},
			{Name: "max_depth", Type: graph.TypeInt, Default: 0, Min: graph.Num(0), Max: graph.Num(10)},
			{Name: "scale_depth", Type: graph.TypeBoolean, Default: false},
		},
		Outputs: outputs("MODEL"), Extra: v3Extra(1, nil),
	}
}

// Run implements nodes.Typed (HyperTile.execute: set_model_attn1_patch and
// set_model_attn1_output_patch, as one self-attention patch).
func (n *HyperTile) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if err := unetOnly("HyperTile", n.Model); err != nil {
		return nodes.Result{}, err
	}
	return nodes.One(sd.NewHyperTile(n.TileSize, n.SwapSize, n.MaxDepth, n.ScaleDepth).Install(n.Model), nil)
}

// onceLog logs one info line the first time it is asked to, per node class of a
// registry.
type onceLog struct{ once sync.Once }

func (o *onceLog) info(env *nodes.Env, msg string, args ...any) {
	o.once.Do(func() {
		log := envLogger(env)
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		log.Info(msg, args...)
	})
}

// ModelComputeDtype is ComfyUI's set_model_compute_dtype (the dtype weights are cast
// to for each layer's computation). forgeflow's compute dtype is one choice of the
// whole runtime, not of a model: Linear and Conv2D run in float32, or in bfloat16 when
// the runtime was started with --bf16 on (or auto where it measured faster) on a CPU
// with AVX512_BF16; there is no float16 compute. The node therefore returns the model
// unchanged: "default" always, "fp32" and "bf16" where they name what the runtime
// computes in; any other request is logged once (what was asked, what runs) and runs
// in the runtime's dtype.
type ModelComputeDtype struct {
	log   *onceLog
	Model *sd.Model `input:"model"`
	DType string    `input:"dtype"`
}

// Schema implements nodes.Typed.
func (*ModelComputeDtype) Schema() graph.Schema {
	return graph.Schema{
		Name: "ModelComputeDtype", DisplayName: "ModelComputeDtype", Category: "advanced/debug/model", PythonModule: modelAdvancedModule,
		Inputs:  []graph.Input{socket("model", "MODEL"), combo("dtype", "default", "fp32", "fp16", "bf16")},
		Outputs: outputs("MODEL"),
	}
}

// Run implements nodes.Typed.
func (n *ModelComputeDtype) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	runs := "fp32"
	if n.Model.Runtime.BF16() {
		runs = "bf16"
	}
	if n.DType != "default" && n.DType != runs {
		n.log.info(env, "ModelComputeDtype: the compute dtype is the runtime's (--bf16), not a model's; the model runs unchanged",
			"requested", n.DType, "runtime", runs)
	}
	return nodes.One(n.Model, nil)
}

// TorchCompileModel asks ComfyUI to compile the model with torch.compile. forgeflow has
// no JIT (its kernels are compiled ahead of time, or by NVRTC once per device for
// cuda): the model is returned unchanged and the first run logs one info line saying
// so.
type TorchCompileModel struct {
	log     *onceLog
	Model   *sd.Model `input:"model"`
	Backend string    `input:"backend"`
}

// Schema implements nodes.Typed.
func (*TorchCompileModel) Schema() graph.Schema {
	extra := v3Extra(1, nil)
	extra["experimental"] = true
	return graph.Schema{
		Name: "TorchCompileModel", Category: "_for_testing", PythonModule: torchCompileModule,
		Inputs:  []graph.Input{socketV3("model", "MODEL"), comboV3("backend", "inductor", "cudagraphs")},
		Outputs: outputs("MODEL"), Extra: extra,
	}
}

// Run implements nodes.Typed.
func (n *TorchCompileModel) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	n.log.info(env, "TorchCompileModel: forgeflow has no JIT compiler; the model runs unchanged", "backend", n.Backend)
	return nodes.One(n.Model, nil)
}

// Interface guards.
var (
	_ nodes.Typed = (*UNetSelfAttentionMultiply)(nil)
	_ nodes.Typed = (*UNetCrossAttentionMultiply)(nil)
	_ nodes.Typed = (*CLIPAttentionMultiply)(nil)
	_ nodes.Typed = (*PatchModelAddDownscale)(nil)
	_ nodes.Typed = (*ModelComputeDtype)(nil)
	_ nodes.Typed = (*TorchCompileModel)(nil)
	_ nodes.Typed = (*HyperTile)(nil)
)

package builtin

import (
	"context"
	"errors"
	"fmt"

	"github.com/forgeflow/forgeflow/diffusion/clipvision"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/diffusion/stylemodel"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
	"github.com/forgeflow/forgeflow/weights/memory"
)

// CLIP vision, unCLIP and style model nodes (nodes.py CLIPVisionLoader,
// CLIPVisionEncode, unCLIPCheckpointLoader, unCLIPConditioning, StyleModelLoader,
// StyleModelApply). CLIP_VISION is a *clipvision.Model, CLIP_VISION_OUTPUT a
// *clipvision.Output, STYLE_MODEL a stylemodel.Model (codex/vision.md).

// checkCLIPVision admits a CLIP vision model; nil comes from an unCLIPCheckpointLoader
// on a checkpoint without one.
func checkCLIPVision(m *clipvision.Model) error {
	if m == nil {
		return errors.New("builtin: the CLIP_VISION is empty (the checkpoint holds no CLIP vision model)")
	}
	return nil
}

// checkCLIPVisionOutput admits an encoder output with its image embeddings.
func checkCLIPVisionOutput(o *clipvision.Output) error {
	if o == nil || o.ImageEmbeds == nil || o.LastHidden == nil {
		return errors.New("builtin: incomplete CLIP_VISION_OUTPUT")
	}
	return nil
}

// loadCached is sdEnv.load for values other than checkpoints: through the model cache
// (keyed by file identity and part) when there is one.
func loadCached[T any](ctx context.Context, e *sdEnv, path, part string, load func(rt *gpu.Runtime, path string) (T, int64, error)) (T, error) {
	var zero T
	rt, err := e.opts.runtime()
	if err != nil {
		return zero, err
	}
	if e.opts.Memory == nil {
		v, _, err := load(rt, path)
		return v, err
	}
	h, err := e.opts.Memory.LoadFile(ctx, path, part, func(ctx context.Context, path string) (memory.Loaded, error) {
		v, n, err := load(rt, path)
		if err != nil {
			return memory.Loaded{}, err
		}
		return memory.Loaded{Value: v, Bytes: n}, nil
	})
	if err != nil {
		return zero, err
	}
	defer h.Release()
	return h.Value().(T), nil
}

// loadModelFile resolves name in a model folder and loads the file through the memory
// manager's cache (part names it in reports): the loaders of model files that know
// their own size in memory.
func loadModelFile[T interface{ Bytes() int64 }](ctx context.Context, e *sdEnv, folder, name, part string, load func(*gpu.Runtime, string) (T, error)) (T, error) {
	path, err := e.resolve(folder, name)
	if err != nil {
		var zero T
		return zero, err
	}
	return loadCached(ctx, e, path, part, func(rt *gpu.Runtime, path string) (T, int64, error) {
		f, err := load(rt, path)
		if err != nil {
			var zero T
			return zero, 0, err
		}
		return f, f.Bytes(), nil
	})
}

// CLIPVisionLoader loads a CLIP vision model file.
type CLIPVisionLoader struct {
	env      *sdEnv
	ClipName string `input:"clip_name,unchecked"`
}

// Schema implements nodes.Typed.
func (n *CLIPVisionLoader) Schema() graph.Schema {
	return graph.Schema{
		Name: "CLIPVisionLoader", DisplayName: "Load CLIP Vision", Category: "loaders",
		Inputs:  []graph.Input{n.env.modelCombo("clip_name", "clip_vision", "")},
		Outputs: outputs("CLIP_VISION"),
	}
}

// Run implements nodes.Typed (comfy/clip_vision.py load).
func (n *CLIPVisionLoader) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	f, err := loadModelFile(ctx, n.env, "clip_vision", n.ClipName, "clip_vision", clipvision.LoadFile)
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.One(f.Model, nil)
}

// CLIPVisionEncode encodes images with a CLIP vision model.
type CLIPVisionEncode struct {
	opts       Options
	ClipVision *clipvision.Model `input:"clip_vision"`
	Image      *Image            `input:"image"`
	Crop       string            `input:"crop"`
}

// Schema implements nodes.Typed.
func (*CLIPVisionEncode) Schema() graph.Schema {
	return graph.Schema{
		Name: "CLIPVisionEncode", DisplayName: "CLIP Vision Encode", Category: "conditioning",
		Inputs:  []graph.Input{socket("clip_vision", "CLIP_VISION"), socket("image", "IMAGE"), combo("crop", "center", "none")},
		Outputs: outputs("CLIP_VISION_OUTPUT"),
	}
}

// Run implements nodes.Typed (CLIPVisionEncode.encode: clip_preprocess, then the tower).
func (n *CLIPVisionEncode) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	rt, err := n.opts.runtime()
	if err != nil {
		return nodes.Result{}, err
	}
	c := n.ClipVision.Config
	im := n.Image
	px, err := clipvision.Preprocess(im.Pix, im.Batch, im.Height, im.Width, im.Channels, c.ImageSize, c.Mean, c.Std, n.Crop == "center")
	if err != nil {
		return nodes.Result{}, err
	}
	t, err := rt.FromFloat32(px, im.Batch, 3, c.ImageSize, c.ImageSize)
	if err != nil {
		return nodes.Result{}, err
	}
	defer t.Release()
	out, err := n.ClipVision.Encode(ctx, rt, t)
	return nodes.One(out, err)
}

// UnCLIPCheckpointLoader loads an SD2.1 unCLIP checkpoint with its CLIP vision model.
type UnCLIPCheckpointLoader struct {
	env      *sdEnv
	CkptName string `input:"ckpt_name,unchecked"`
}

// Schema implements nodes.Typed.
func (n *UnCLIPCheckpointLoader) Schema() graph.Schema {
	return graph.Schema{
		Name: "unCLIPCheckpointLoader", DisplayName: "unCLIPCheckpointLoader", Category: "loaders",
		Inputs:  []graph.Input{n.env.modelCombo("ckpt_name", "checkpoints", "")},
		Outputs: outputs("MODEL", "CLIP", "VAE", "CLIP_VISION"),
	}
}

// Run implements nodes.Typed (load_checkpoint_guess_config with output_clipvision):
// the fourth output is empty for a checkpoint without a CLIP vision model.
func (n *UnCLIPCheckpointLoader) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	path, err := n.env.resolve("checkpoints", n.CkptName)
	if err != nil {
		return nodes.Result{}, err
	}
	ck, err := n.env.load(ctx, path, "checkpoint", func(rt *gpu.Runtime, path string) (*sd.Checkpoint, error) {
		return sd.LoadCheckpoint(rt, path, sd.LoadOptions{Logger: envLogger(env)})
	})
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.Outputs(ck.Model, n.env.withVocab(ck.CLIP, envLogger(env)), ck.VAE, ck.CLIPVision)
}

// UnCLIPConditioning attaches image embeddings to conditioning for unCLIP models.
type UnCLIPConditioning struct {
	Conditioning      sd.Conditioning    `input:"conditioning"`
	ClipVisionOutput  *clipvision.Output `input:"clip_vision_output"`
	Strength          float64            `input:"strength"`
	NoiseAugmentation float64            `input:"noise_augmentation"`
}

// Schema implements nodes.Typed.
func (*UnCLIPConditioning) Schema() graph.Schema {
	return graph.Schema{
		Name: "unCLIPConditioning", DisplayName: "unCLIPConditioning", Category: "conditioning",
		Inputs: []graph.Input{socket("conditioning", "CONDITIONING"), socket("clip_vision_output", "CLIP_VISION_OUTPUT"),
			{Name: "strength", Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(-10.0), Max: graph.Num(10.0), Step: graph.Num(0.01)},
			{Name: "noise_augmentation", Type: graph.TypeFloat, Default: 0.0, Min: graph.Num(0.0), Max: graph.Num(1.0), Step: graph.Num(0.01)}},
		Outputs: outputs("CONDITIONING"),
	}
}

// Run implements nodes.Typed (unCLIPConditioning.apply_adm: appended to each entry's
// unclip_conditioning; strength 0 changes nothing).
func (n *UnCLIPConditioning) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if n.Strength == 0 {
		return nodes.One(n.Conditioning, nil)
	}
	if n.ClipVisionOutput.ImageEmbeds.Rank() != 2 {
		return nodes.Result{}, fmt.Errorf("unCLIPConditioning: image embeds %v are not (images, width): a SigLIP output cannot condition an unCLIP model",
			n.ClipVisionOutput.ImageEmbeds.Shape())
	}
	u := sd.UnCLIPCond{ImageEmbeds: n.ClipVisionOutput.ImageEmbeds, Strength: n.Strength, NoiseAugmentation: n.NoiseAugmentation}
	return nodes.One(withEntries(n.Conditioning, func(c *sd.Cond) {
		c.UnCLIP = append(append([]sd.UnCLIPCond(nil), c.UnCLIP...), u)
	}), nil)
}

// checkStyleModel admits a style model.
func checkStyleModel(m stylemodel.Model) error {
	if m == nil {
		return errors.New("builtin: missing STYLE_MODEL")
	}
	return nil
}

// StyleModelLoader loads a style model (Flux Redux, T2I-Adapter style).
type StyleModelLoader struct {
	env            *sdEnv
	StyleModelName string `input:"style_model_name,unchecked"`
}

// Schema implements nodes.Typed.
func (n *StyleModelLoader) Schema() graph.Schema {
	return graph.Schema{
		Name: "StyleModelLoader", DisplayName: "Load Style Model", Category: "loaders",
		Inputs:  []graph.Input{n.env.modelCombo("style_model_name", "style_models", "")},
		Outputs: outputs("STYLE_MODEL"),
	}
}

// Run implements nodes.Typed (comfy/sd.py load_style_model).
func (n *StyleModelLoader) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	f, err := loadModelFile(ctx, n.env, "style_models", n.StyleModelName, "style_model", stylemodel.LoadFile)
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.One(f.Model, nil)
}

// StyleModelApply appends a style model's tokens to a conditioning.
type StyleModelApply struct {
	opts             Options
	Conditioning     sd.Conditioning    `input:"conditioning"`
	StyleModel       stylemodel.Model   `input:"style_model"`
	ClipVisionOutput *clipvision.Output `input:"clip_vision_output"`
	Strength         float64            `input:"strength"`
	StrengthType     string             `input:"strength_type"`
}

// Schema implements nodes.Typed.
func (*StyleModelApply) Schema() graph.Schema {
	return graph.Schema{
		Name: "StyleModelApply", DisplayName: "Apply Style Model", Category: "conditioning/style_model",
		Inputs: []graph.Input{socket("conditioning", "CONDITIONING"), socket("style_model", "STYLE_MODEL"),
			socket("clip_vision_output", "CLIP_VISION_OUTPUT"),
			{Name: "strength", Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(0.0), Max: graph.Num(10.0), Step: graph.Num(0.001)},
			combo("strength_type", "multiply", "attn_bias")},
		Outputs: outputs("CONDITIONING"),
	}
}

// Run implements nodes.Typed (StyleModelApply.apply_stylemodel).
func (n *StyleModelApply) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	rt, err := n.opts.runtime()
	if err != nil {
		return nodes.Result{}, err
	}
	style, err := n.StyleModel.Cond(ctx, rt, n.ClipVisionOutput.LastHidden)
	if err != nil {
		return nodes.Result{}, err
	}
	defer style.Release()
	return nodes.One(sd.ApplyStyle(rt, n.Conditioning, style, n.Strength, n.StrengthType == "attn_bias"))
}

// Interface guards.
var (
	_ nodes.Typed = (*StyleModelLoader)(nil)
	_ nodes.Typed = (*StyleModelApply)(nil)
	_ nodes.Typed = (*CLIPVisionLoader)(nil)
	_ nodes.Typed = (*CLIPVisionEncode)(nil)
	_ nodes.Typed = (*UnCLIPCheckpointLoader)(nil)
	_ nodes.Typed = (*UnCLIPConditioning)(nil)
)

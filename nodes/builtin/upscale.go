package builtin

import (
	"context"
	"errors"
	"fmt"

	upmodel "github.com/forgeflow/forgeflow/diffusion/upscale" // builtin has its own upscale (image resize)
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
	"github.com/forgeflow/forgeflow/weights/memory"
)

// UpscaleModelLoader and ImageUpscaleWithModel (comfy_extras/nodes_upscale_model.py).
// ComfyUI 0.3.64's reference object_info lacks both (its spandrel import failed there);
// their schemas are written from that file's define_schema in io.Schema's form.

const upscaleModule = "comfy_extras.nodes_upscale_model"

// checkUpscaleModel is UPSCALE_MODEL's value check.
func checkUpscaleModel(m *upmodel.Model) error {
	if m == nil {
		return errors.New("builtin: no upscale model")
	}
	return nil
}

// UpscaleModelLoader loads a file of the upscale_models folder.
type UpscaleModelLoader struct {
	env       *sdEnv
	ModelName string `input:"model_name,unchecked"`
}

// Schema implements nodes.Typed.
func (n *UpscaleModelLoader) Schema() graph.Schema {
	name := "Load Upscale Model"
	model := n.env.modelCombo("model_name", "upscale_models", "")
	model.Bare, model.ComboV3, model.Multiselect = false, true, graph.Off
	return graph.Schema{
		Name: "UpscaleModelLoader", DisplayName: name, Category: "loaders", PythonModule: upscaleModule,
		Inputs:  []graph.Input{model},
		Outputs: outputs("UPSCALE_MODEL"),
		Extra:   v3Extra(1, &name),
	}
}

// Run implements nodes.Typed (UpscaleModelLoader.execute: load_torch_file, then
// spandrel's ModelLoader; a model that is not single-image is refused there, here any
// architecture other than the three forgeflow runs).
func (n *UpscaleModelLoader) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	path, err := n.env.resolve("upscale_models", n.ModelName)
	if err != nil {
		return nodes.Result{}, err
	}
	rt, err := n.env.opts.runtime()
	if err != nil {
		return nodes.Result{}, err
	}
	if n.env.opts.Memory == nil {
		return nodes.One(upmodel.Load(rt, path))
	}
	// Cached by file identity; the mapping stays with the value (see sdEnv.load).
	h, err := n.env.opts.Memory.LoadFile(ctx, path, "upscale", func(ctx context.Context, path string) (memory.Loaded, error) {
		m, err := upmodel.Load(rt, path)
		if err != nil {
			return memory.Loaded{}, err
		}
		return memory.Loaded{Value: m, Bytes: m.Bytes()}, nil
	})
	if err != nil {
		return nodes.Result{}, err
	}
	defer h.Release()
	m := h.Value().(*upmodel.Model)
	if env != nil && env.Logger != nil {
		env.Logger.Info("upscale model loaded", "model", m.String(), "file", n.ModelName)
	}
	return nodes.One(m, nil)
}

// ImageUpscaleWithModel upscales an image batch with a loaded model.
type ImageUpscaleWithModel struct {
	opts         Options
	UpscaleModel *upmodel.Model `input:"upscale_model"`
	Image        *Image         `input:"image"`
}

// Schema implements nodes.Typed.
func (*ImageUpscaleWithModel) Schema() graph.Schema {
	name := "Upscale Image (using Model)"
	return graph.Schema{
		Name: "ImageUpscaleWithModel", DisplayName: name, Category: "image/upscaling", PythonModule: upscaleModule,
		Inputs:  []graph.Input{socketV3("upscale_model", "UPSCALE_MODEL"), socketV3("image", "IMAGE")},
		Outputs: outputs("IMAGE"),
		Extra:   v3Extra(1, &name),
	}
}

// Run implements nodes.Typed (ImageUpscaleWithModel.execute): tiles of 512 overlapping
// by 32, the tile halved while one would not fit in memory (ComfyUI halves it on an
// out-of-memory error), progress per tile, the result clamped to 0..1.
func (n *ImageUpscaleWithModel) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	rt, err := n.opts.runtime()
	if err != nil {
		return nodes.Result{}, err
	}
	m, im := n.UpscaleModel, n.Image
	if _, err := sizeOf("image", im.Batch, im.Height*m.Scale, im.Width*m.Scale, 3); err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: ImageUpscaleWithModel: %dx%d upscaled %d×: %w", im.Width, im.Height, m.Scale, err)
	}
	o := upmodel.TileOptions{Budget: n.tileBudget()}
	if env != nil && env.Progress != nil {
		o.Progress = env.Progress
	}
	out, err := m.Upscale(ctx, rt, upmodel.Image{N: im.Batch, C: im.Channels, H: im.Height, W: im.Width, Pix: im.NCHW()}, o)
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.One(ImageFromNCHW(out.Pix, out.N, out.C, out.H, out.W))
}

// tileBudget is the activation memory one tile may take: three quarters of the RAM
// available now, or no bound without a memory manager.
func (n *ImageUpscaleWithModel) tileBudget() int64 {
	if n.opts.Memory == nil {
		return 0
	}
	avail, err := n.opts.Memory.AvailableRAM()
	if err != nil || avail == 0 {
		return 0
	}
	return int64(avail / 4 * 3)
}

var (
	_ nodes.Typed = (*UpscaleModelLoader)(nil)
	_ nodes.Typed = (*ImageUpscaleWithModel)(nil)
)

package builtin

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// The deprecated checkpoint loader with an inference config (nodes.py CheckpointLoader),
// the diffusers folder loader (nodes.py DiffusersLoader), HypernetworkLoader (comfy_extras/nodes_hypernetwork.py) and InstructPix2Pix's
// conditioning (comfy_extras/nodes_ip2p.py).

// CheckpointLoader loads a checkpoint as CheckpointLoaderSimple does, then applies what
// ComfyUI takes from the chosen inference config: v-prediction and the CLIP layer.
type CheckpointLoader struct {
	env        *sdEnv
	ConfigName string `input:"config_name,unchecked"`
	CkptName   string `input:"ckpt_name,unchecked"`
}

// Schema implements nodes.Typed.
func (n *CheckpointLoader) Schema() graph.Schema {
	return graph.Schema{
		Name: "CheckpointLoader", DisplayName: "Load Checkpoint With Config (DEPRECATED)", Category: "advanced/loaders",
		Inputs: []graph.Input{
			n.env.modelCombo("config_name", "configs", ""),
			n.env.modelCombo("ckpt_name", "checkpoints", ""),
		},
		Outputs: outputs("MODEL", "CLIP", "VAE"),
		Extra:   map[string]any{"deprecated": true},
	}
}

// Run implements nodes.Typed (comfy/sd.py load_checkpoint).
func (n *CheckpointLoader) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	cfgPath, err := n.env.resolve("configs", n.ConfigName)
	if err != nil {
		return nodes.Result{}, err
	}
	cfg, err := sd.ReadCheckpointConfig(cfgPath)
	if err != nil {
		return nodes.Result{}, err
	}
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
	m, c, err := cfg.Apply(ck)
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.Outputs(m, n.env.withVocab(c, envLogger(env)), ck.VAE)
}

// DiffusersLoader loads a diffusers pipeline folder (models/diffusers/NAME with its
// model_index.json) into MODEL, CLIP and VAE.
type DiffusersLoader struct {
	env       *sdEnv
	ModelPath string `input:"model_path,unchecked"`
}

// Schema implements nodes.Typed.
func (n *DiffusersLoader) Schema() graph.Schema {
	return graph.Schema{
		Name: "DiffusersLoader", DisplayName: "DiffusersLoader", Category: "advanced/loaders/deprecated",
		Inputs: []graph.Input{{Name: "model_path", Type: graph.TypeCombo, Bare: true,
			Choices: func() []string {
				if n.env.opts.Models == nil {
					return []string{}
				}
				names, err := n.env.opts.Models.ListDirs("diffusers", "model_index.json")
				if err != nil || names == nil {
					return []string{}
				}
				return names
			},
			ChoicesHint: func() string { return n.env.missingHint("diffusers") }}},
		Outputs: outputs("MODEL", "CLIP", "VAE"),
	}
}

// Run implements nodes.Typed (DiffusersLoader.load_checkpoint, comfy/diffusers_load.py).
func (n *DiffusersLoader) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if n.env.opts.Models == nil {
		return nodes.Result{}, fmt.Errorf("builtin: no model folders are configured to find diffusers %q in", n.ModelPath)
	}
	dir, err := n.env.opts.Models.ResolveDir("diffusers", n.ModelPath)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: diffusers %q: %w", n.ModelPath, err)
	}
	unet, err := sd.DiffusersUNetPath(dir)
	if err != nil {
		return nodes.Result{}, err
	}
	// The model cache keys files: the folder is cached under its UNet file.
	ck, err := n.env.load(ctx, unet, "diffusers", func(rt *gpu.Runtime, _ string) (*sd.Checkpoint, error) {
		return sd.LoadDiffusers(rt, dir, sd.LoadOptions{Logger: envLogger(env)})
	})
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.Outputs(ck.Model, n.env.withVocab(ck.CLIP, envLogger(env)), ck.VAE)
}

// HypernetworkLoader patches a model's attention inputs with an A1111 hypernetwork.
type HypernetworkLoader struct {
	env              *sdEnv
	Model            *sd.Model `input:"model"`
	HypernetworkName string    `input:"hypernetwork_name,unchecked"`
	Strength         float64   `input:"strength"`
}

// Schema implements nodes.Typed.
func (n *HypernetworkLoader) Schema() graph.Schema {
	return graph.Schema{
		Name: "HypernetworkLoader", DisplayName: "HypernetworkLoader", Category: "loaders",
		PythonModule: "comfy_extras.nodes_hypernetwork",
		Inputs: []graph.Input{
			socket("model", "MODEL"),
			n.env.modelCombo("hypernetwork_name", "hypernetworks", ""),
			{Name: "strength", Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(-10.0), Max: graph.Num(10.0), Step: graph.Num(0.01)},
		},
		Outputs: outputs("MODEL"),
	}
}

// Run implements nodes.Typed (HypernetworkLoader.load_hypernetwork). A file ComfyUI
// would apply nothing from (an unknown activation, a safetensors file) returns the
// model unchanged with a warning, as ComfyUI does.
func (n *HypernetworkLoader) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	h, err := n.env.loadHypernetwork(ctx, n.HypernetworkName)
	if err != nil {
		return nodes.Result{}, err
	}
	if h.Unsupported != "" {
		log := envLogger(env)
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		log.Warn("hypernetwork applies nothing", "name", n.HypernetworkName, "reason", h.Unsupported)
	}
	return nodes.One(n.Model.WithHypernetwork(h, n.Strength), nil)
}

// loadHypernetwork loads a hypernetworks file through the model cache when there is
// one. As with checkpoints, an evicted entry keeps its mapping (models patched with it
// may still run).
func (e *sdEnv) loadHypernetwork(ctx context.Context, name string) (*sd.Hypernetwork, error) {
	return loadModelFile(ctx, e, "hypernetworks", name, "hypernetwork", sd.LoadHypernetwork)
}

// InstructPixToPixConditioning encodes the image to edit and puts its latent into both
// conditionings (an InstructPix2Pix model's concat input); the latent output is zeros
// of that latent's shape.
type InstructPixToPixConditioning struct {
	Positive sd.Conditioning `input:"positive"`
	Negative sd.Conditioning `input:"negative"`
	VAE      *sd.VAE         `input:"vae"`
	Pixels   *Image          `input:"pixels"`
}

// Schema implements nodes.Typed.
func (*InstructPixToPixConditioning) Schema() graph.Schema {
	return graph.Schema{
		Name: "InstructPixToPixConditioning", Category: "conditioning/instructpix2pix",
		PythonModule: "comfy_extras.nodes_ip2p",
		Inputs: []graph.Input{
			socketV3("positive", "CONDITIONING"), socketV3("negative", "CONDITIONING"),
			socketV3("vae", "VAE"), socketV3("pixels", "IMAGE"),
		},
		Outputs: []graph.Output{{Type: "CONDITIONING", Name: "positive"}, {Type: "CONDITIONING", Name: "negative"}, {Type: "LATENT", Name: "latent"}},
		Extra:   v3Extra(3, nil),
	}
}

// Run implements nodes.Typed (comfy_extras/nodes_ip2p.py
// InstructPixToPixConditioning.execute): the image cropped, centred, to multiples of 8
// pixels whatever the VAE's factor, encoded once; every entry of both conditionings
// gets the latent as its concat_latent_image.
func (n *InstructPixToPixConditioning) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	px, err := cropToCell(n.Pixels, 8)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: InstructPixToPixConditioning: %w", err)
	}
	concat, err := n.VAE.Encode(ctx, toVAEImage(px))
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: InstructPixToPixConditioning: %w", err)
	}
	zeros, err := n.VAE.Runtime.Zeros(gpu.F32, concat.Shape()...)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: InstructPixToPixConditioning: %w", err)
	}
	set := func(e *sd.Cond) { e.ConcatLatent = concat }
	return nodes.Outputs(withEntries(n.Positive, set), withEntries(n.Negative, set), &sd.Latent{Samples: zeros})
}

// cropToCell crops im, centred, to multiples of cell on both sides (the image itself
// when they already are).
func cropToCell(im *Image, cell int) (*Image, error) {
	H, W := im.Height, im.Width
	h, w := H/cell*cell, W/cell*cell
	if h == 0 || w == 0 {
		return nil, fmt.Errorf("a %dx%d image is smaller than the %d-pixel cell", W, H, cell)
	}
	if h == H && w == W {
		return im, nil
	}
	y0, x0, c := (H%cell)/2, (W%cell)/2, im.Channels
	out, err := NewImage(im.Batch, h, w, c)
	if err != nil {
		return nil, err
	}
	for b := 0; b < im.Batch; b++ {
		for y := 0; y < h; y++ {
			copy(out.Pix[(b*h+y)*w*c:(b*h+y+1)*w*c], im.Pix[((b*H+y+y0)*W+x0)*c:])
		}
	}
	return out, nil
}

// Interface guards.
var (
	_ nodes.Typed = (*CheckpointLoader)(nil)
	_ nodes.Typed = (*DiffusersLoader)(nil)
	_ nodes.Typed = (*HypernetworkLoader)(nil)
	_ nodes.Typed = (*InstructPixToPixConditioning)(nil)
)

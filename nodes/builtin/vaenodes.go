package builtin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/diffusion/vae"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// VAE nodes (nodes.py VAEDecode, VAEEncode, VAEDecodeTiled, VAEEncodeTiled) and
// CheckpointSave (comfy_extras/nodes_model_merging.py).

// checkVAE admits a VAE; a nil one comes from a checkpoint without VAE tensors.
func checkVAE(v *sd.VAE) error {
	if v == nil {
		// ComfyUI's wording for a checkpoint loaded without a VAE.
		return errors.New("builtin: the VAE is empty; if it comes from a checkpoint loader, the checkpoint does not contain a valid VAE (load one with VAELoader)")
	}
	return nil
}

func sdVAEIn(in nodes.Inputs, name string) (*sd.VAE, error) {
	v, ok := in[name].(*sd.VAE)
	if !ok {
		return nil, fmt.Errorf("builtin: input %q: want VAE, got %T", name, in[name])
	}
	if v == nil {
		// ComfyUI's wording for a checkpoint loaded without a VAE.
		return nil, fmt.Errorf("builtin: input %q: the VAE is empty; if it comes from a checkpoint loader, the checkpoint does not contain a valid VAE (load one with VAELoader)", name)
	}
	return v, nil
}

func sdLatentIn(in nodes.Inputs, name string) (*sd.Latent, error) {
	l, ok := in[name].(*sd.Latent)
	if !ok || l == nil || l.Samples == nil {
		return nil, fmt.Errorf("builtin: input %q: want LATENT, got %T", name, in[name])
	}
	return l, nil
}

func toVAEImage(im *Image) *vae.Image {
	return &vae.Image{Batch: im.Batch, Height: im.Height, Width: im.Width, Channels: im.Channels, Pix: im.Pix}
}

func fromVAEImage(im *vae.Image) *Image {
	return &Image{Batch: im.Batch, Height: im.Height, Width: im.Width, Channels: im.Channels, Pix: im.Pix}
}

// vaeNode is one of the four VAE nodes; run does its work.
type vaeNode struct {
	schema graph.Schema
	run    func(ctx context.Context, v *sd.VAE, in nodes.Inputs) (any, error)
}

// Schema implements nodes.Node.
func (n *vaeNode) Schema() *graph.Schema { return &n.schema }

// Run implements nodes.Node.
func (n *vaeNode) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	v, err := sdVAEIn(in, "vae")
	if err != nil {
		return nodes.Result{}, err
	}
	out, err := n.run(ctx, v, in)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: %s: %w", n.schema.Name, err)
	}
	return nodes.Result{Outputs: []any{out}}, nil
}

func newVAEDecode() *vaeNode {
	return &vaeNode{schema: graph.Schema{
		Name: "VAEDecode", DisplayName: "VAE Decode", Category: "latent",
		Description: "Decodes latent images back into pixel space images.",
		Inputs: []graph.Input{
			widget("samples", "LATENT", map[string]any{"tooltip": "The latent to be decoded."}),
			widget("vae", "VAE", map[string]any{"tooltip": "The VAE model used for decoding the latent."}),
		},
		Outputs: outputs("IMAGE"),
		Extra:   map[string]any{"output_tooltips": []any{"The decoded image."}},
	}, run: func(ctx context.Context, v *sd.VAE, in nodes.Inputs) (any, error) {
		l, err := sdLatentIn(in, "samples")
		if err != nil {
			return nil, err
		}
		img, err := v.Decode(ctx, l.Samples)
		if err != nil {
			return nil, err
		}
		return fromVAEImage(img), nil
	}}
}

func newVAEEncode() *vaeNode {
	return &vaeNode{schema: graph.Schema{
		Name: "VAEEncode", DisplayName: "VAE Encode", Category: "latent",
		Inputs:  []graph.Input{socket("pixels", "IMAGE"), socket("vae", "VAE")},
		Outputs: outputs("LATENT"),
	}, run: func(ctx context.Context, v *sd.VAE, in nodes.Inputs) (any, error) {
		im, err := imageInput(in, "pixels")
		if err != nil {
			return nil, err
		}
		z, err := v.Encode(ctx, toVAEImage(im))
		if err != nil {
			return nil, err
		}
		return &sd.Latent{Samples: z}, nil
	}}
}

// temporalInputs are the tiled nodes' video-VAE inputs (unused by image VAEs).
func temporalInputs(verb string) []graph.Input {
	return []graph.Input{
		widget("temporal_size", graph.TypeInt, map[string]any{"default": 64, "min": 8, "max": 4096, "step": 4,
			"tooltip": "Only used for video VAEs: Amount of frames to " + verb + " at a time."}),
		widget("temporal_overlap", graph.TypeInt, map[string]any{"default": 8, "min": 4, "max": 4096, "step": 4,
			"tooltip": "Only used for video VAEs: Amount of frames to overlap."}),
	}
}

func newVAEDecodeTiled() *vaeNode {
	return &vaeNode{schema: graph.Schema{
		Name: "VAEDecodeTiled", DisplayName: "VAE Decode (Tiled)", Category: "_for_testing",
		Inputs: append([]graph.Input{
			socket("samples", "LATENT"), socket("vae", "VAE"),
			widget("tile_size", graph.TypeInt, map[string]any{"default": 512, "min": 64, "max": 4096, "step": 32}),
			widget("overlap", graph.TypeInt, map[string]any{"default": 64, "min": 0, "max": 4096, "step": 32}),
		}, temporalInputs("decode")...),
		Outputs: outputs("IMAGE"),
	}, run: func(ctx context.Context, v *sd.VAE, in nodes.Inputs) (any, error) {
		l, err := sdLatentIn(in, "samples")
		if err != nil {
			return nil, err
		}
		tile, err := intIn(in, "tile_size", 64, 4096)
		if err != nil {
			return nil, err
		}
		overlap, err := intIn(in, "overlap", 0, 4096)
		if err != nil {
			return nil, err
		}
		// As VAEDecodeTiled.decode: the overlap is at most a quarter of the tile, and
		// both are given in latent cells.
		if tile < overlap*4 {
			overlap = tile / 4
		}
		f := v.Downscale()
		img, err := v.DecodeTiled(ctx, l.Samples, tile/f, tile/f, overlap/f)
		if err != nil {
			return nil, err
		}
		return fromVAEImage(img), nil
	}}
}

func newVAEEncodeTiled() *vaeNode {
	return &vaeNode{schema: graph.Schema{
		Name: "VAEEncodeTiled", DisplayName: "VAE Encode (Tiled)", Category: "_for_testing",
		Inputs: append([]graph.Input{
			socket("pixels", "IMAGE"), socket("vae", "VAE"),
			widget("tile_size", graph.TypeInt, map[string]any{"default": 512, "min": 64, "max": 4096, "step": 64}),
			widget("overlap", graph.TypeInt, map[string]any{"default": 64, "min": 0, "max": 4096, "step": 32}),
		}, temporalInputs("encode")...),
		Outputs: outputs("LATENT"),
	}, run: func(ctx context.Context, v *sd.VAE, in nodes.Inputs) (any, error) {
		im, err := imageInput(in, "pixels")
		if err != nil {
			return nil, err
		}
		tile, err := intIn(in, "tile_size", 64, 4096)
		if err != nil {
			return nil, err
		}
		overlap, err := intIn(in, "overlap", 0, 4096)
		if err != nil {
			return nil, err
		}
		z, err := v.EncodeTiled(ctx, toVAEImage(im), tile, tile, overlap)
		if err != nil {
			return nil, err
		}
		return &sd.Latent{Samples: z}, nil
	}}
}

// CheckpointSave writes MODEL, CLIP and VAE as one safetensors checkpoint in the output
// folder: "<prefix>_<counter:05>_.safetensors", as ComfyUI names it.
type CheckpointSave struct {
	opts   Options
	schema graph.Schema
}

func newCheckpointSave(opts Options) *CheckpointSave {
	return &CheckpointSave{opts: opts, schema: graph.Schema{
		Name: "CheckpointSave", DisplayName: "Save Checkpoint", Category: "advanced/model_merging",
		PythonModule: "comfy_extras.nodes_model_merging",
		OutputNode:   true,
		Inputs: append([]graph.Input{
			socket("model", "MODEL"), socket("clip", "CLIP"), socket("vae", "VAE"),
			widget("filename_prefix", graph.TypeString, map[string]any{"default": "checkpoints/ComfyUI"}),
		}, hiddenPromptInputs...),
	}}
}

// Schema implements nodes.Node.
func (n *CheckpointSave) Schema() *graph.Schema { return &n.schema }

// Run implements nodes.Node.
func (n *CheckpointSave) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	m, ok := in["model"].(*sd.Model)
	if !ok || m == nil {
		return nodes.Result{}, fmt.Errorf("builtin: input %q: want MODEL, got %T", "model", in["model"])
	}
	c, ok := in["clip"].(*sd.CLIP)
	if !ok || c == nil {
		return nodes.Result{}, fmt.Errorf("builtin: input %q: want CLIP, got %T", "clip", in["clip"])
	}
	v, err := sdVAEIn(in, "vae")
	if err != nil {
		return nodes.Result{}, err
	}
	prefix, err := in.String("filename_prefix")
	if err != nil {
		return nodes.Result{}, err
	}
	if env == nil {
		env = &nodes.Env{}
	}
	folder := n.opts.dirs(env).Output
	if folder == "" {
		return nodes.Result{}, errors.New("builtin: CheckpointSave: no output folder configured")
	}
	now := n.opts.now()
	prefix = frontendReplacements(prefix, env.Prompt, now)
	meta := map[string]string{}
	if !env.DisableMetadata {
		chunks, err := metadataChunks(env)
		if err != nil {
			return nodes.Result{}, err
		}
		meta["prompt"] = "" // json.dumps of a missing prompt is never written: ComfyUI stores ""
		for _, ch := range chunks {
			meta[ch.Keyword] = ch.Text
		}
	}
	if err := os.MkdirAll(folder, 0o755); err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: CheckpointSave: %w", err)
	}
	root, err := os.OpenRoot(folder)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: CheckpointSave: %w", err)
	}
	defer root.Close()
	sp, err := prepareSave(root, prefix, 0, 0, now)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: CheckpointSave: %w", err)
	}
	counter := sp.Counter
	for tries := 0; tries < 10000; tries++ {
		if err := ctx.Err(); err != nil {
			return nodes.Result{}, err
		}
		file := fmt.Sprintf("%s_%05d_.safetensors", sp.Filename, counter)
		if strings.ContainsAny(file, "/"+string(filepath.Separator)) {
			return nodes.Result{}, fmt.Errorf("builtin: CheckpointSave: file name %q: %w", file, errOutsideFolder)
		}
		name := filepath.FromSlash(path.Join(sp.Subfolder, file))
		f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			counter++
			continue
		}
		if err != nil {
			return nodes.Result{}, fmt.Errorf("builtin: CheckpointSave: %w", err)
		}
		title := fmt.Sprintf("%s %d", sp.Filename, counter)
		err = sd.SaveCheckpoint(f, m, c, v, title, meta)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = root.Remove(name) // leave no truncated checkpoint behind
			return nodes.Result{}, fmt.Errorf("builtin: CheckpointSave: %w", err)
		}
		return nodes.Result{}, nil
	}
	return nodes.Result{}, fmt.Errorf("builtin: CheckpointSave: no free file name for %q", sp.Filename)
}

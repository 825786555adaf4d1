package builtin

import (
	"context"
	"errors"
	"fmt"
	"io"
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

func toVAEImage(im *Image) *vae.Image {
	return &vae.Image{Batch: im.Batch, Height: im.Height, Width: im.Width, Channels: im.Channels, Pix: im.Pix}
}

func fromVAEImage(im *vae.Image) *Image {
	return &Image{Batch: im.Batch, Height: im.Height, Width: im.Width, Channels: im.Channels, Pix: im.Pix}
}

// VAEDecode is ComfyUI's VAEDecode.
type VAEDecode struct {
	Samples *sd.Latent `input:"samples"`
	VAE     *sd.VAE    `input:"vae"`
}

// Schema implements nodes.Typed.
func (*VAEDecode) Schema() graph.Schema {
	return graph.Schema{
		Name: "VAEDecode", DisplayName: "VAE Decode", Category: "latent",
		Description: "Decodes latent images back into pixel space images.",
		Inputs: []graph.Input{
			{Name: "samples", Type: "LATENT", Tooltip: "The latent to be decoded."},
			{Name: "vae", Type: "VAE", Tooltip: "The VAE model used for decoding the latent."},
		},
		Outputs: outputs("IMAGE"),
		Extra:   map[string]any{"output_tooltips": []any{"The decoded image."}},
	}
}

// Run implements nodes.Typed.
func (n *VAEDecode) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	img, err := n.VAE.Decode(ctx, n.Samples.Samples)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: VAEDecode: %w", err)
	}
	return nodes.One(fromVAEImage(img), nil)
}

// VAEEncode is ComfyUI's VAEEncode.
type VAEEncode struct {
	Pixels *Image  `input:"pixels"`
	VAE    *sd.VAE `input:"vae"`
}

// Schema implements nodes.Typed.
func (*VAEEncode) Schema() graph.Schema {
	return graph.Schema{
		Name: "VAEEncode", DisplayName: "VAE Encode", Category: "latent",
		Inputs:  []graph.Input{socket("pixels", "IMAGE"), socket("vae", "VAE")},
		Outputs: outputs("LATENT"),
	}
}

// Run implements nodes.Typed.
func (n *VAEEncode) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	z, err := n.VAE.Encode(ctx, toVAEImage(n.Pixels))
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: VAEEncode: %w", err)
	}
	return nodes.One(&sd.Latent{Samples: z}, nil)
}

// tiledInputs are the tiled nodes' tile and overlap widgets and their video-VAE inputs
// (unused by image VAEs).
func tiledInputs(verb string, tileStep int) []graph.Input {
	return []graph.Input{
		{Name: "tile_size", Type: graph.TypeInt, Default: 512, Min: graph.Num(64), Max: graph.Num(4096), Step: graph.Num(tileStep)},
		{Name: "overlap", Type: graph.TypeInt, Default: 64, Min: graph.Num(0), Max: graph.Num(4096), Step: graph.Num(32)},
		{Name: "temporal_size", Type: graph.TypeInt, Default: 64, Min: graph.Num(8), Max: graph.Num(4096), Step: graph.Num(4),
			Tooltip: "Only used for video VAEs: Amount of frames to " + verb + " at a time."},
		{Name: "temporal_overlap", Type: graph.TypeInt, Default: 8, Min: graph.Num(4), Max: graph.Num(4096), Step: graph.Num(4),
			Tooltip: "Only used for video VAEs: Amount of frames to overlap."},
	}
}

// tiles are the tiled nodes' size widgets; the temporal ones only matter for video VAEs,
// which forgeflow does not have.
type tiles struct {
	TileSize        int `input:"tile_size"`
	Overlap         int `input:"overlap"`
	TemporalSize    int `input:"temporal_size"`
	TemporalOverlap int `input:"temporal_overlap"`
}

// VAEDecodeTiled is ComfyUI's VAEDecodeTiled.
type VAEDecodeTiled struct {
	Samples *sd.Latent `input:"samples"`
	VAE     *sd.VAE    `input:"vae"`
	tiles
}

// Schema implements nodes.Typed.
func (*VAEDecodeTiled) Schema() graph.Schema {
	return graph.Schema{
		Name: "VAEDecodeTiled", DisplayName: "VAE Decode (Tiled)", Category: "_for_testing",
		Inputs:  append([]graph.Input{socket("samples", "LATENT"), socket("vae", "VAE")}, tiledInputs("decode", 32)...),
		Outputs: outputs("IMAGE"),
	}
}

// Run implements nodes.Typed. As VAEDecodeTiled.decode: the overlap is at most a
// quarter of the tile, and both are given in latent cells.
func (n *VAEDecodeTiled) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	tile, overlap := n.TileSize, n.Overlap
	if tile < overlap*4 {
		overlap = tile / 4
	}
	f := n.VAE.Downscale()
	img, err := n.VAE.DecodeTiled(ctx, n.Samples.Samples, tile/f, tile/f, overlap/f)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: VAEDecodeTiled: %w", err)
	}
	return nodes.One(fromVAEImage(img), nil)
}

// VAEEncodeTiled is ComfyUI's VAEEncodeTiled.
type VAEEncodeTiled struct {
	Pixels *Image  `input:"pixels"`
	VAE    *sd.VAE `input:"vae"`
	tiles
}

// Schema implements nodes.Typed.
func (*VAEEncodeTiled) Schema() graph.Schema {
	return graph.Schema{
		Name: "VAEEncodeTiled", DisplayName: "VAE Encode (Tiled)", Category: "_for_testing",
		Inputs:  append([]graph.Input{socket("pixels", "IMAGE"), socket("vae", "VAE")}, tiledInputs("encode", 64)...),
		Outputs: outputs("LATENT"),
	}
}

// Run implements nodes.Typed.
func (n *VAEEncodeTiled) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	z, err := n.VAE.EncodeTiled(ctx, toVAEImage(n.Pixels), n.TileSize, n.TileSize, n.Overlap)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: VAEEncodeTiled: %w", err)
	}
	return nodes.One(&sd.Latent{Samples: z}, nil)
}

// CheckpointSave writes MODEL, CLIP and VAE as one safetensors checkpoint in the output
// folder: "<prefix>_<counter:05>_.safetensors", as ComfyUI names it.
type CheckpointSave struct {
	opts           Options
	Model          *sd.Model `input:"model"`
	CLIP           *sd.CLIP  `input:"clip"`
	VAE            *sd.VAE   `input:"vae"`
	FilenamePrefix string    `input:"filename_prefix"`
}

// Schema implements nodes.Typed.
func (*CheckpointSave) Schema() graph.Schema {
	return graph.Schema{
		Name: "CheckpointSave", DisplayName: "Save Checkpoint", Category: "advanced/model_merging",
		PythonModule: "comfy_extras.nodes_model_merging",
		OutputNode:   true,
		Inputs: append([]graph.Input{
			socket("model", "MODEL"), socket("clip", "CLIP"), socket("vae", "VAE"),
			{Name: "filename_prefix", Type: graph.TypeString, Default: "checkpoints/ComfyUI"},
		}, hiddenPromptInputs...),
	}
}

// Run implements nodes.Typed.
func (n *CheckpointSave) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return saveModelFile(ctx, env, n.opts, "CheckpointSave", n.FilenamePrefix, func(w io.Writer, title string, meta map[string]string) error {
		return sd.SaveCheckpoint(w, n.Model, n.CLIP, n.VAE, title, meta)
	})
}

// ModelSave writes MODEL alone as a checkpoint (model.diffusion_model. keys and
// CheckpointSave's metadata): "diffusion_models/ComfyUI_00001_.safetensors".
type ModelSave struct {
	opts           Options
	Model          *sd.Model `input:"model"`
	FilenamePrefix string    `input:"filename_prefix"`
}

// Schema implements nodes.Typed.
func (*ModelSave) Schema() graph.Schema {
	return graph.Schema{
		Name: "ModelSave", DisplayName: "ModelSave", Category: "advanced/model_merging",
		PythonModule: "comfy_extras.nodes_model_merging",
		OutputNode:   true,
		Inputs: append([]graph.Input{
			socket("model", "MODEL"),
			{Name: "filename_prefix", Type: graph.TypeString, Default: "diffusion_models/ComfyUI"},
		}, hiddenPromptInputs...),
	}
}

// Run implements nodes.Typed.
func (n *ModelSave) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return saveModelFile(ctx, env, n.opts, "ModelSave", n.FilenamePrefix, func(w io.Writer, title string, meta map[string]string) error {
		return sd.SaveCheckpoint(w, n.Model, nil, nil, title, meta)
	})
}

// VAESave writes VAE as a VAE file ComfyUI's VAELoader reads: its tensors without the
// checkpoint prefix, "vae/ComfyUI_vae_00001_.safetensors".
type VAESave struct {
	opts           Options
	VAE            *sd.VAE `input:"vae"`
	FilenamePrefix string  `input:"filename_prefix"`
}

// Schema implements nodes.Typed.
func (*VAESave) Schema() graph.Schema {
	return graph.Schema{
		Name: "VAESave", DisplayName: "VAESave", Category: "advanced/model_merging",
		PythonModule: "comfy_extras.nodes_model_merging",
		OutputNode:   true,
		Inputs: append([]graph.Input{
			socket("vae", "VAE"),
			{Name: "filename_prefix", Type: graph.TypeString, Default: "vae/ComfyUI_vae"},
		}, hiddenPromptInputs...),
	}
}

// Run implements nodes.Typed.
func (n *VAESave) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return saveModelFile(ctx, env, n.opts, "VAESave", n.FilenamePrefix, func(w io.Writer, _ string, meta map[string]string) error {
		return sd.SaveVAE(w, n.VAE, meta)
	})
}

// saveModelFile writes one safetensors file "<prefix>_<counter:05>_.safetensors" in the
// output folder, as ComfyUI names them, with the prompt and workflow metadata (unless
// metadata is disabled); write gets the modelspec title ("name counter"). A failed
// write leaves no truncated file behind.
func saveModelFile(ctx context.Context, env *nodes.Env, opts Options, node, prefix string, write func(w io.Writer, title string, meta map[string]string) error) (nodes.Result, error) {
	if env == nil {
		env = &nodes.Env{}
	}
	folder := opts.dirs(env).Output
	if folder == "" {
		return nodes.Result{}, fmt.Errorf("builtin: %s: no output folder configured", node)
	}
	now := opts.now()
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
		return nodes.Result{}, fmt.Errorf("builtin: %s: %w", node, err)
	}
	root, err := os.OpenRoot(folder)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: %s: %w", node, err)
	}
	defer root.Close()
	sp, err := prepareSave(root, prefix, 0, 0, now)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: %s: %w", node, err)
	}
	counter := sp.Counter
	for tries := 0; tries < 10000; tries++ {
		if err := ctx.Err(); err != nil {
			return nodes.Result{}, err
		}
		file := fmt.Sprintf("%s_%05d_.safetensors", sp.Filename, counter)
		if strings.ContainsAny(file, "/"+string(filepath.Separator)) {
			return nodes.Result{}, fmt.Errorf("builtin: %s: file name %q: %w", node, file, errOutsideFolder)
		}
		name := filepath.FromSlash(path.Join(sp.Subfolder, file))
		f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			counter++
			continue
		}
		if err != nil {
			return nodes.Result{}, fmt.Errorf("builtin: %s: %w", node, err)
		}
		err = write(f, fmt.Sprintf("%s %d", sp.Filename, counter), meta)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = root.Remove(name) // leave no truncated file behind
			return nodes.Result{}, fmt.Errorf("builtin: %s: %w", node, err)
		}
		return nodes.Result{}, nil
	}
	return nodes.Result{}, fmt.Errorf("builtin: %s: no free file name for %q", node, sp.Filename)
}

// Interface guards.
var (
	_ nodes.Typed = (*VAEDecode)(nil)
	_ nodes.Typed = (*VAEEncode)(nil)
	_ nodes.Typed = (*VAEDecodeTiled)(nil)
	_ nodes.Typed = (*VAEEncodeTiled)(nil)
	_ nodes.Typed = (*CheckpointSave)(nil)
	_ nodes.Typed = (*ModelSave)(nil)
	_ nodes.Typed = (*VAESave)(nil)
)

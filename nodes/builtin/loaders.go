package builtin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/clip"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/diffusion/t5"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
	"github.com/forgeflow/forgeflow/weights/memory"
)

// Model loaders (nodes.py CheckpointLoaderSimple, VAELoader, CLIPLoader) and the shared
// state of the nodes that run Stable Diffusion networks.

// sdEnv is what the loader nodes share: the options (model folders, model cache, tensor
// runtime) and the CLIP vocabulary, parsed once on first use.
type sdEnv struct {
	opts  Options
	vocab sd.Vocabulary
	t5    sd.T5Vocabulary
}

// list returns the model names of folder for a combo (empty without model folders).
func (e *sdEnv) list(folder string) []string {
	if e.opts.Models == nil {
		return []string{}
	}
	names, err := e.opts.Models.List(folder)
	if err != nil {
		return []string{}
	}
	return names
}

// listExt returns the names of folder's files with one of exts, for a combo.
func (e *sdEnv) listExt(folder string, exts ...string) []string {
	if e.opts.Models == nil {
		return []string{}
	}
	names, err := e.opts.Models.ListExtensions(folder, exts...)
	if err != nil {
		return []string{}
	}
	return names
}

// resolve returns the path of model name in folder.
func (e *sdEnv) resolve(folder, name string) (string, error) {
	if e.opts.Models == nil {
		return "", fmt.Errorf("builtin: no model folders are configured to find %s %q in", folder, name)
	}
	p, err := e.opts.Models.Resolve(folder, name)
	if err != nil {
		return "", fmt.Errorf("builtin: %s %q: %w", folder, name, err)
	}
	return p, nil
}

// load returns the parsed file at path, through the model cache when there is one so
// that loading an unchanged file again is a cache hit. part tells apart different
// parsings of one file.
//
// The parts alias the file's memory mapping. The cache's entry is released as soon as
// the value is handed out (the executor keeps the outputs it needs), and an evicted
// entry leaves its mapping in place: the mapped pages are clean file pages the kernel
// reclaims under pressure, and unmapping them while a sampler still reads them would
// crash.
func (e *sdEnv) load(ctx context.Context, path, part string, load func(rt *gpu.Runtime, path string) (*sd.Checkpoint, error)) (*sd.Checkpoint, error) {
	rt, err := e.opts.runtime()
	if err != nil {
		return nil, err
	}
	if e.opts.Memory == nil {
		return load(rt, path)
	}
	h, err := e.opts.Memory.LoadFile(ctx, path, part, func(ctx context.Context, path string) (memory.Loaded, error) {
		ck, err := load(rt, path)
		if err != nil {
			return memory.Loaded{}, err
		}
		return memory.Loaded{Value: ck, Bytes: ck.Bytes()}, nil
	})
	if err != nil {
		// Keep the loader's own error (FormatError, UnsupportedError) reachable.
		return nil, err
	}
	defer h.Release()
	return h.Value().(*sd.Checkpoint), nil
}

// vocabFor returns the CLIP vocabulary, or nil and why there is none.
func (e *sdEnv) vocabFor() (*clip.BPE, error) {
	if e.opts.Models == nil {
		return nil, errors.New("no model folders are configured to find the CLIP vocabulary in")
	}
	return e.vocab.Load(e.opts.Models)
}

// embeddingDirs are the textual-inversion folders.
func (e *sdEnv) embeddingDirs() []string {
	if e.opts.Models == nil {
		return nil
	}
	d, err := e.opts.Models.Dirs("embeddings")
	if err != nil {
		return nil
	}
	return d
}

// withVocab gives a loaded CLIP its tokenizers, CLIP's and T5's (nil stays nil: a
// checkpoint without text encoders).
func (e *sdEnv) withVocab(c *sd.CLIP, log *slog.Logger) *sd.CLIP {
	if c == nil {
		return nil
	}
	if len(c.Encoders) > 0 {
		bpe, err := e.vocabFor()
		if err != nil && log != nil {
			log.Warn("CLIP loaded without a tokenizer vocabulary; text encoding will fail", "error", err)
		}
		c = c.WithVocab(bpe, err, e.embeddingDirs())
	}
	if c.T5 != nil {
		var vocab *t5.Vocab
		err := errors.New("no model folders are configured to find the T5 tokenizer in")
		if e.opts.Models != nil {
			vocab, err = e.t5.Load(e.opts.Models)
		}
		if err != nil && log != nil {
			log.Warn("T5 loaded without a tokenizer; text encoding will fail", "error", err)
		}
		c = c.WithT5Vocab(vocab, err, e.embeddingDirs())
	}
	// The tokenizers log a prompt's missing textual-inversion embeddings to the loading
	// run's logger, the server's.
	return c.WithLogger(log)
}

func envLogger(env *nodes.Env) *slog.Logger {
	if env != nil && env.Logger != nil {
		return env.Logger
	}
	return nil
}

// modelCombo is a classic combo over a model folder and extra names: [[names],
// {"tooltip"}], or [[names]] without a tooltip. Typed nodes tag it `,unchecked`: the
// loader's resolve says why a name is not there, without listing the folder first.
func (e *sdEnv) modelCombo(name, folder, tooltip string, extra ...string) graph.Input {
	return graph.Input{Name: name, Type: graph.TypeCombo, Tooltip: tooltip, Bare: tooltip == "",
		Choices:     func() []string { return append(e.list(folder), extra...) },
		ChoicesHint: func() string { return e.missingHint(folder) }}
}

// missingHint tells a user whose prompt names a model that is not there where the
// folder's files go and how to get one.
func (e *sdEnv) missingHint(folder string) string {
	if e.opts.Models == nil {
		return ""
	}
	dirs, err := e.opts.Models.Dirs(folder)
	if err != nil || len(dirs) == 0 {
		return ""
	}
	where := fmt.Sprintf("%s files go in %s", folder, dirs[0])
	if len(dirs) > 1 {
		where += fmt.Sprintf(" (searched: %s)", strings.Join(dirs, ", "))
	}
	if len(e.list(folder)) == 0 {
		return fmt.Sprintf("no %s found: %s; get one with 'forgeflow models pull --list' (starter models) or 'forgeflow models pull URL --folder %s', or the editor's Models panel", folder, where, folder)
	}
	return fmt.Sprintf("%s; get it with 'forgeflow models pull URL --folder %s' or the editor's Models panel", where, folder)
}

// CheckpointLoaderSimple loads a single-file checkpoint into MODEL, CLIP and VAE.
type CheckpointLoaderSimple struct {
	env      *sdEnv
	CkptName string `input:"ckpt_name,unchecked"`
}

// Schema implements nodes.Typed.
func (n *CheckpointLoaderSimple) Schema() graph.Schema {
	return graph.Schema{
		Name: "CheckpointLoaderSimple", DisplayName: "Load Checkpoint", Category: "loaders",
		Description: "Loads a diffusion model checkpoint, diffusion models are used to denoise latents.",
		Inputs:      []graph.Input{n.env.modelCombo("ckpt_name", "checkpoints", "The name of the checkpoint (model) to load.")},
		Outputs:     outputs("MODEL", "CLIP", "VAE"),
		Extra: map[string]any{"output_tooltips": []any{
			"The model used for denoising latents.",
			"The CLIP model used for encoding text prompts.",
			"The VAE model used for encoding and decoding images to and from latent space.",
		}},
	}
}

// Run implements nodes.Typed.
func (n *CheckpointLoaderSimple) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
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
	return nodes.Outputs(ck.Model, n.env.withVocab(ck.CLIP, envLogger(env)), ck.VAE)
}

// VAELoader loads a VAE file, or the "pixel_space" pass-through VAE.
type VAELoader struct {
	env     *sdEnv
	VAEName string `input:"vae_name,unchecked"`
}

// Schema implements nodes.Typed.
func (n *VAELoader) Schema() graph.Schema {
	return graph.Schema{
		Name: "VAELoader", DisplayName: "Load VAE", Category: "loaders",
		// TAESD entries ("taesd", "taesdxl", …) are not offered: the tiny autoencoders
		// are not implemented.
		Inputs:  []graph.Input{n.env.modelCombo("vae_name", "vae", "", "pixel_space")},
		Outputs: outputs("VAE"),
	}
}

// Run implements nodes.Typed.
func (n *VAELoader) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if n.VAEName == "pixel_space" {
		rt, err := n.env.opts.runtime()
		if err != nil {
			return nodes.Result{}, err
		}
		return nodes.One(sd.NewPixelSpaceVAE(rt), nil)
	}
	path, err := n.env.resolve("vae", n.VAEName)
	if err != nil {
		return nodes.Result{}, err
	}
	ck, err := n.env.load(ctx, path, "vae", sd.LoadVAE)
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.One(ck.VAE, nil)
}

// clipLoaderTypes is CLIPLoader's type list in ComfyUI 0.3.64's order.
var clipLoaderTypes = []string{"stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv",
	"pixart", "cosmos", "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image"}

// CLIPLoader loads one text encoder file as a CLIP.
type CLIPLoader struct {
	env      *sdEnv
	ClipName string `input:"clip_name,unchecked"`
	Type     string `input:"type"`
	// Device is accepted and ignored: every network runs on the runtime's device.
	Device string `input:"device"`
}

// Schema implements nodes.Typed.
func (n *CLIPLoader) Schema() graph.Schema {
	return graph.Schema{
		Name: "CLIPLoader", DisplayName: "Load CLIP", Category: "advanced/loaders",
		Description: "[Recipes]\n\nstable_diffusion: clip-l\nstable_cascade: clip-g\nsd3: t5 xxl/ clip-g / clip-l\n" +
			"stable_audio: t5 base\nmochi: t5 xxl\ncosmos: old t5 xxl\nlumina2: gemma 2 2B\nwan: umt5 xxl\n" +
			" hidream: llama-3.1 (Recommend) or t5\nomnigen2: qwen vl 2.5 3B",
		Inputs: []graph.Input{
			n.env.modelCombo("clip_name", "text_encoders", ""),
			combo("type", clipLoaderTypes...),
			deviceInput(),
		},
		Outputs: outputs("CLIP"),
	}
}

// Run implements nodes.Typed.
func (n *CLIPLoader) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	path, err := n.env.resolve("text_encoders", n.ClipName)
	if err != nil {
		return nodes.Result{}, err
	}
	ck, err := n.env.load(ctx, path, "clip:"+n.Type, func(rt *gpu.Runtime, path string) (*sd.Checkpoint, error) {
		return sd.LoadTextEncoder(rt, path, n.Type, sd.LoadOptions{Logger: envLogger(env)})
	})
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.One(n.env.withVocab(ck.CLIP, envLogger(env)), nil)
}

// Interface guards.
var (
	_ nodes.Typed = (*CheckpointLoaderSimple)(nil)
	_ nodes.Typed = (*VAELoader)(nil)
	_ nodes.Typed = (*CLIPLoader)(nil)
)

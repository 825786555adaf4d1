package builtin

import (
	"context"
	"fmt"
	"os"
	"slices"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/diffusion/t5"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// Text encoder loaders and prompt nodes of SD3 and Flux: nodes.py DualCLIPLoader,
// comfy_extras/nodes_sd3.py TripleCLIPLoader and CLIPTextEncodeSD3, nodes_flux.py
// CLIPTextEncodeFlux, nodes_cond.py T5TokenizerOptions, and ComfyUI-GGUF's
// CLIPLoaderGGUF, DualCLIPLoaderGGUF and TripleCLIPLoaderGGUF. CLIPLoader is in
// loaders.go; sd.LoadTextEncoders decides what a set of files makes.

const (
	sd3Module    = "comfy_extras.nodes_sd3"
	fluxModule   = "comfy_extras.nodes_flux"
	condModule   = "comfy_extras.nodes_cond"
	ggufModule   = "custom_nodes.ComfyUI-GGUF"
	ggufCategory = "bootleg"
)

// dualCLIPTypes is DualCLIPLoader's type list in ComfyUI 0.3.64's order.
var dualCLIPTypes = []string{"sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image"}

// loadCLIP loads text encoder files of folder as one CLIP of clipType, through the
// model cache (keyed by the first file, the others and the type), with the CLIP and T5
// vocabularies attached after the cache.
func (e *sdEnv) loadCLIP(ctx context.Context, env *nodes.Env, folder string, names []string, clipType string, gguf bool) (*sd.CLIP, error) {
	paths := make([]string, len(names))
	for i, name := range names {
		p, err := e.resolve(folder, name)
		if err != nil {
			return nil, err
		}
		paths[i] = p
	}
	part := "clip:" + clipType
	if gguf {
		part = "clip-gguf:" + clipType
	}
	// The cache knows the first file's identity; the others' paths, sizes and times
	// are part of the key, so that replacing one of them loads again.
	for _, p := range paths[1:] {
		part += "\x00" + p
		if st, err := os.Stat(p); err == nil {
			part += fmt.Sprintf("\x00%d\x00%d", st.Size(), st.ModTime().UnixNano())
		}
	}
	ck, err := e.load(ctx, paths[0], part, func(rt *gpu.Runtime, _ string) (*sd.Checkpoint, error) {
		return sd.LoadTextEncoders(rt, paths, clipType, sd.LoadOptions{Logger: envLogger(env), GGUF: gguf})
	})
	if err != nil {
		return nil, err
	}
	return e.withVocab(ck.CLIP, envLogger(env)), nil
}

// DualCLIPLoader loads two text encoder files as one CLIP (sdxl, sd3 or flux).
type DualCLIPLoader struct {
	env       *sdEnv
	ClipName1 string `input:"clip_name1,unchecked"`
	ClipName2 string `input:"clip_name2,unchecked"`
	Type      string `input:"type"`
	// Device is accepted and ignored: every network runs on the runtime's device.
	Device string `input:"device"`
}

// Schema implements nodes.Typed.
func (n *DualCLIPLoader) Schema() graph.Schema {
	return graph.Schema{
		Name: "DualCLIPLoader", DisplayName: "DualCLIPLoader", Category: "advanced/loaders",
		Description: "[Recipes]\n\nsdxl: clip-l, clip-g\nsd3: clip-l, clip-g / clip-l, t5 / clip-g, t5\nflux: clip-l, t5\n" +
			"hidream: at least one of t5 or llama, recommended t5 and llama\nhunyuan_image: qwen2.5vl 7b and byt5 small",
		Inputs: []graph.Input{
			n.env.modelCombo("clip_name1", "text_encoders", ""),
			n.env.modelCombo("clip_name2", "text_encoders", ""),
			combo("type", dualCLIPTypes...),
			deviceInput(),
		},
		Outputs: outputs("CLIP"),
	}
}

// Run implements nodes.Typed.
func (n *DualCLIPLoader) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(n.env.loadCLIP(ctx, env, "text_encoders", []string{n.ClipName1, n.ClipName2}, n.Type, false))
}

// deviceInput is the CLIP loaders' optional, advanced device combo.
func deviceInput() graph.Input {
	d := combo("device", "default", "cpu")
	d.Section = graph.Optional
	d.Bare = false
	d.Advanced = true
	return d
}

// TripleCLIPLoader loads SD3's CLIP-L, CLIP-G and T5-XXL files as one CLIP.
type TripleCLIPLoader struct {
	env       *sdEnv
	ClipName1 string `input:"clip_name1,unchecked"`
	ClipName2 string `input:"clip_name2,unchecked"`
	ClipName3 string `input:"clip_name3,unchecked"`
}

// Schema implements nodes.Typed.
func (n *TripleCLIPLoader) Schema() graph.Schema {
	files := func(name string) graph.Input {
		in := n.env.modelCombo(name, "text_encoders", "")
		in.ComboV3, in.Multiselect, in.Bare = true, graph.Off, false
		return in
	}
	return graph.Schema{
		Name: "TripleCLIPLoader", Category: "advanced/loaders", PythonModule: sd3Module,
		Description: "[Recipes]\n\nsd3: clip-l, clip-g, t5",
		Inputs:      []graph.Input{files("clip_name1"), files("clip_name2"), files("clip_name3")},
		Outputs:     outputs("CLIP"),
		Extra:       v3Extra(1, nil),
	}
}

// Run implements nodes.Typed.
func (n *TripleCLIPLoader) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(n.env.loadCLIP(ctx, env, "text_encoders", []string{n.ClipName1, n.ClipName2, n.ClipName3}, sd.CLIPTypeSD3, false))
}

// ggufFileCombo is ComfyUI-GGUF's file list for its CLIP loaders: the text_encoders
// folder's model files and its .gguf files, sorted together.
func (e *sdEnv) ggufFileCombo(name string) graph.Input {
	return graph.Input{Name: name, Type: graph.TypeCombo, Bare: true, Choices: func() []string {
		files := append(e.list("text_encoders"), e.listExt("text_encoders", ".gguf")...)
		slices.Sort(files)
		return slices.Compact(files)
	}}
}

// ggufSchema is the object_info of a ComfyUI-GGUF loader (a classic node of that pack).
func ggufSchema(name, title string, inputs []graph.Input) graph.Schema {
	return graph.Schema{Name: name, DisplayName: title, Category: ggufCategory, PythonModule: ggufModule,
		Inputs: inputs, Outputs: outputs("CLIP")}
}

// CLIPLoaderGGUF is ComfyUI-GGUF's CLIPLoaderGGUF: CLIPLoader over safetensors and GGUF
// text encoder files.
type CLIPLoaderGGUF struct {
	env      *sdEnv
	ClipName string `input:"clip_name,unchecked"`
	Type     string `input:"type"`
}

// Schema implements nodes.Typed.
func (n *CLIPLoaderGGUF) Schema() graph.Schema {
	return ggufSchema("CLIPLoaderGGUF", "CLIPLoader (GGUF)", []graph.Input{
		n.env.ggufFileCombo("clip_name"), combo("type", clipLoaderTypes...)})
}

// Run implements nodes.Typed.
func (n *CLIPLoaderGGUF) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(n.env.loadCLIP(ctx, env, "text_encoders", []string{n.ClipName}, n.Type, true))
}

// DualCLIPLoaderGGUF is ComfyUI-GGUF's DualCLIPLoaderGGUF.
type DualCLIPLoaderGGUF struct {
	env       *sdEnv
	ClipName1 string `input:"clip_name1,unchecked"`
	ClipName2 string `input:"clip_name2,unchecked"`
	Type      string `input:"type"`
}

// Schema implements nodes.Typed.
func (n *DualCLIPLoaderGGUF) Schema() graph.Schema {
	return ggufSchema("DualCLIPLoaderGGUF", "DualCLIPLoader (GGUF)", []graph.Input{
		n.env.ggufFileCombo("clip_name1"), n.env.ggufFileCombo("clip_name2"), combo("type", dualCLIPTypes...)})
}

// Run implements nodes.Typed.
func (n *DualCLIPLoaderGGUF) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(n.env.loadCLIP(ctx, env, "text_encoders", []string{n.ClipName1, n.ClipName2}, n.Type, true))
}

// TripleCLIPLoaderGGUF is ComfyUI-GGUF's TripleCLIPLoaderGGUF (SD3).
type TripleCLIPLoaderGGUF struct {
	env       *sdEnv
	ClipName1 string `input:"clip_name1,unchecked"`
	ClipName2 string `input:"clip_name2,unchecked"`
	ClipName3 string `input:"clip_name3,unchecked"`
}

// Schema implements nodes.Typed.
func (n *TripleCLIPLoaderGGUF) Schema() graph.Schema {
	return ggufSchema("TripleCLIPLoaderGGUF", "TripleCLIPLoader (GGUF)", []graph.Input{
		n.env.ggufFileCombo("clip_name1"), n.env.ggufFileCombo("clip_name2"), n.env.ggufFileCombo("clip_name3")})
}

// Run implements nodes.Typed.
func (n *TripleCLIPLoaderGGUF) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(n.env.loadCLIP(ctx, env, "text_encoders", []string{n.ClipName1, n.ClipName2, n.ClipName3}, sd.CLIPTypeSD3, true))
}

// CLIPTextEncodeSD3 encodes CLIP-L's, CLIP-G's and T5's texts apart.
type CLIPTextEncodeSD3 struct {
	CLIP         *sd.CLIP `input:"clip"`
	ClipL        string   `input:"clip_l"`
	ClipG        string   `input:"clip_g"`
	T5XXL        string   `input:"t5xxl"`
	EmptyPadding string   `input:"empty_padding"`
}

// Schema implements nodes.Typed.
func (*CLIPTextEncodeSD3) Schema() graph.Schema {
	return graph.Schema{
		Name: "CLIPTextEncodeSD3", Category: "advanced/conditioning", PythonModule: sd3Module,
		Inputs: []graph.Input{
			socketV3("clip", "CLIP"), prompt("clip_l"), prompt("clip_g"), prompt("t5xxl"),
			comboV3("empty_padding", "none", "empty_prompt"),
		},
		Outputs: outputs("CONDITIONING"),
		Extra:   v3Extra(1, nil),
	}
}

// Run implements nodes.Typed (nodes_sd3.py CLIPTextEncodeSD3.execute).
func (n *CLIPTextEncodeSD3) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(sd.EncodeSD3Prompts(ctx, n.CLIP, n.ClipL, n.ClipG, n.T5XXL, n.EmptyPadding == "none"))
}

// CLIPTextEncodeFlux encodes CLIP-L's and T5's texts apart and sets the guidance.
type CLIPTextEncodeFlux struct {
	CLIP     *sd.CLIP `input:"clip"`
	ClipL    string   `input:"clip_l"`
	T5XXL    string   `input:"t5xxl"`
	Guidance float64  `input:"guidance"`
}

// Schema implements nodes.Typed.
func (*CLIPTextEncodeFlux) Schema() graph.Schema {
	return graph.Schema{
		Name: "CLIPTextEncodeFlux", Category: "advanced/conditioning/flux", PythonModule: fluxModule,
		Inputs: []graph.Input{
			socketV3("clip", "CLIP"), prompt("clip_l"), prompt("t5xxl"),
			{Name: "guidance", Type: graph.TypeFloat, Default: 3.5, Min: graph.Num(0.0), Max: graph.Num(100.0), Step: graph.Num(0.1)},
		},
		Outputs: outputs("CONDITIONING"),
		Extra:   v3Extra(1, nil),
	}
}

// Run implements nodes.Typed (nodes_flux.py CLIPTextEncodeFlux.execute).
func (n *CLIPTextEncodeFlux) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(sd.EncodeFluxPrompts(ctx, n.CLIP, n.ClipL, n.T5XXL, n.Guidance))
}

// T5TokenizerOptions sets the T5 tokenizer's minimum padding and length on a CLIP.
type T5TokenizerOptions struct {
	CLIP       *sd.CLIP `input:"clip"`
	MinPadding int      `input:"min_padding"`
	MinLength  int      `input:"min_length"`
}

// Schema implements nodes.Typed.
func (*T5TokenizerOptions) Schema() graph.Schema {
	count := func(name string) graph.Input {
		return graph.Input{Name: name, Type: graph.TypeInt, Default: 0, Min: graph.Num(0), Max: graph.Num(10000), Step: graph.Num(1)}
	}
	extra := v3Extra(1, nil)
	extra["experimental"] = true
	return graph.Schema{
		Name: "T5TokenizerOptions", Category: "_for_testing/conditioning", PythonModule: condModule,
		Inputs:  []graph.Input{socketV3("clip", "CLIP"), count("min_padding"), count("min_length")},
		Outputs: outputs("CLIP"),
		Extra:   extra,
	}
}

// Run implements nodes.Typed: both options replace the tokenizer's own (0 turns one
// off), as set_tokenizer_option does for t5xxl; a CLIP without T5 passes unchanged.
func (n *T5TokenizerOptions) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(n.CLIP.WithT5Options(t5.Options{MinPadding: n.MinPadding, MinLength: n.MinLength}), nil)
}

// Interface guards.
var (
	_ nodes.Typed = (*DualCLIPLoader)(nil)
	_ nodes.Typed = (*TripleCLIPLoader)(nil)
	_ nodes.Typed = (*CLIPLoaderGGUF)(nil)
	_ nodes.Typed = (*DualCLIPLoaderGGUF)(nil)
	_ nodes.Typed = (*TripleCLIPLoaderGGUF)(nil)
	_ nodes.Typed = (*CLIPTextEncodeSD3)(nil)
	_ nodes.Typed = (*CLIPTextEncodeFlux)(nil)
	_ nodes.Typed = (*T5TokenizerOptions)(nil)
)

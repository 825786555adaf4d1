package builtin

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// SaveLatent and LoadLatent (nodes.py): ComfyUI's ".latent" files, safetensors holding
// "latent_tensor" (the samples, unscaled) and an empty "latent_format_version_0" marker,
// with the prompt and workflow as metadata strings.

const (
	latentTensorKey  = "latent_tensor"
	latentVersionKey = "latent_format_version_0"
	// legacyLatentScale undoes the SD1 scale factor baked into files without the version
	// marker (LoadLatent multiplies them by 1/0.18215).
	legacyLatentScale = 1.0 / 0.18215
)

// SaveLatent writes its latent as "<prefix>_<counter:05>_.latent" in the output folder.
type SaveLatent struct {
	opts           Options
	Samples        *sd.Latent `input:"samples"`
	FilenamePrefix string     `input:"filename_prefix"`
}

// Schema implements nodes.Typed.
func (*SaveLatent) Schema() graph.Schema {
	return graph.Schema{
		Name: "SaveLatent", DisplayName: "SaveLatent", Category: "_for_testing", OutputNode: true,
		Inputs: append([]graph.Input{socket("samples", "LATENT"),
			{Name: "filename_prefix", Type: graph.TypeString, Default: "latents/ComfyUI"}}, hiddenPromptInputs...),
	}
}

// encodeLatentFile returns the .latent file of samples: metadata "prompt" (the prompt's
// json.dumps, "" without one) and one key per extra_pnginfo entry, none with metadata
// disabled.
func encodeLatentFile(env *nodes.Env, data []float32, shape [4]int) ([]byte, error) {
	var meta map[string]string
	if !env.DisableMetadata {
		chunks, err := metadataChunks(env)
		if err != nil {
			return nil, err
		}
		meta = map[string]string{"prompt": ""}
		for _, ch := range chunks {
			meta[ch.Keyword] = ch.Text
		}
	}
	raw := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	entries := []safetensors.Entry{
		{Name: latentTensorKey, DType: weights.F32, Shape: []int64{int64(shape[0]), int64(shape[1]), int64(shape[2]), int64(shape[3])}, Data: raw},
		{Name: latentVersionKey, DType: weights.F32, Shape: []int64{0}, Data: []byte{}},
	}
	safetensors.SortEntries(entries)
	var buf bytes.Buffer
	if err := safetensors.Write(&buf, entries, meta); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Run implements nodes.Typed (SaveLatent.save); the UI result is ComfyUI's
// {"latents": [{"filename", "subfolder", "type": "output"}]}.
func (n *SaveLatent) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if env == nil {
		env = &nodes.Env{}
	}
	folder := n.opts.dirs(env).Output
	if folder == "" {
		return nodes.Result{}, errors.New("builtin: SaveLatent: no output folder configured")
	}
	a, err := latentArray(n.Samples)
	if err != nil {
		return nodes.Result{}, err
	}
	file, err := encodeLatentFile(env, a.data, a.s)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: SaveLatent: %w", err)
	}
	now := n.opts.now()
	prefix := frontendReplacements(n.FilenamePrefix, env.Prompt, now)
	if err := os.MkdirAll(folder, 0o755); err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: SaveLatent: %w", err)
	}
	root, err := os.OpenRoot(folder)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: SaveLatent: %w", err)
	}
	defer root.Close()
	sp, err := prepareSave(root, prefix, 0, 0, now)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: SaveLatent: %w", err)
	}
	counter := sp.Counter
	name, err := writeNew(root, sp.Subfolder, sp.Filename, ".latent", &counter, file)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: SaveLatent: %w", err)
	}
	return nodes.Result{UI: map[string]any{"latents": []any{
		map[string]any{"filename": name, "subfolder": sp.Subfolder, "type": "output"},
	}}}, nil
}

// listLatentFiles is LoadLatent's combo: the regular files of the input folder's top
// level whose names end in ".latent", sorted.
func listLatentFiles(dir string) []string {
	files := []string{}
	if dir == "" {
		return files
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return files
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".latent") {
			continue
		}
		if st, err := os.Stat(dir + string(os.PathSeparator) + e.Name()); err == nil && st.Mode().IsRegular() {
			files = append(files, e.Name())
		}
	}
	sort.Strings(files)
	return files
}

// InvalidLatentError is LoadLatent's VALIDATE_INPUTS failure; its text is ComfyUI's.
type InvalidLatentError struct {
	Name string
	Err  error
}

func (e *InvalidLatentError) Error() string { return "Invalid latent file: " + e.Name }

func (e *InvalidLatentError) Unwrap() error { return e.Err }

// LoadLatent reads a .latent file of the input folder (or "name [output]" etc.).
type LoadLatent struct {
	opts   Options
	Latent string `input:"latent"`
}

// Schema implements nodes.Typed.
func (n *LoadLatent) Schema() graph.Schema {
	dir := n.opts.Dirs.Input
	return graph.Schema{
		Name: "LoadLatent", DisplayName: "LoadLatent", Category: "_for_testing",
		Inputs: []graph.Input{{Name: "latent", Type: graph.TypeCombo, Bare: true, CustomValidation: true,
			Choices: func() []string { return listLatentFiles(dir) }}},
		Outputs: outputs("LATENT"),
	}
}

// invalid gives a failure to open the file ComfyUI's "Invalid latent file" text.
func (n *LoadLatent) invalid(err error) error {
	var inv *InvalidFileError
	if errors.As(err, &inv) {
		return &InvalidLatentError{Name: n.Latent, Err: inv.Err}
	}
	return err
}

// ValidateInputs is LoadLatent.VALIDATE_INPUTS: the file exists inside its folder.
func (n *LoadLatent) ValidateInputs(env *nodes.Env) error {
	f, err := openInput(n.Latent, n.opts.dirs(env))
	if err != nil {
		return n.invalid(err)
	}
	return f.Close()
}

// IsChanged is LoadLatent.IS_CHANGED: the file's SHA-256.
func (n *LoadLatent) IsChanged(env *nodes.Env) (string, error) {
	h, err := fileHash(n.Latent, n.opts.dirs(env))
	if err != nil {
		return "", n.invalid(err)
	}
	return h, nil
}

// Run implements nodes.Typed (LoadLatent.load): latent_tensor as float32, multiplied by
// 1/0.18215 when the file lacks the version-0 marker (files of older ComfyUI, which
// stored scaled latents).
func (n *LoadLatent) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	rt, err := n.opts.runtime()
	if err != nil {
		return nodes.Result{}, err
	}
	raw, err := readInput(n.Latent, n.opts.dirs(env))
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: LoadLatent: %w", n.invalid(err))
	}
	f, err := safetensors.OpenBytes(n.Latent, raw)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: LoadLatent: %w", err)
	}
	defer f.Close()
	t, err := f.Tensor(latentTensorKey)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: LoadLatent: %q has no %s: %w", n.Latent, latentTensorKey, err)
	}
	if len(t.Shape) != 4 {
		return nodes.Result{}, fmt.Errorf("builtin: LoadLatent: %q: latent_tensor %v is not an (N, C, H, W) image latent", n.Latent, t.Shape)
	}
	shape := make([]int, 4)
	for i, d := range t.Shape {
		shape[i] = int(d)
	}
	if _, err := sizeOf("latent", shape...); err != nil {
		return nodes.Result{}, err
	}
	data, err := t.Float32()
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: LoadLatent: %w", err)
	}
	if _, ok := f.Info(latentVersionKey); !ok {
		m := float32(legacyLatentScale)
		for i := range data {
			data[i] *= m
		}
	}
	s, err := rt.FromFloat32(data, shape...)
	if err != nil {
		return nodes.Result{}, err
	}
	l := &sd.Latent{Samples: s}
	if err := checkLatent(l); err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: LoadLatent: %q: %w", n.Latent, err)
	}
	return nodes.One(l, nil)
}

// Interface guards.
var (
	_ nodes.Typed = (*SaveLatent)(nil)
	_ nodes.Typed = (*LoadLatent)(nil)
)

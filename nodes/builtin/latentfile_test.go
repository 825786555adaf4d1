package builtin

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// What ComfyUI 0.3.64's SaveLatent wrote, and its LoadLatent read, in the refpeer chroot
// (the script that ran them is kept outside the repository): the UI result of two saves
// with prefix "latents/x", the metadata of the first (prompt
// {"1": {"class_type": "A", "inputs": {"v": 1.5}}}, extra_pnginfo
// {"workflow": {"a": [1, "é"]}}), its tensors, and the values LoadLatent returns for a
// file without the version marker holding refLat(1, 4, 1, 2, 0).
var (
	refSaveUI   = []string{"x_00001_.latent", "x_00002_.latent"}
	refSaveMeta = map[string]string{
		"prompt":   "{\"1\": {\"class_type\": \"A\", \"inputs\": {\"v\": 1.5}}}",
		"workflow": "{\"a\": [1, \"\\u00e9\"]}",
	}
	refLoadLegacy = []float32{-17.15618896484375, -4.460609436035156, 8.234971046447754, -13.72495174407959, -1.0293713808059692, 11.66620922088623, -10.293713569641113, 2.4018664360046387}
)

func TestSaveLatentMatchesComfyUI(t *testing.T) {
	opts, d := loadOpts(t)
	opts.Runtime = testRuntime(t)
	var prompt graph.Prompt
	dec := json.NewDecoder(strings.NewReader(`{"1": {"class_type": "A", "inputs": {"v": 1.5}}}`))
	dec.UseNumber()
	if err := dec.Decode(&prompt); err != nil {
		t.Fatal(err)
	}
	env := &nodes.Env{Prompt: prompt, ExtraPNGInfo: map[string]any{"workflow": map[string]any{"a": []any{json.Number("1"), "é"}}}}
	l := refLat(t, 1, 4, 1, 2, 0)
	want, _ := latentValues(t, l)
	for i, file := range refSaveUI {
		e := env
		if i == 1 {
			e = &nodes.Env{}
		}
		res, err := run(t, opts, e, "SaveLatent", nodes.Inputs{"samples": l, "filename_prefix": "latents/x"})
		if err != nil {
			t.Fatal(err)
		}
		ui, _ := json.Marshal(res.UI)
		wantUI, _ := json.Marshal(map[string]any{"latents": []any{map[string]any{"filename": file, "subfolder": "latents", "type": "output"}}})
		if string(ui) != string(wantUI) {
			t.Fatalf("save %d: UI %s, ComfyUI %s", i, ui, wantUI)
		}
	}
	f, err := safetensors.Open(filepath.Join(d.Output, "latents", refSaveUI[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if meta := f.Metadata(); len(meta) != len(refSaveMeta) || meta["prompt"] != refSaveMeta["prompt"] || meta["workflow"] != refSaveMeta["workflow"] {
		t.Errorf("metadata %q, ComfyUI %q", meta, refSaveMeta)
	}
	tens, err := f.Tensor(latentTensorKey)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := tens.Float32()
	if tens.DType != weights.F32 || !slices.Equal(tens.Shape, []int64{1, 4, 1, 2}) || !slices.Equal(got, want) {
		t.Errorf("latent_tensor %s %v %v", tens.DType, tens.Shape, got)
	}
	if info, ok := f.Info(latentVersionKey); !ok || info.DType != weights.F32 || !slices.Equal(info.Shape, []int64{0}) {
		t.Errorf("latent_format_version_0 %+v %v", info, ok)
	}
	// The second file was saved without a prompt: ComfyUI stores prompt "".
	g, err := safetensors.Open(filepath.Join(d.Output, "latents", refSaveUI[1]))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if meta := g.Metadata(); len(meta) != 1 || meta["prompt"] != "" {
		t.Errorf("metadata without a prompt %q", meta)
	}
	// --disable-metadata writes none.
	res, err := run(t, opts, &nodes.Env{Prompt: prompt, DisableMetadata: true}, "SaveLatent", nodes.Inputs{"samples": l, "filename_prefix": "plain"})
	if err != nil {
		t.Fatal(err)
	}
	name := res.UI["latents"].([]any)[0].(map[string]any)["filename"].(string)
	h, err := safetensors.Open(filepath.Join(d.Output, name))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if len(h.Metadata()) != 0 {
		t.Errorf("metadata with metadata disabled: %q", h.Metadata())
	}
	// Round trip through LoadLatent, from the output folder by annotation.
	v, shape := latentValues(t, out0WithOpts(t, opts, "LoadLatent", nodes.Inputs{"latent": "latents/" + refSaveUI[0] + " [output]"}))
	if !slices.Equal(shape, []int{1, 4, 1, 2}) || !slices.Equal(v, want) {
		t.Fatalf("round trip %v %v, want %v", shape, v, want)
	}
	if _, err := run(t, opts, nil, "SaveLatent", nodes.Inputs{"samples": l, "filename_prefix": "../escape"}); err == nil {
		t.Fatal("a prefix climbing out of the output folder was accepted")
	}
}

func out0WithOpts(t *testing.T, opts Options, class string, in nodes.Inputs) any {
	t.Helper()
	res, err := run(t, opts, nil, class, in)
	if err != nil {
		t.Fatal(err)
	}
	return res.Outputs[0]
}

// writeLatentFile writes a safetensors file with the given tensors (F32) to path.
func writeLatentFile(t *testing.T, path string, tensors map[string][]int64) {
	t.Helper()
	var es []safetensors.Entry
	for name, shape := range tensors {
		n, _ := weights.ShapeElements(shape, 1<<20)
		raw := make([]byte, 4*n)
		for i := int64(0); i < n; i++ {
			v := float32((i*37)%101-50) / 16
			bits := math.Float32bits(v)
			raw[4*i], raw[4*i+1], raw[4*i+2], raw[4*i+3] = byte(bits), byte(bits>>8), byte(bits>>16), byte(bits>>24)
		}
		es = append(es, safetensors.Entry{Name: name, DType: weights.F32, Shape: shape, Data: raw})
	}
	safetensors.SortEntries(es)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := safetensors.Write(f, es, nil); err != nil {
		t.Fatal(err)
	}
}

func TestLoadLatent(t *testing.T) {
	opts, d := loadOpts(t)
	opts.Runtime = testRuntime(t)
	writeLatentFile(t, filepath.Join(d.Input, "legacy.latent"), map[string][]int64{"latent_tensor": {1, 4, 1, 2}})
	writeLatentFile(t, filepath.Join(d.Input, "v0.latent"), map[string][]int64{"latent_tensor": {1, 4, 1, 2}, "latent_format_version_0": {0}})
	writeLatentFile(t, filepath.Join(d.Input, "video.latent"), map[string][]int64{"latent_tensor": {1, 4, 2, 1, 2}, "latent_format_version_0": {0}})
	writeLatentFile(t, filepath.Join(d.Input, "nolatent.latent"), map[string][]int64{"other": {1}})
	writeInput(t, d.Input, "garbage.latent", []byte("not a safetensors file"))
	writeInput(t, d.Input, "sub/deep.latent", []byte("x"))
	writeInput(t, d.Input, "image.png", []byte("x"))
	if err := os.Mkdir(filepath.Join(d.Input, "dir.latent"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeInput(t, filepath.Dir(d.Input), "secret.latent", []byte("x"))

	// The combo lists the top level's .latent files, as os.listdir + isfile does.
	r := newTestRegistry(t, opts)
	n, _ := r.Lookup("LoadLatent")
	in, _ := n.Schema().Input("latent")
	if got := in.Choices(); !slices.Equal(got, []string{"garbage.latent", "legacy.latent", "nolatent.latent", "v0.latent", "video.latent"}) {
		t.Errorf("choices %v", got)
	}

	v, _ := latentValues(t, out0WithOpts(t, opts, "LoadLatent", nodes.Inputs{"latent": "legacy.latent"}))
	if !slices.Equal(v, refLoadLegacy) {
		t.Errorf("legacy file: %v, ComfyUI %v", v, refLoadLegacy)
	}
	v, _ = latentValues(t, out0WithOpts(t, opts, "LoadLatent", nodes.Inputs{"latent": "v0.latent"}))
	want, _ := latentValues(t, refLat(t, 1, 4, 1, 2, 0))
	if !slices.Equal(v, want) {
		t.Errorf("version-0 file: %v, want %v", v, want)
	}

	v0 := n.(nodes.InputValidator)
	for _, tc := range []struct{ name, err string }{
		{"video.latent", "not an (N, C, H, W)"},
		{"nolatent.latent", "has no latent_tensor"},
		{"garbage.latent", "safetensors"},
	} {
		if _, err := run(t, opts, nil, "LoadLatent", nodes.Inputs{"latent": tc.name}); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.err)
		}
	}
	for _, name := range []string{"../secret.latent", filepath.Join(filepath.Dir(d.Input), "secret.latent"), "sub/../../secret.latent",
		"missing.latent", "dir.latent", "..\\secret.latent", "a\x00.latent", "../secret.latent [input]"} {
		err := v0.ValidateInputs(&nodes.Env{}, nodes.Inputs{"latent": name})
		var inv *InvalidLatentError
		if !errors.As(err, &inv) || err.Error() != "Invalid latent file: "+name {
			t.Errorf("ValidateInputs(%q) = %v, want ComfyUI's invalid latent error", name, err)
		}
		if _, err := run(t, opts, nil, "LoadLatent", nodes.Inputs{"latent": name}); err == nil {
			t.Errorf("Run(%q) read the file", name)
		}
	}
	// IS_CHANGED is the file's hash: it changes with the content.
	ic := n.(nodes.IsChanger)
	h1, err := ic.IsChanged(&nodes.Env{}, nodes.Inputs{"latent": "v0.latent"})
	if err != nil {
		t.Fatal(err)
	}
	writeLatentFile(t, filepath.Join(d.Input, "v0.latent"), map[string][]int64{"latent_tensor": {1, 4, 1, 3}, "latent_format_version_0": {0}})
	if h2, _ := ic.IsChanged(&nodes.Env{}, nodes.Inputs{"latent": "v0.latent"}); h2 == h1 || len(h1) != 64 {
		t.Errorf("IsChanged %q then %q", h1, h2)
	}
}

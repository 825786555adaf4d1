package flux

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// writeMaskModel makes the attention-mask reference model: tools/refpeer/flux_mask_ref.py
// runs ComfyUI's Flux on it and writes testdata/mask_ref.safetensors.
var writeMaskModel = flag.String("flux.maskmodel", "", "write the attention-mask reference model to this folder")

// maskModelSpec is the model the fixture was made with: tiny, dev (guidance), F32.
func maskModelSpec() RandomSpec {
	s := TinyRandomSpec(true)
	s.Seed = 21
	return s
}

func TestWriteMaskModel(t *testing.T) {
	if *writeMaskModel == "" {
		t.Skip("set -flux.maskmodel DIR to write the attention-mask reference model")
	}
	writeModel(t, *writeMaskModel, "flux_mask.safetensors", func(w *bufio.Writer) error {
		return WriteRandomSafetensors(w, maskModelSpec(), gpu.F32)
	})
}

// TestAttentionMask runs the fixture's inputs with their attention masks (additive,
// over text then image tokens, one per item or shared by the batch) through the model
// ComfyUI ran and compares with ComfyUI's Flux.forward(attention_mask=…); a zero mask
// changes nothing, and masks of the wrong shape are refused.
func TestAttentionMask(t *testing.T) {
	rt := newRuntime(t)
	path := writeModel(t, t.TempDir(), "flux_mask.safetensors", func(w *bufio.Writer) error {
		return WriteRandomSafetensors(w, maskModelSpec(), gpu.F32)
	})
	m, err := LoadFile(rt, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	f, err := tensorfile.Open(filepath.Join("testdata", "mask_ref.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != f.Metadata()["sha256"] {
		t.Fatalf("the model's sha256 %x is not the one the fixture was made from (%s)", sum, f.Metadata()["sha256"])
	}
	var runs []string
	if err := json.Unmarshal([]byte(f.Metadata()["runs"]), &runs); err != nil || len(runs) == 0 {
		t.Fatalf("fixture runs %q: %v", f.Metadata()["runs"], err)
	}
	tensor := func(name string) *gpu.Tensor {
		tn, err := f.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		v, err := tn.Float32()
		if err != nil {
			t.Fatal(err)
		}
		shape := make([]int, len(tn.Shape))
		for i, d := range tn.Shape {
			shape[i] = int(d)
		}
		x, err := rt.FromFloat32(v, shape...)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	for _, r := range runs {
		in := Inputs{X: tensor(r + ".x"), Timesteps: tensor(r + ".t"), Context: tensor(r + ".context"), Y: tensor(r + ".y"),
			Guidance: tensor(r + ".guidance"), AttentionMask: tensor(r + ".mask")}
		got := forward(t, rt, m, in)
		want := values(t, tensor(r+".out"))
		if e := relErr(got, want); !(e < 1e-5) {
			t.Errorf("%s: relative error %.3g to ComfyUI", r, e)
		} else {
			t.Logf("%s: relative error %.3g to ComfyUI", r, e)
		}
		in.AttentionMask = nil
		if e := relErr(forward(t, rt, m, in), want); e < 1e-3 {
			t.Errorf("%s: the mask changes the output by %.3g only", r, e)
		}
	}

	in := tinyInputs(t, rt, 2, 4, 6) // 5 text + 6 image tokens
	plain := forward(t, rt, m, in)
	zero, err := rt.FromFloat32(make([]float32, 11*11), 1, 11, 11)
	if err != nil {
		t.Fatal(err)
	}
	in.AttentionMask = zero
	if e := relErr(forward(t, rt, m, in), plain); !(e < 1e-6) { // the masked kernel sums in another order
		t.Errorf("a zero mask changes the output by %.3g", e)
	}
	for _, shape := range [][]int{{1, 10, 10}, {3, 11, 11}, {11, 11}, {1, 11, 12}} {
		n := 1
		for _, d := range shape {
			n *= d
		}
		bad, err := rt.FromFloat32(make([]float32, n), shape...)
		if err != nil {
			t.Fatal(err)
		}
		in.AttentionMask = bad
		if _, err := m.Forward(t.Context(), rt, in); err == nil || !strings.Contains(err.Error(), "attention mask") {
			t.Errorf("mask %v: err = %v", shape, err)
		}
	}
}

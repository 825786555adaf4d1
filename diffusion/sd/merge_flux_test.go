package sd

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/flux"
	"github.com/forgeflow/forgeflow/diffusion/lora"
	"github.com/forgeflow/forgeflow/gpu"
)

// TestMergeFluxAndSave merges two tiny Flux transformers (F32: the arithmetic is exact
// float32), checks every parameter (the QK-norm scales, tensor fields, included), saves
// the merge as ModelSave does and loads it back through UNETLoader's loader.
func TestMergeFluxAndSave(t *testing.T) {
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	load := func(seed uint64) *Model {
		s := TinyFluxRandomSpec(true).Model
		s.Seed = seed
		path := writeTestFile(t, dir, filepath.Base(t.Name())+string(rune('a'+seed))+".safetensors", func(w *bufio.Writer) error {
			return flux.WriteRandomSafetensors(w, s, gpu.F32)
		})
		ck, err := LoadDiffusionModel(rt, path, DiffusionModelOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ck.Close() })
		return ck.Model
	}
	a, b := load(1), load(2)
	values := func(m *Model) map[string][]float32 {
		n := m.fluxNet(lora.Auto)
		ts, err := n.Tensors()
		if err != nil {
			t.Fatal(err)
		}
		read, err := n.Reader(rt)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string][]float32{}
		for k := range ts {
			v, _, _, err := read(k)
			if err != nil {
				t.Fatal(err)
			}
			out[k] = v
		}
		return out
	}
	m, skipped, err := MergeModels(context.Background(), a, b, func(string) (float64, float64, bool) { return 0.25, 0.75, true })
	if err != nil || len(skipped) != 0 {
		t.Fatal(err, skipped)
	}
	wa, wb, got := values(a), values(b), values(m)
	if _, ok := got["diffusion_model.double_blocks.0.img_attn.norm.query_norm.scale"]; !ok {
		t.Fatal("the QK-norm scales are not among the merged parameters")
	}
	for k, x := range wa {
		for i := range x {
			if want := float32(0.25)*x[i] + float32(0.75)*wb[k][i]; got[k][i] != want {
				t.Fatalf("%s[%d] = %v, want %v", k, i, got[k][i], want)
			}
		}
	}
	var buf bytes.Buffer
	if err := SaveCheckpoint(&buf, m, nil, nil, "flux merge", nil); err != nil {
		t.Fatal(err)
	}
	saved := filepath.Join(dir, "merged.safetensors")
	if err := os.WriteFile(saved, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	ck, err := LoadDiffusionModel(rt, saved, DiffusionModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	back := values(ck.Model)
	for k, x := range got {
		for i := range x {
			if back[k][i] != x[i] {
				t.Fatalf("saved %s[%d] = %v, merged %v", k, i, back[k][i], x[i])
			}
		}
	}
}

package sd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/lora"
	"github.com/forgeflow/forgeflow/diffusion/lora/loratest"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/detect"
	"github.com/forgeflow/forgeflow/weights/safetensors"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// tinyCheckpoint writes a tiny random SD1.5 checkpoint (F16) with seed and loads it.
func tinyCheckpoint(t *testing.T, rt *gpu.Runtime, dir string, seed uint64) (*sd.Checkpoint, string) {
	t.Helper()
	return tinyFamily(t, rt, dir, detect.FamilySD1, seed)
}

// tinyFamily writes a tiny random checkpoint of family (F16) with seed and loads it.
func tinyFamily(t *testing.T, rt *gpu.Runtime, dir string, family detect.Family, seed uint64) (*sd.Checkpoint, string) {
	t.Helper()
	spec := sd.TinyRandomSpec(family)
	spec.Seed = seed
	path := filepath.Join(dir, fmt.Sprintf("tiny_%s_%d.safetensors", family, seed))
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.WriteRandomCheckpoint(f, spec); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	ck, err := sd.LoadCheckpoint(rt, path, sd.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	return ck, path
}

// unetValues reads every UNet parameter of m (its LoRA network's, merged).
func unetValues(t *testing.T, rt *gpu.Runtime, m *sd.Model) map[string][]float32 {
	t.Helper()
	n := m.LoRANetwork()
	if n == nil {
		n = lora.NewNetwork(m.UNet, lora.UNetPrefix, lora.Auto)
	}
	return netValues(t, rt, n)
}

func netValues[T any](t *testing.T, rt *gpu.Runtime, n *lora.Network[T]) map[string][]float32 {
	t.Helper()
	eff, err := n.Effective(rt)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := eff.Params()
	if err != nil {
		t.Fatal(err)
	}
	read, err := eff.Reader(rt)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]float32{}
	for _, p := range ps {
		v, _, ok, err := read(p.Key)
		if err != nil || !ok {
			t.Fatalf("%s: %v %v", p.Key, ok, err)
		}
		out[p.Key] = v
	}
	return out
}

func clipValues(t *testing.T, rt *gpu.Runtime, c *sd.CLIP) map[string][]float32 {
	t.Helper()
	return encoderValues(t, rt, c, 0)
}

// encoderValues reads every parameter of text encoder i of c.
func encoderValues(t *testing.T, rt *gpu.Runtime, c *sd.CLIP, i int) map[string][]float32 {
	t.Helper()
	te := c.Encoders[i]
	n := te.LoRANetwork()
	if n == nil {
		n = lora.NewNetwork(te.Encoder.Model, lora.CLIPPrefix(te.Name), lora.Auto)
	}
	return netValues(t, rt, n)
}

// f16 rounds float32 values to binary16 and back, as a merged F16 weight is stored.
func f16(t *testing.T, rt *gpu.Runtime, v []float32) []float32 {
	t.Helper()
	buf := make([]byte, 2*len(v))
	if err := gpu.EncodeFloat32(gpu.F16, buf, v); err != nil {
		t.Fatal(err)
	}
	x, err := rt.FromBytes(gpu.F16, buf, len(v))
	if err != nil {
		t.Fatal(err)
	}
	out, err := x.Float32()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMergeModelsAndSave merges two tiny SD1.5 checkpoints (ModelMergeSimple at ratio 0.7:
// 0.7·W₁ + 0.3·W₂, CLIPMergeSubtract's 2·(W₁ − W₂)), checks every parameter, saves the
// result as a checkpoint and loads it back: the same values, the same tensor names as
// the source file.
func TestMergeModelsAndSave(t *testing.T) {
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c1, path1 := tinyCheckpoint(t, rt, dir, 1)
	c2, _ := tinyCheckpoint(t, rt, dir, 2)
	w1, w2 := unetValues(t, rt, c1.Model), unetValues(t, rt, c2.Model)

	m, skipped, err := sd.MergeModels(context.Background(), c1.Model, c2.Model, func(string) (float64, float64, bool) { return 0.7, 0.3, true })
	if err != nil || len(skipped) != 0 {
		t.Fatal(err, skipped)
	}
	got := unetValues(t, rt, m)
	if len(got) != len(w1) || len(got) == 0 {
		t.Fatalf("%d merged parameters, the model has %d", len(got), len(w1))
	}
	ts, err := lora.NewNetwork(c1.Model.UNet, lora.UNetPrefix, lora.Auto).Tensors()
	if err != nil {
		t.Fatal(err)
	}
	for k, a := range w1 {
		want := make([]float32, len(a))
		for i := range a {
			want[i] = float32(0.7)*a[i] + float32(0.3)*w2[k][i]
		}
		if ts[k].DType() == gpu.F16 {
			want = f16(t, rt, want)
		}
		for i := range want {
			if got[k][i] != want[i] {
				t.Fatalf("%s[%d] = %v, want %v", k, i, got[k][i], want[i])
			}
		}
	}
	if after := unetValues(t, rt, c1.Model); !equalValues(after, w1) {
		t.Fatal("model1 changed")
	}

	l1, l2 := clipValues(t, rt, c1.CLIP), clipValues(t, rt, c2.CLIP)
	c, _, err := sd.MergeCLIPs(context.Background(), c1.CLIP, c2.CLIP, func(string) (float64, float64, bool) { return 2, -2, true })
	if err != nil {
		t.Fatal(err)
	}
	gc := clipValues(t, rt, c)
	for k, a := range l1 {
		for i := range a {
			want := float32(2) * a[i]
			want += float32(-2) * l2[k][i]
			if d := math.Abs(float64(gc[k][i] - want)); d > 1e-3*math.Max(1, math.Abs(float64(want))) {
				t.Fatalf("%s[%d] = %v, want %v", k, i, gc[k][i], want)
			}
		}
	}

	var buf bytes.Buffer
	if err := sd.SaveCheckpoint(&buf, m, c, c1.VAE, "merged", nil); err != nil {
		t.Fatal(err)
	}
	saved := filepath.Join(dir, "merged.safetensors")
	if err := os.WriteFile(saved, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	back, err := sd.LoadCheckpoint(rt, saved, sd.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if !equalValues(unetValues(t, rt, back.Model), roundF16(t, rt, got)) {
		t.Fatal("the saved UNet differs from the merged one")
	}
	// The file stores F16: merged F32 biases are saved rounded.
	if !equalValues(clipValues(t, rt, back.CLIP), roundF16(t, rt, gc)) {
		t.Fatal("the saved CLIP differs from the merged one")
	}
	sameNames(t, path1, saved)
}

// roundF16 rounds every parameter's values to binary16.
func roundF16(t *testing.T, rt *gpu.Runtime, m map[string][]float32) map[string][]float32 {
	out := map[string][]float32{}
	for k, v := range m {
		out[k] = f16(t, rt, v)
	}
	return out
}

func equalValues(a, b map[string][]float32) bool {
	if len(a) != len(b) {
		return false
	}
	for k, x := range a {
		y := b[k]
		if len(x) != len(y) {
			return false
		}
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
	}
	return true
}

// sameNames checks that two checkpoints hold the same tensor names, dtypes and shapes.
func sameNames(t *testing.T, a, b string) {
	t.Helper()
	fa, err := safetensors.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := safetensors.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	ta, tb := fa.Tensors(), fb.Tensors()
	if len(ta) != len(tb) {
		t.Fatalf("%d tensors saved, the source has %d", len(tb), len(ta))
	}
	for i := range ta {
		if ta[i].Name != tb[i].Name || ta[i].DType != tb[i].DType || !equalShape(ta[i].Shape, tb[i].Shape) {
			t.Fatalf("tensor %d: saved %s %s %v, source %s %s %v", i, tb[i].Name, tb[i].DType, tb[i].Shape, ta[i].Name, ta[i].DType, ta[i].Shape)
		}
	}
}

func equalShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestSaveLoRAPatched saves a model and CLIP with a LoRA applied at run time: the
// checkpoint holds the merged weights (what merge mode computes), under the source's
// names.
func TestSaveLoRAPatched(t *testing.T) {
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ck, path := tinyCheckpoint(t, rt, dir, 3)
	f := loratest.New(5)
	f.LoRA("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", loratest.Kohya, 32, 4, 2, 32)
	tw := ck.CLIP.Encoders[0].Encoder.Model.Layers[0].MLP.FC1.Weight
	f.LoRA("lora_te_text_model_encoder_layers_0_mlp_fc1", loratest.Kohya, tw.Dim(0), 2, 0, tw.Dim(1))
	data, err := f.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	tf, err := tensorfile.OpenBytes("lora.safetensors", data)
	if err != nil {
		t.Fatal(err)
	}
	lf, err := lora.NewFile(rt, tf)
	if err != nil {
		t.Fatal(err)
	}
	mr, cr, err := sd.LoadLoRA(ck.Model, ck.CLIP, lf, 0.8, 0.6, sd.LoRAOptions{Mode: lora.Runtime})
	if err != nil {
		t.Fatal(err)
	}
	mm, cm, err := sd.LoadLoRA(ck.Model, ck.CLIP, lf, 0.8, 0.6, sd.LoRAOptions{Mode: lora.Merge})
	if err != nil {
		t.Fatal(err)
	}
	if equalValues(unetValues(t, rt, mm), unetValues(t, rt, ck.Model)) {
		t.Fatal("the LoRA changed nothing")
	}
	var buf bytes.Buffer
	if err := sd.SaveCheckpoint(&buf, mr, cr, ck.VAE, "lora", nil); err != nil {
		t.Fatal(err)
	}
	saved := filepath.Join(dir, "lora.safetensors")
	if err := os.WriteFile(saved, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	back, err := sd.LoadCheckpoint(rt, saved, sd.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if !equalValues(unetValues(t, rt, back.Model), roundF16(t, rt, unetValues(t, rt, mm))) {
		t.Fatal("the saved UNet differs from the merge-mode LoRA model")
	}
	if !equalValues(clipValues(t, rt, back.CLIP), roundF16(t, rt, clipValues(t, rt, cm))) {
		t.Fatal("the saved CLIP differs from the merge-mode LoRA CLIP")
	}
	sameNames(t, path, saved)

}

// TestMergeRefusesMixedNetworks: an MMDiT model is refused (not on diffusion/nn yet) and
// does not merge into a UNet.
func TestMergeRefusesMixedNetworks(t *testing.T) {
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ck, _ := tinyCheckpoint(t, rt, t.TempDir(), 4)
	mmdit := &sd.Model{Runtime: rt, Net: sd.MMDiTNetwork{}, Name: "sd3.safetensors"}
	var ue *sd.UnsupportedError
	if _, _, err := sd.MergeModels(context.Background(), mmdit, ck.Model, func(string) (float64, float64, bool) { return 1, 1, true }); !errors.As(err, &ue) || !strings.Contains(err.Error(), "sd3") {
		t.Fatalf("MMDiT merge: %v", err)
	}
	if _, _, err := sd.MergeModels(context.Background(), ck.Model, mmdit, func(string) (float64, float64, bool) { return 1, 1, true }); err == nil {
		t.Fatal("a UNet merged with an MMDiT")
	}
}

// TestSaveMergedOpenCLIP merges the text encoders of two tiny SDXL checkpoints, whose
// CLIP-G is stored in OpenCLIP's layout (q, k and v fused in in_proj_weight), saves the
// merge and loads it back: both encoders hold the merged values, the file keeps the
// source's names, dtypes and shapes.
func TestSaveMergedOpenCLIP(t *testing.T) {
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	a, path := tinyFamily(t, rt, dir, detect.FamilySDXL, 1)
	b, _ := tinyFamily(t, rt, dir, detect.FamilySDXL, 2)
	c, _, err := sd.MergeCLIPs(context.Background(), a.CLIP, b.CLIP, func(string) (float64, float64, bool) { return 0.6, 0.4, true })
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Encoders) != 2 || c.Encoders[1].Name != "g" {
		t.Fatalf("SDXL CLIP with %d encoders", len(c.Encoders))
	}
	var buf bytes.Buffer
	if err := sd.SaveCheckpoint(&buf, a.Model, c, a.VAE, "clip merge", nil); err != nil {
		t.Fatal(err)
	}
	saved := filepath.Join(dir, "merged.safetensors")
	if err := os.WriteFile(saved, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	back, err := sd.LoadCheckpoint(rt, saved, sd.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	for i := range c.Encoders {
		want, base := roundF16(t, rt, encoderValues(t, rt, c, i)), encoderValues(t, rt, a.CLIP, i)
		if equalValues(want, roundF16(t, rt, base)) {
			t.Fatalf("encoder %d: the merge changed nothing", i)
		}
		if got := encoderValues(t, rt, back.CLIP, i); !equalValues(got, want) {
			for k := range want {
				if !equalValues(map[string][]float32{k: got[k]}, map[string][]float32{k: want[k]}) {
					t.Errorf("%s: saved %v…, merged %v…", k, got[k][:3], want[k][:3])
				}
			}
			t.Fatalf("encoder %s: the saved values differ from the merged ones", c.Encoders[i].Name)
		}
	}
	sameNames(t, path, saved)
	// CLIP-G's text projection (stored transposed) is merged and written back too.
	read := func(x *gpu.Tensor) []float32 {
		v, err := x.Float32()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	pm := read(c.Encoders[1].Encoder.Projection)
	pb := read(back.CLIP.Encoders[1].Encoder.Projection)
	pa := read(a.CLIP.Encoders[1].Encoder.Projection)
	p2 := read(b.CLIP.Encoders[1].Encoder.Projection)
	for i := range pm {
		want := float32(0.6)*pa[i] + float32(0.4)*p2[i]
		if math.Abs(float64(pm[i]-want)) > 1e-3 || math.Abs(float64(pb[i]-pm[i])) > 1e-3 {
			t.Fatalf("text projection [%d]: merged %v, saved %v, want %v", i, pm[i], pb[i], want)
		}
	}
}

// TestMergeCancelled: a cancelled context stops a merge with its error.
func TestMergeCancelled(t *testing.T) {
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ck, _ := tinyCheckpoint(t, rt, t.TempDir(), 5)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := sd.MergeModels(ctx, ck.Model, ck.Model, func(string) (float64, float64, bool) { return 0.5, 0.5, true }); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled merge: %v", err)
	}
}

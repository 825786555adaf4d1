package sd

import (
	"bufio"
	"context"
	"io"
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/flux"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// scalarValue reads a one-value tensor.
func scalarValue(t *testing.T, x *gpu.Tensor) float32 {
	t.Helper()
	v, err := x.Float32()
	if err != nil || len(v) != 1 {
		t.Fatalf("scale %v: %v", x.Shape(), err)
	}
	return v[0]
}

// TestScaledFP8WeightDType loads scaled-fp8 Flux and MMDiT files through UNETLoader's
// path with each weight_dtype: as in ComfyUI (scaled_fp8_ops override the weight dtype),
// the linear layers keep the file's float8 type and their scales their float32 values,
// as stored (not rounded through weight_dtype's type), and weight_dtype applies to the
// other tensors alone.
func TestScaledFP8WeightDType(t *testing.T) {
	rt := newRT(t)
	dir := t.TempDir()
	s := TinyFluxRandomSpec(true).Model
	s.Seed = 5
	fluxPath := writeTestFile(t, dir, "flux-scaled.safetensors", func(w *bufio.Writer) error {
		return flux.WriteRandomScaledFP8(w, s, gpu.F8E4M3FN)
	})

	// An SD3.5 file made scaled: the marker, and a scale of 2 on one matrix.
	spec := TinySD3RandomSpec(true)
	spec.Seed, spec.DType = 6, weights.F32
	plain := filepath.Join(dir, "sd35m.safetensors")
	writeSD3(t, plain, spec, SD3PartModel)
	src, err := openFormats(plain, "")
	if err != nil {
		t.Fatal(err)
	}
	var es []safetensors.Entry
	for _, info := range src.Tensors() {
		tn, err := src.Tensor(info.Name)
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, safetensors.Entry{Name: info.Name, DType: info.DType, Shape: info.Shape, Data: tn.Data})
	}
	defer src.Close() // the entries alias its mapping
	es = append(es,
		safetensors.Entry{Name: "scaled_fp8", DType: weights.F8_E4M3, Shape: []int64{0}, Data: []byte{}},
		safetensors.Entry{Name: "joint_blocks.0.x_block.attn.qkv.scale_weight", DType: weights.F32, Shape: []int64{}, Data: f32Bytes([]float32{1.1})})
	safetensors.SortEntries(es)
	mmditPath := writeTestFile(t, dir, "sd35m-scaled.safetensors", func(w *bufio.Writer) error { return safetensors.Write(w, es, nil) })

	var stored []float32 // an MMDiT linear weight as loaded with the default weight_dtype
	for _, wd := range []struct {
		name  string
		other gpu.DType // a tensor outside the linear layers, stored F32 (Flux: BF16, widened)
	}{{"default", gpu.F32}, {"fp8_e5m2", gpu.F8E5M2}, {"fp8_e4m3fn", gpu.F8E4M3FN}} {
		t.Run(wd.name, func(t *testing.T) {
			ck, err := LoadDiffusionModel(rt, fluxPath, DiffusionModelOptions{WeightDType: wd.name})
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			fm := ck.Model.Net.(FluxNetwork).Model
			qkv := fm.DoubleBlocks[0].ImgAttn.QKV
			if qkv.Weight.DType() != gpu.F8E4M3FN || fm.ImgIn.Weight.DType() != gpu.F8E4M3FN || qkv.ScaleWeight == nil || qkv.ScaleWeight.DType() != gpu.F32 {
				t.Errorf("flux: qkv %s (scale %v), img_in %s: want F8_E4M3 and an F32 scale", qkv.Weight.DType(), qkv.ScaleWeight, fm.ImgIn.Weight.DType())
			}

			sm, err := LoadDiffusionModel(rt, mmditPath, DiffusionModelOptions{WeightDType: wd.name})
			if err != nil {
				t.Fatal(err)
			}
			defer sm.Close()
			m := sm.Model.Net.(MMDiTNetwork).Model
			q := m.JointBlocks[0].X.Attn.QKV
			if q.Weight.DType() != gpu.F8E4M3FN || q.ScaleWeight == nil || scalarValue(t, q.ScaleWeight) != 1.1 {
				t.Errorf("mmdit: qkv %s scale %v, want F8_E4M3 with scale 1.1", q.Weight.DType(), q.ScaleWeight)
			}
			fc1 := m.JointBlocks[0].X.MLP.FC1.Weight
			if fc1.DType() != gpu.F8E4M3FN {
				t.Errorf("mmdit: unscaled linear weight %s, want the file's float8 type", fc1.DType())
			}
			v, err := fc1.Float32()
			if err != nil {
				t.Fatal(err)
			}
			if stored == nil {
				stored = v
			} else if !slices.Equal(v, stored) {
				t.Error("mmdit: a linear weight differs from the default weight_dtype's: rounded through weight_dtype's type")
			}
			if d := m.XEmbedder.Proj.Weight.DType(); d != wd.other {
				t.Errorf("mmdit: patch convolution %s, want %s", d, wd.other)
			}
		})
	}
}

// TestLoadSD3ScaledCheckpoint loads an all-in-one SD3.5 checkpoint written as ComfyUI's
// fp8-scaled ones (WriteRandomSD3ScaledFP8): the MMDiT's and T5's linear matrices stay
// float8 with their scales, and the prompt encoding and the MMDiT's prediction equal the
// same checkpoint stored in float32 within the float8 rounding.
func TestLoadSD3ScaledCheckpoint(t *testing.T) {
	rt := ckRuntime(t)
	bpe, tv := sd3Vocabs(t)
	dir := t.TempDir()
	spec := TinySD3RandomSpec(true)
	spec.Seed, spec.DType = 41, weights.F32
	plainPath := filepath.Join(dir, "plain.safetensors")
	writeSD3(t, plainPath, spec, "")
	scaledPath := writeTestFile(t, dir, "sd3.5_large_fp8_scaled.safetensors", func(w *bufio.Writer) error { return WriteRandomSD3ScaledFP8(w, spec) })
	load := func(path string) *Checkpoint {
		ck, err := LoadCheckpoint(rt, path, LoadOptions{Vocab: bpe, T5Vocab: tv})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ck.Close() })
		return ck
	}
	plain, scaled := load(plainPath), load(scaledPath)
	q := scaled.Model.Net.(MMDiTNetwork).Model.JointBlocks[1].Context.Attn.QKV
	tq := scaled.CLIP.T5.Encoder.Model.Blocks[0].FF.Down
	if q.Weight.DType() != gpu.F8E4M3FN || q.ScaleWeight == nil || tq.Weight.DType() != gpu.F8E4M3FN || tq.ScaleWeight == nil {
		t.Fatalf("mmdit qkv %s (scale %v), t5 wo %s (scale %v): want F8_E4M3 with scales", q.Weight.DType(), q.ScaleWeight, tq.Weight.DType(), tq.ScaleWeight)
	}
	relErr := func(what string, got, want *gpu.Tensor, tol float64) {
		t.Helper()
		g, err := got.Float32()
		if err != nil {
			t.Fatal(err)
		}
		w, err := want.Float32()
		if err != nil {
			t.Fatal(err)
		}
		var d, m float64
		for i := range w {
			d = math.Max(d, math.Abs(float64(g[i]-w[i])))
			m = math.Max(m, math.Abs(float64(w[i])))
		}
		if !(d <= tol*m) {
			t.Errorf("%s: max |Δ| %.3g against float32 weights (values up to %.3g)", what, d, m)
		}
		t.Logf("%s: max |Δ| %.3g against float32 weights (values up to %.3g)", what, d, m)
	}
	ctx := context.Background()
	enc := func(ck *Checkpoint) Conditioning {
		c, err := EncodePrompt(ctx, ck.CLIP, "a (photo:1.2) of a cat")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	pc, sc := enc(plain), enc(scaled)
	relErr("prompt", sc[0].Embedding, pc[0].Embedding, 0.1)
	x, _ := rt.FromFloat32(ckRandVals(1, 16*6*6), 1, 16, 6, 6)
	ts, _ := rt.FromFloat32([]float32{700}, 1)
	in := NetInputs{X: x, Timesteps: ts, Context: pc[0].Embedding, Y: pc[0].Pooled}
	run := func(ck *Checkpoint) *gpu.Tensor {
		out, err := ck.Model.network().Forward(ctx, rt, in)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	relErr("prediction", run(scaled), run(plain), 0.1)
}

// TestLoadFluxScaledCheckpoint loads an all-in-one Flux checkpoint written fp8-scaled
// (WriteRandomFluxScaledFP8): the transformer's and T5's matrices stay float8 with their
// scales, and T5's encoding and the transformer's prediction equal the same checkpoint
// stored in float32 within the float8 rounding.
func TestLoadFluxScaledCheckpoint(t *testing.T) {
	rt := newRT(t)
	dir := t.TempDir()
	s := TinyFluxRandomSpec(true)
	s.Seed, s.DType = 17, weights.F32
	load := func(name string, write func(w io.Writer, s RandomFluxSpec) error) *Checkpoint {
		p := writeTestFile(t, dir, name, func(w *bufio.Writer) error { return write(w, s) })
		ck, err := LoadCheckpoint(rt, p, LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ck.Close() })
		return ck
	}
	plain := load("flux.safetensors", WriteRandomFlux)
	scaled := load("flux-fp8-scaled.safetensors", WriteRandomFluxScaledFP8)
	fm := scaled.Model.Net.(FluxNetwork).Model
	q, tw := fm.SingleBlocks[0].Linear1, scaled.CLIP.T5.Encoder.Model.Blocks[0].Attn.Q
	if q.Weight.DType() != gpu.F8E4M3FN || q.ScaleWeight == nil || tw.Weight.DType() != gpu.F8E4M3FN || tw.ScaleWeight == nil {
		t.Fatalf("linear1 %s (scale %v), t5 q %s (scale %v): want F8_E4M3 with scales", q.Weight.DType(), q.ScaleWeight, tw.Weight.DType(), tw.ScaleWeight)
	}
	ctx := context.Background()
	values := func(x *gpu.Tensor, err error) []float32 {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		v, err := x.Float32()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	near := func(what string, got, want []float32, tol float64) {
		t.Helper()
		var d, m float64
		for i := range want {
			d = math.Max(d, math.Abs(float64(got[i]-want[i])))
			m = math.Max(m, math.Abs(float64(want[i])))
		}
		if !(d <= tol*m) {
			t.Errorf("%s: max |Δ| %.3g against float32 weights (values up to %.3g)", what, d, m)
		}
		t.Logf("%s: max |Δ| %.3g against float32 weights (values up to %.3g)", what, d, m)
	}
	ids := [][]int{{5, 17, 300, 2, 1}}
	near("t5", values(scaled.CLIP.T5.Encoder.Model.Encode(ctx, ids, nil)), values(plain.CLIP.T5.Encoder.Model.Encode(ctx, ids, nil)), 0.1)
	in := NetInputs{X: tensorOf(t, rt, randValues(1, 16*4*6), 1, 16, 4, 6), Timesteps: tensorOf(t, rt, []float32{0.5}, 1),
		Context: tensorOf(t, rt, randValues(2, 5*64), 1, 5, 64), Y: tensorOf(t, rt, randValues(3, 32), 1, 32),
		Guidance: tensorOf(t, rt, []float32{3.5}, 1)}
	near("prediction", values(scaled.Model.Net.Forward(ctx, rt, in)), values(plain.Model.Net.Forward(ctx, rt, in)), 0.1)
}

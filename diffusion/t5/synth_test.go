package t5

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/gguf"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// synthSize is the size of a synthetic T5 encoder the tests build.
type synthSize struct {
	DModel, DKV, Heads, DFF, Layers, Vocab, Buckets int
	// PerBlockBias gives every block its own relative bias table (UMT5).
	PerBlockBias bool
}

// synthTensor is one tensor of a synthetic T5: its transformers and llama.cpp names, its
// PyTorch shape and float32 values.
type synthTensor struct {
	HF, GGUF string
	Shape    []int
	Values   []float32
}

// synthT5 draws a T5 encoder of the given size with T5's initialisation scales (as HF's
// _init_weights), norms in [0.5, 1.5), from a fixed seed.
func synthT5(s synthSize, seed uint64) []synthTensor {
	r := rand.New(rand.NewPCG(seed, 17))
	inner := s.Heads * s.DKV
	normal := func(n int, std float64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64() * std)
		}
		return v
	}
	norm := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(0.5 + r.Float64())
		}
		return v
	}
	d := float64(s.DModel)
	out := []synthTensor{{"shared.weight", "token_embd.weight", []int{s.Vocab, s.DModel}, normal(s.Vocab*s.DModel, 1)}}
	for i := 0; i < s.Layers; i++ {
		hf := fmt.Sprintf("encoder.block.%d.", i)
		gg := fmt.Sprintf("enc.blk.%d.", i)
		add := func(h, g string, shape []int, v []float32) {
			out = append(out, synthTensor{hf + h, gg + g, shape, v})
		}
		add("layer.0.layer_norm.weight", "attn_norm.weight", []int{s.DModel}, norm(s.DModel))
		add("layer.0.SelfAttention.q.weight", "attn_q.weight", []int{inner, s.DModel}, normal(inner*s.DModel, 1/math.Sqrt(d*float64(s.DKV))))
		add("layer.0.SelfAttention.k.weight", "attn_k.weight", []int{inner, s.DModel}, normal(inner*s.DModel, 1/math.Sqrt(d)))
		add("layer.0.SelfAttention.v.weight", "attn_v.weight", []int{inner, s.DModel}, normal(inner*s.DModel, 1/math.Sqrt(d)))
		add("layer.0.SelfAttention.o.weight", "attn_o.weight", []int{s.DModel, inner}, normal(inner*s.DModel, 1/math.Sqrt(float64(inner))))
		if i == 0 || s.PerBlockBias {
			add("layer.0.SelfAttention.relative_attention_bias.weight", "attn_rel_b.weight", []int{s.Buckets, s.Heads}, normal(s.Buckets*s.Heads, 1/math.Sqrt(d)))
		}
		add("layer.1.layer_norm.weight", "ffn_norm.weight", []int{s.DModel}, norm(s.DModel))
		add("layer.1.DenseReluDense.wi_0.weight", "ffn_gate.weight", []int{s.DFF, s.DModel}, normal(s.DFF*s.DModel, 1/math.Sqrt(d)))
		add("layer.1.DenseReluDense.wi_1.weight", "ffn_up.weight", []int{s.DFF, s.DModel}, normal(s.DFF*s.DModel, 1/math.Sqrt(d)))
		add("layer.1.DenseReluDense.wo.weight", "ffn_down.weight", []int{s.DModel, s.DFF}, normal(s.DFF*s.DModel, 1/math.Sqrt(float64(s.DFF))))
	}
	out = append(out, synthTensor{"encoder.final_layer_norm.weight", "enc.output_norm.weight", []int{s.DModel}, norm(s.DModel)})
	return out
}

// storedAs encodes v as dtype d and returns the bytes and the values they decode to.
func storedAs(t testing.TB, d gguf.Type, v []float32) ([]byte, []float32) {
	t.Helper()
	rs, err := d.RowSize(int64(len(v)))
	if err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, rs)
	if err := gguf.Quantize(raw, d, v); err != nil {
		t.Fatal(err)
	}
	back := make([]float32, len(v))
	if err := gguf.Dequantize(back, d, raw); err != nil {
		t.Fatal(err)
	}
	return raw, back
}

// writeGGUF writes ts under their llama.cpp names as a t5encoder GGUF: matrices as mat,
// the relative bias as F16 and norms as F32 (as llama-quantize leaves them). It returns
// the tensors with the values the file holds.
func writeGGUF(t testing.TB, path string, ts []synthTensor, mat gguf.Type) []synthTensor {
	t.Helper()
	var wts []gguf.WriteTensor
	var held []synthTensor
	for _, st := range ts {
		typ := mat
		switch {
		case len(st.Shape) == 1:
			typ = gguf.TypeF32
		case strings.HasSuffix(st.GGUF, "attn_rel_b.weight"):
			typ = gguf.TypeF16
		}
		raw, back := storedAs(t, typ, st.Values)
		dims := make([]uint64, len(st.Shape))
		for i, s := range st.Shape {
			dims[len(st.Shape)-1-i] = uint64(s)
		}
		wts = append(wts, gguf.WriteTensor{Name: st.GGUF, Type: typ, Dims: dims, Data: raw})
		held = append(held, synthTensor{st.HF, st.GGUF, st.Shape, back})
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	kvs := []gguf.KV{{Key: "general.architecture", Type: gguf.TypeString, Value: "t5encoder"}}
	if err := gguf.Write(f, kvs, wts); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return held
}

// writeSafetensors writes ts under prefix+transformers name, matrices as d (F32, F16,
// BF16, F8_E4M3 …), vectors as F32; extra entries are appended as given. It returns the
// tensors with the values the file holds.
func writeSafetensors(t testing.TB, path, prefix string, ts []synthTensor, d weights.DType, extra ...safetensors.Entry) []synthTensor {
	t.Helper()
	var es []safetensors.Entry
	var held []synthTensor
	for _, st := range ts {
		dt := d
		if len(st.Shape) == 1 {
			dt = weights.F32
		}
		gd := gpuDType(t, string(dt))
		raw := make([]byte, len(st.Values)*dt.ElemSize())
		if err := gpu.EncodeFloat32(gd, raw, st.Values); err != nil {
			t.Fatal(err)
		}
		back := make([]float32, len(st.Values))
		if err := gpu.DecodeFloat32(gd, back, raw); err != nil {
			t.Fatal(err)
		}
		shape := make([]int64, len(st.Shape))
		for i, s := range st.Shape {
			shape[i] = int64(s)
		}
		es = append(es, safetensors.Entry{Name: prefix + st.HF, DType: dt, Shape: shape, Data: raw})
		held = append(held, synthTensor{st.HF, st.GGUF, st.Shape, back})
	}
	es = append(es, extra...)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := safetensors.Write(f, es, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return held
}

func gpuDType(t testing.TB, name string) gpu.DType {
	t.Helper()
	for d := gpu.F32; d.Valid(); d++ {
		if d.String() == name {
			return d
		}
	}
	t.Fatalf("no gpu dtype %s", name)
	return 0
}

// mapSource serves float32 tensors from memory under their transformers names (the
// reference the file-backed loads are compared with).
type mapSource struct {
	rt   *gpu.Runtime
	keys []string
	m    map[string]synthTensor
}

func newMapSource(rt *gpu.Runtime, ts []synthTensor) *mapSource {
	s := &mapSource{rt: rt, m: map[string]synthTensor{}}
	for _, st := range ts {
		s.m[st.HF] = st
		s.keys = append(s.keys, st.HF)
	}
	return s
}

func (s *mapSource) Keys() []string { return s.keys }

func (s *mapSource) Tensor(key string) (*gpu.Tensor, error) {
	st, ok := s.m[key]
	if !ok {
		return nil, fmt.Errorf("no tensor %s", key)
	}
	return s.rt.FromFloat32(st.Values, st.Shape...)
}

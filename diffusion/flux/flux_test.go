package flux

import (
	"bufio"
	"context"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/rng"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/gguf"
)

func newRuntime(t testing.TB) *gpu.Runtime {
	t.Helper()
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

// writeModel writes a random model file into dir and returns its path.
func writeModel(t testing.TB, dir, name string, write func(*bufio.Writer) error) string {
	t.Helper()
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	bw := bufio.NewWriter(f)
	if err := write(bw); err != nil {
		t.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func randTensor(t testing.TB, rt *gpu.Runtime, seed uint64, shape ...int) *gpu.Tensor {
	t.Helper()
	n := 1
	for _, d := range shape {
		n *= d
	}
	v := make([]float32, n)
	rng.New(seed).Randn(v)
	x, err := rt.FromFloat32(v, shape...)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func scalars(t testing.TB, rt *gpu.Runtime, v ...float32) *gpu.Tensor {
	t.Helper()
	x, err := rt.FromFloat32(v, len(v))
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// tinyInputs are inputs for TinyRandomSpec models: a (b, 16, h, w) latent, 5 text
// tokens.
func tinyInputs(t testing.TB, rt *gpu.Runtime, b, h, w int) Inputs {
	t.Helper()
	ts := make([]float32, b)
	for i := range ts {
		ts[i] = 0.7
	}
	return Inputs{X: randTensor(t, rt, 1, b, 16, h, w), Timesteps: scalars(t, rt, ts...), Context: randTensor(t, rt, 2, b, 5, 64),
		Y: randTensor(t, rt, 3, b, 32), Guidance: scalars(t, rt, 3.5)}
}

func values(t testing.TB, x *gpu.Tensor) []float32 {
	t.Helper()
	v, err := x.Float32()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// relErr is ‖a − b‖ / ‖b‖.
func relErr(a, b []float32) float64 {
	var num, den float64
	for i := range b {
		d := float64(a[i]) - float64(b[i])
		num += d * d
		den += float64(b[i]) * float64(b[i])
	}
	return math.Sqrt(num / den)
}

func forward(t testing.TB, rt *gpu.Runtime, m *Model, in Inputs) []float32 {
	t.Helper()
	out, err := m.Forward(context.Background(), rt, in)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Release()
	if !slices.Equal(out.Shape(), []int{in.X.Dim(0), m.Config.OutChannels, in.X.Dim(2), in.X.Dim(3)}) {
		t.Fatalf("output %v for latent %v", out.Shape(), in.X.Shape())
	}
	return values(t, out)
}

// TestLoadFileFormats loads one random model from every file layout LoadFile takes and
// checks that each gives the float32 model's output within its dtype's precision, with
// the weights kept in their stored dtype.
func TestLoadFileFormats(t *testing.T) {
	rt := newRuntime(t)
	dir := t.TempDir()
	spec := TinyRandomSpec(true)
	spec.Seed = 7
	prefixed := spec
	prefixed.Prefix = "model.diffusion_model."
	st := func(s RandomSpec, d gpu.DType) func(*bufio.Writer) error {
		return func(w *bufio.Writer) error { return WriteRandomSafetensors(w, s, d) }
	}
	gg := func(q gguf.Type) func(*bufio.Writer) error {
		return func(w *bufio.Writer) error { return WriteRandomGGUF(w, spec, q) }
	}
	ref, err := LoadFile(rt, writeModel(t, dir, "f32.safetensors", st(spec, gpu.F32)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	want := forward(t, rt, ref, tinyInputs(t, rt, 1, 8, 8))
	cases := []struct {
		name   string
		write  func(*bufio.Writer) error
		opts   Options
		stored gpu.DType // of double_blocks.0.img_attn.qkv.weight
		tol    float64   // relative error to the float32 model
	}{
		{"checkpoint_prefix.safetensors", st(prefixed, gpu.F32), Options{}, gpu.F32, 0},
		{"bf16.safetensors", st(spec, gpu.BF16), Options{}, gpu.BF16, 0.02},
		{"f16.safetensors", st(spec, gpu.F16), Options{}, gpu.F16, 0.003},
		{"fp8_e4m3fn.safetensors", st(spec, gpu.F8E4M3FN), Options{}, gpu.F8E4M3FN, 0.15},
		{"f32_as_fp8.safetensors", st(spec, gpu.F32), Options{WeightDType: "fp8_e4m3fn"}, gpu.F8E4M3FN, 0.15},
		{"f32_as_e5m2.safetensors", st(spec, gpu.F32), Options{WeightDType: "fp8_e5m2"}, gpu.F8E5M2, 0.3},
		{"q8_0.gguf", gg(gguf.TypeQ8_0), Options{}, gpu.Q8_0, 0.02},
		{"q4_0.gguf", gg(gguf.TypeQ4_0), Options{}, gpu.Q4_0, 0.2},
		{"q5_1.gguf", gg(gguf.TypeQ5_1), Options{}, gpu.Q5_1, 0.1},
		{"iq4_nl.gguf", gg(gguf.TypeIQ4_NL), Options{}, gpu.IQ4_NL, 0.05},
		{"iq4_xs.gguf", gg(gguf.TypeIQ4_XS), Options{}, gpu.IQ4_XS, 0.05},
	}
	outs := map[string][]float32{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := LoadFile(rt, writeModel(t, dir, c.name, c.write), c.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if d := m.DoubleBlocks[0].ImgAttn.QKV.Weight.DType(); d != c.stored {
				t.Errorf("qkv weight is %s, want %s as stored", d, c.stored)
			}
			if !reflect.DeepEqual(m.Config, ref.Config) {
				t.Errorf("config %+v, want %+v", m.Config, ref.Config)
			}
			got := forward(t, rt, m, tinyInputs(t, rt, 1, 8, 8))
			outs[c.name] = got
			if e := relErr(got, want); !(e <= c.tol) {
				t.Errorf("relative error %.4g to the float32 model, want ≤ %g", e, c.tol)
			} else {
				t.Logf("relative error %.4g", e)
			}
		})
	}
	// ComfyUI builds a weight_dtype=fp8 model by storing every parameter in float8:
	// the same numbers as a file written in float8.
	if a, b := outs["fp8_e4m3fn.safetensors"], outs["f32_as_fp8.safetensors"]; !slices.Equal(a, b) {
		t.Errorf("fp8_e4m3fn weight_dtype differs from an fp8 file (relative %.3g)", relErr(a, b))
	}
}

package sd

import (
	"bufio"
	"context"
	"encoding/binary"
	"math"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/flux"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/dtype"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/gguf"
	"github.com/forgeflow/forgeflow/weights/safetensors"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// roundedDecoder is the internal/dtype decoder of a GGUF type in r's arithmetic.
func roundedDecoder(r dtype.Rounding, typ weights.DType) func([]float32, []byte) {
	return map[weights.DType]func([]float32, []byte){
		"Q8_0": r.DecodeQ8_0, "Q4_0": r.DecodeQ4_0, "Q4_1": r.DecodeQ4_1, "Q5_0": r.DecodeQ5_0,
		"Q5_1": r.DecodeQ5_1, "IQ4_NL": r.DecodeIQ4_NL, "IQ4_XS": r.DecodeIQ4_XS,
	}[typ]
}

// dequantizedCopy writes the tensors of the GGUF file at path as an F32 safetensors
// file, each block tensor decoded in r's arithmetic, and returns its path.
func dequantizedCopy(t *testing.T, path string, r dtype.Rounding) string {
	t.Helper()
	f, err := tensorfile.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var es []safetensors.Entry
	for _, info := range f.Tensors() {
		tn, err := f.Tensor(info.Name)
		if err != nil {
			t.Fatal(err)
		}
		var v []float32
		if dec := roundedDecoder(r, info.DType); dec != nil {
			n := 1
			for _, d := range info.Shape {
				n *= int(d)
			}
			v = make([]float32, n)
			dec(v, tn.Data)
		} else if v, err = tn.Float32(); err != nil {
			t.Fatal(err)
		}
		data := make([]byte, 4*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(x))
		}
		es = append(es, safetensors.Entry{Name: info.Name, DType: "F32", Shape: info.Shape, Data: data})
	}
	return writeTestFile(t, t.TempDir(), "dequantized.safetensors", func(w *bufio.Writer) error {
		safetensors.SortEntries(es)
		return safetensors.Write(w, es, nil)
	})
}

// TestGGUFDequantDType loads tiny GGUF Fluxes with UnetLoaderGGUFAdvanced's
// dequant_dtype choices: float16 and bfloat16 mark the block weights (and only them) and
// give the output of the same model with every block decoded in that arithmetic ahead
// of time; default, target and float32 give UnetLoaderGGUF's model; other names fail.
func TestGGUFDequantDType(t *testing.T) {
	rt := newRT(t)
	ctx := context.Background()
	s := TinyFluxRandomSpec(true).Model
	s.Seed = 5
	in := func() flux.Inputs {
		return flux.Inputs{
			X:         tensorOf(t, rt, randValues(21, 16*4*6), 1, 16, 4, 6),
			Timesteps: tensorOf(t, rt, []float32{0.7}, 1),
			Context:   tensorOf(t, rt, randValues(22, 5*64), 1, 5, 64),
			Y:         tensorOf(t, rt, randValues(23, 32), 1, 32),
			Guidance:  tensorOf(t, rt, []float32{3.5}, 1),
		}
	}
	run := func(path string, opts DiffusionModelOptions) ([]float32, gpu.DType) {
		t.Helper()
		ck, err := LoadDiffusionModel(rt, path, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer ck.Close()
		fm := ck.Model.Net.(FluxNetwork).Model
		out, err := fm.Forward(ctx, rt, in())
		if err != nil {
			t.Fatal(err)
		}
		v, err := out.Float32()
		if err != nil {
			t.Fatal(err)
		}
		if b := fm.FinalLayer.AdaLN.Weight.DequantDType(); b != gpu.F32 {
			t.Errorf("the BF16 final layer decodes in %s", b)
		}
		return v, fm.DoubleBlocks[0].ImgAttn.QKV.Weight.DequantDType()
	}
	for _, q := range []gguf.Type{gguf.TypeQ5_1, gguf.TypeIQ4_XS} {
		path := writeTestFile(t, t.TempDir(), "flux.gguf", func(w *bufio.Writer) error { return flux.WriteRandomGGUF(w, s, q) })
		plain, deq := run(path, DiffusionModelOptions{GGUF: true})
		if deq != gpu.F32 {
			t.Fatalf("%s: UnetLoaderGGUF decodes in %s", q, deq)
		}
		for _, name := range []string{"default", "target", "float32"} {
			got, deq := run(path, DiffusionModelOptions{GGUF: true, DequantDType: name})
			if deq != gpu.F32 || relDiff(got, plain) != 0 {
				t.Errorf("%s %s: decodes in %s, output differs by %g", q, name, deq, relDiff(got, plain))
			}
		}
		for _, c := range []struct {
			name string
			r    dtype.Rounding
			d    gpu.DType
		}{{"float16", dtype.RoundF16, gpu.F16}, {"bfloat16", dtype.RoundBF16, gpu.BF16}} {
			got, deq := run(path, DiffusionModelOptions{GGUF: true, DequantDType: c.name})
			want, _ := run(dequantizedCopy(t, path, c.r), DiffusionModelOptions{})
			if deq != c.d {
				t.Errorf("%s %s: block weights decode in %s", q, c.name, deq)
			}
			if e := relDiff(got, want); e > 1e-6 {
				t.Errorf("%s %s: output %g from the model decoded ahead of time", q, c.name, e)
			}
			if relDiff(got, plain) == 0 {
				t.Errorf("%s %s: output equals the float32 decoding's", q, c.name)
			}
		}
	}
	if _, err := LoadDiffusionModel(rt, tinyFluxFile(t, true), DiffusionModelOptions{DequantDType: "float8"}); err == nil {
		t.Error("dequant_dtype float8 was accepted")
	}
}

// relDiff is the largest difference between a and b relative to b's largest magnitude.
func relDiff(a, b []float32) float64 {
	var d, m float64
	for i := range b {
		d = max(d, math.Abs(float64(a[i]-b[i])))
		m = max(m, math.Abs(float64(b[i])))
	}
	return d / m
}

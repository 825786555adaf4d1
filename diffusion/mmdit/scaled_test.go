package mmdit_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/mmdit"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/dtype"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// writeScaled makes the scaled-fp8 reference model: tools/refpeer/scaled_fp8_ref.py
// loads it with ComfyUI's own loader and writes testdata/scaled_fp8_ref.safetensors.
var writeScaled = flag.String("mmdit.scaled", "", "write the scaled-fp8 reference model to this folder")

// linearKey reports whether a key is a linear layer's weight or bias in ComfyUI's SD3
// network (the q/k RMS norms, the patch convolution and the position table are not).
func linearKey(name string) bool {
	return (strings.HasSuffix(name, ".weight") || strings.HasSuffix(name, ".bias")) &&
		!strings.Contains(name, ".ln_q.") && !strings.Contains(name, ".ln_k.") && !strings.HasPrefix(name, "x_embedder.")
}

// scaledFile rewrites a float32 model as an "fp8 scaled" file of float8 e4m3fn: each
// linear layer's matrix divided by its scale (largest magnitude / 448) with the scale as
// scale_weight, except context_embedder's, kept BF16 without one; biases BF16; the
// rest as stored; the scaled_fp8 marker. comfy holds, per key, the float32 value
// ComfyUI's scaled_fp8_ops build from it (float8 rounding, times the scale).
func scaledFile(t testing.TB, data []byte) (scaled []byte, comfy []byte) {
	t.Helper()
	f, err := tensorfile.OpenBytes("m.safetensors", data)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f32 := func(v []float32) []byte {
		b := make([]byte, 4*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
		}
		return b
	}
	var es, cs []safetensors.Entry
	for _, info := range f.Tensors() {
		tn, err := f.Tensor(info.Name)
		if err != nil {
			t.Fatal(err)
		}
		v, err := tn.Float32()
		if err != nil {
			t.Fatal(err)
		}
		name := info.Name
		comfy := append([]float32(nil), v...)
		switch {
		case !linearKey(name):
			es = append(es, safetensors.Entry{Name: name, DType: weights.F32, Shape: info.Shape, Data: f32(v)})
		case len(info.Shape) == 2 && !strings.HasPrefix(name, "context_embedder."):
			var amax float32
			for _, x := range v {
				amax = max(amax, float32(math.Abs(float64(x))))
			}
			s := amax / 448
			q := make([]byte, len(v))
			for i, x := range v {
				q[i] = dtype.F32ToE4M3FN(x / s)
				comfy[i] = dtype.E4M3FNToF32(q[i]) * s
			}
			layer := strings.TrimSuffix(name, "weight")
			es = append(es, safetensors.Entry{Name: name, DType: weights.F8_E4M3, Shape: info.Shape, Data: q},
				safetensors.Entry{Name: layer + "scale_weight", DType: weights.F32, Shape: []int64{}, Data: f32([]float32{s})})
		default: // a bias, or the unscaled matrix: BF16 in the file, float8 in ComfyUI's model
			b := make([]byte, 2*len(v))
			for i, x := range v {
				h := dtype.F32ToBF16(x)
				binary.LittleEndian.PutUint16(b[2*i:], h)
				comfy[i] = dtype.E4M3FNToF32(dtype.F32ToE4M3FN(dtype.BF16ToF32(h)))
			}
			es = append(es, safetensors.Entry{Name: name, DType: weights.BF16, Shape: info.Shape, Data: b})
		}
		cs = append(cs, safetensors.Entry{Name: name, DType: weights.F32, Shape: info.Shape, Data: f32(comfy)})
	}
	es = append(es, safetensors.Entry{Name: "scaled_fp8", DType: weights.F8_E4M3, Shape: []int64{0}, Data: []byte{}})
	write := func(es []safetensors.Entry) []byte {
		var buf bytes.Buffer
		safetensors.SortEntries(es)
		if err := safetensors.Write(&buf, es, nil); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	return write(es), write(cs)
}

// scaledRef is the scaled-fp8 reference model: SD3.5 medium's tiny layout.
func scaledRef(t testing.TB) (scaled, comfy []byte) {
	return scaledFile(t, modelFile(t, refModels["sd35m"]))
}

func TestWriteScaledRefModel(t *testing.T) {
	if *writeScaled == "" {
		t.Skip("set -mmdit.scaled DIR to write the scaled-fp8 reference model")
	}
	scaled, _ := scaledRef(t)
	if err := os.WriteFile(filepath.Join(*writeScaled, "mmdit_scaled.safetensors"), scaled, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestScaledFP8 loads a scaled-fp8 MMDiT: matrices stay float8 with their scale, the
// BF16 matrix and the biases are rounded to float8, the norms and the patch convolution
// are not, and the output equals the float32 model of ComfyUI's parameters; then
// against ComfyUI's own loader and network (testdata/scaled_fp8_ref.safetensors).
func TestScaledFP8(t *testing.T) {
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	scaled, comfy := scaledRef(t)
	f, err := tensorfile.OpenBytes("scaled.safetensors", scaled)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, rep, err := mmdit.Load(rt, statedict.NewFileSource(rt, f), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Unused) != 1 || rep.Unused[0] != "scaled_fp8" {
		t.Errorf("unused keys %v, want the marker", rep.Unused)
	}
	qkv := m.JointBlocks[0].X.Attn.QKV
	if qkv.Weight.DType() != gpu.F8E4M3FN || qkv.ScaleWeight == nil || m.ContextEmbedder.Weight.DType() != gpu.F8E4M3FN ||
		m.ContextEmbedder.ScaleWeight != nil || m.XEmbedder.Proj.Weight.DType() != gpu.F32 {
		t.Errorf("qkv %s scaled %v, context embedder %s scaled %v, patch conv %s", qkv.Weight.DType(), qkv.ScaleWeight != nil,
			m.ContextEmbedder.Weight.DType(), m.ContextEmbedder.ScaleWeight != nil, m.XEmbedder.Proj.Weight.DType())
	}
	ref := loadModel(t, rt, comfy)
	mk := func(seed uint64, shape ...int) *gpu.Tensor {
		n := 1
		for _, d := range shape {
			n *= d
		}
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(math.Sin(float64(seed*7919 + uint64(i)*104729)))
		}
		x, err := rt.FromFloat32(v, shape...)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	in := mmdit.Inputs{X: mk(1, 2, 16, 6, 8), Timesteps: mk(2, 2), Context: mk(3, 2, 4, 64), Y: mk(4, 2, 32)}
	got, want := forwardValues(t, rt, m, in), forwardValues(t, rt, ref, in)
	if e := maxRel(got, want); e > 1e-5 {
		t.Errorf("relative error %.3g to ComfyUI's parameters in float32", e)
	}
	checkScaledRefpeer(t, rt, m, scaled)
}

func forwardValues(t *testing.T, rt *gpu.Runtime, m *mmdit.Model, in mmdit.Inputs) []float32 {
	t.Helper()
	out, err := m.Forward(context.Background(), rt, in)
	if err != nil {
		t.Fatal(err)
	}
	v, err := out.Float32()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// maxRel is the largest |a − b| over b's largest magnitude.
func maxRel(a, b []float32) float64 {
	var d, m float64
	for i := range b {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
		m = math.Max(m, math.Abs(float64(b[i])))
	}
	return d / m
}

// checkScaledRefpeer runs the fixture's inputs through m, the model loaded from the
// scaled file ComfyUI loaded (its sha256 is in the fixture).
func checkScaledRefpeer(t *testing.T, rt *gpu.Runtime, m *mmdit.Model, scaled []byte) {
	f, err := tensorfile.Open(filepath.Join("testdata", "scaled_fp8_ref.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var meta struct {
		Runs   []string
		SHA256 string
	}
	if err := json.Unmarshal([]byte(f.Metadata()["case"]), &meta); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(scaled)
	if got := hex.EncodeToString(sum[:]); got != meta.SHA256 {
		t.Fatalf("scaled model sha256 %s, the fixture was made from %s", got, meta.SHA256)
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
		g, err := rt.FromFloat32(v, shape...)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	if len(meta.Runs) == 0 {
		t.Fatal("the fixture lists no runs")
	}
	for _, r := range meta.Runs {
		got := forwardValues(t, rt, m, mmdit.Inputs{X: tensor(r + ".x"), Timesteps: tensor(r + ".t"), Context: tensor(r + ".context"), Y: tensor(r + ".y")})
		want, _ := tensor(r + ".out").Float32()
		// ComfyUI multiplies the weight (or the input) by the scale, here the product:
		// float32 rounding apart, the same.
		if e := maxRel(got, want); e > 1e-5 {
			t.Errorf("%s: relative error %.3g to ComfyUI", r, e)
		} else {
			t.Logf("%s: relative error %.3g to ComfyUI", r, e)
		}
	}
}

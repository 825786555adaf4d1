package flux

import (
	"bufio"
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

	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/dtype"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// comfyScaledValues writes, as F32 safetensors, the parameters ComfyUI builds from a
// scaled-fp8 Flux file (comfy/ops.py scaled_fp8_ops on load_state_dict): each linear
// layer's weight and bias in the float8 type (wider ones rounded to it), the weight
// times its scale_weight; the norm scales as stored. Loading that file gives the float32
// model ComfyUI computes with.
func comfyScaledValues(t *testing.T, path string, f8 gpu.DType) string {
	t.Helper()
	f, err := tensorfile.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	round := dtype.E4M3FNToF32
	enc := dtype.F32ToE4M3FN
	if f8 == gpu.F8E5M2 {
		round, enc = dtype.E5M2ToF32, dtype.F32ToE5M2
	}
	scalar := func(name string) float32 {
		tn, err := f.Tensor(name)
		if err != nil {
			return 1
		}
		v, err := tn.Float32()
		if err != nil {
			t.Fatal(err)
		}
		return v[0]
	}
	var es []safetensors.Entry
	for _, info := range f.Tensors() {
		name := info.Name
		if name == "scaled_fp8" || strings.HasSuffix(name, ".scale_weight") || strings.HasSuffix(name, ".scale_input") {
			continue
		}
		tn, err := f.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		v, err := tn.Float32()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(name, ".scale") { // a linear layer's weight or bias
			s := float32(1)
			if strings.HasSuffix(name, ".weight") {
				s = scalar(strings.TrimSuffix(name, "weight") + "scale_weight")
			}
			for i, x := range v {
				v[i] = round(enc(x)) * s
			}
		}
		data := make([]byte, 4*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(x))
		}
		es = append(es, safetensors.Entry{Name: name, DType: weights.F32, Shape: info.Shape, Data: data})
	}
	return writeModel(t, t.TempDir(), "comfy-values.safetensors", func(w *bufio.Writer) error {
		safetensors.SortEntries(es)
		return safetensors.Write(w, es, nil)
	})
}

// TestScaledFP8 loads scaled-fp8 Flux files (both float8 types): matrices stay float8
// with their scale, img_in's BF16 weight and every bias are rounded to the float8 type,
// the norms are not, and the output equals the float32 model of ComfyUI's parameters.
func TestScaledFP8(t *testing.T) {
	rt := newRuntime(t)
	s := TinyRandomSpec(true)
	s.Seed = 9
	for _, f8 := range []gpu.DType{gpu.F8E4M3FN, gpu.F8E5M2} {
		t.Run(f8.String(), func(t *testing.T) {
			path := writeModel(t, t.TempDir(), "scaled.safetensors", func(w *bufio.Writer) error { return WriteRandomScaledFP8(w, s, f8) })
			m, err := LoadFile(rt, path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			qkv := m.DoubleBlocks[0].ImgAttn.QKV
			if qkv.Weight.DType() != f8 || qkv.ScaleWeight == nil || m.ImgIn.Weight.DType() != f8 || m.ImgIn.ScaleWeight != nil {
				t.Errorf("qkv %s scaled %v, img_in %s scaled %v", qkv.Weight.DType(), qkv.ScaleWeight != nil, m.ImgIn.Weight.DType(), m.ImgIn.ScaleWeight != nil)
			}
			ref, err := LoadFile(rt, comfyScaledValues(t, path, f8), Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer ref.Close()
			for i, in := range []Inputs{tinyInputs(t, rt, 1, 8, 8), tinyInputs(t, rt, 2, 5, 7)} {
				got, want := forward(t, rt, m, in), forward(t, rt, ref, in)
				if e := relErr(got, want); !(e < 1e-5) {
					t.Errorf("input %d: relative error %.3g to ComfyUI's parameters in float32", i, e)
				}
			}
			var unused []string
			for _, k := range m.Unused {
				if !strings.HasSuffix(k, ".scale_input") {
					unused = append(unused, k)
				}
			}
			if len(unused) != 1 || unused[0] != "scaled_fp8" {
				t.Errorf("unused keys %v, want the marker and the scale_inputs", m.Unused)
			}
		})
	}
}

// TestScaledFP8Errors loads scaled-fp8 files with a marker of another type and a
// scale of several values: both are refused naming the tensor.
func TestScaledFP8Errors(t *testing.T) {
	rt := newRuntime(t)
	path := writeModel(t, t.TempDir(), "scaled.safetensors", func(w *bufio.Writer) error {
		return WriteRandomScaledFP8(w, TinyRandomSpec(false), gpu.F8E4M3FN)
	})
	rewrite := func(name string, change func(e *safetensors.Entry)) string {
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
			e := safetensors.Entry{Name: info.Name, DType: info.DType, Shape: info.Shape, Data: tn.Data}
			change(&e)
			es = append(es, e)
		}
		return writeModel(t, t.TempDir(), name, func(w *bufio.Writer) error {
			safetensors.SortEntries(es)
			return safetensors.Write(w, es, nil)
		})
	}
	for _, c := range []struct {
		name, want string
		change     func(e *safetensors.Entry)
	}{
		{"marker.safetensors", "scaled_fp8 is BF16", func(e *safetensors.Entry) {
			if e.Name == "scaled_fp8" {
				e.DType, e.Shape, e.Data = weights.BF16, []int64{1}, []byte{0, 0}
			}
		}},
		{"scale.safetensors", "single_blocks.0.linear1.scale_weight has shape [2]", func(e *safetensors.Entry) {
			if e.Name == "single_blocks.0.linear1.scale_weight" {
				e.Shape, e.Data = []int64{2}, append(e.Data, e.Data...)
			}
		}},
	} {
		m, err := LoadFile(rt, rewrite(c.name, c.change), Options{})
		if err == nil {
			m.Close()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want one containing %q", c.name, err, c.want)
		}
	}
}

// writeScaledModels makes the scaled-fp8 reference models: tools/refpeer/flux_scaled_ref.py
// loads them with ComfyUI's own loader and writes testdata/scaled_ref.safetensors.
var writeScaledModels = flag.String("flux.scaledmodels", "", "write the scaled-fp8 reference models to this folder")

// scaledRefModel writes the reference model of float8 type f8 into dir.
func scaledRefModel(t testing.TB, dir string, f8 gpu.DType) string {
	s := TinyRandomSpec(true)
	s.Seed = 23
	return writeModel(t, dir, "flux_scaled_"+f8.String()+".safetensors", func(w *bufio.Writer) error {
		return WriteRandomScaledFP8(w, s, f8)
	})
}

func TestWriteScaledModels(t *testing.T) {
	if *writeScaledModels == "" {
		t.Skip("set -flux.scaledmodels DIR to write the scaled-fp8 reference models")
	}
	for _, f8 := range []gpu.DType{gpu.F8E4M3FN, gpu.F8E5M2} {
		scaledRefModel(t, *writeScaledModels, f8)
	}
}

// TestScaledFP8Refpeer runs the fixture's inputs through the scaled-fp8 models ComfyUI
// loaded with its own loader (comfy.sd.load_diffusion_model_state_dict) and compares
// with its outputs.
func TestScaledFP8Refpeer(t *testing.T) {
	rt := newRuntime(t)
	f, err := tensorfile.Open(filepath.Join("testdata", "scaled_ref.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var runs []struct{ Name, Model string }
	var sums map[string]string
	if err := json.Unmarshal([]byte(f.Metadata()["runs"]), &runs); err != nil || len(runs) == 0 {
		t.Fatalf("fixture runs: %v", err)
	}
	if err := json.Unmarshal([]byte(f.Metadata()["sha256"]), &sums); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	models := map[string]*Model{}
	for _, f8 := range []gpu.DType{gpu.F8E4M3FN, gpu.F8E5M2} {
		path := scaledRefModel(t, dir, f8)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != sums[f8.String()] {
			t.Fatalf("%s: model sha256 %x, the fixture was made from %s", f8, sum, sums[f8.String()])
		}
		m, err := LoadFile(rt, path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		models[f8.String()] = m
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
		m := models[r.Model]
		if m == nil {
			t.Fatalf("%s: no model %s", r.Name, r.Model)
		}
		in := Inputs{X: tensor(r.Name + ".x"), Timesteps: tensor(r.Name + ".t"), Context: tensor(r.Name + ".context"),
			Y: tensor(r.Name + ".y"), Guidance: tensor(r.Name + ".guidance")}
		// ComfyUI multiplies the weight by the scale, here the product: float32 rounding
		// apart, the same.
		if e := relErr(forward(t, rt, m, in), values(t, tensor(r.Name+".out"))); !(e < 1e-5) {
			t.Errorf("%s: relative error %.3g to ComfyUI", r.Name, e)
		} else {
			t.Logf("%s: relative error %.3g to ComfyUI", r.Name, e)
		}
	}
}

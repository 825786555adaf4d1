package statedict

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/dtype"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// fileOf returns a FileSource over an in-memory safetensors file holding F16 zeros of
// the given shapes.
func fileOf(t *testing.T, rt *gpu.Runtime, shapes map[string][]int64) *FileSource {
	t.Helper()
	var es []safetensors.Entry
	for name, shape := range shapes {
		n, _ := weights.ShapeElements(shape, 1<<30)
		es = append(es, safetensors.Entry{Name: name, DType: weights.F16, Shape: shape, Data: make([]byte, 2*n)})
	}
	safetensors.SortEntries(es)
	var buf bytes.Buffer
	if err := safetensors.Write(&buf, es, nil); err != nil {
		t.Fatal(err)
	}
	f, err := tensorfile.OpenBytes("test.safetensors", buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return NewFileSource(rt, f)
}

type block struct {
	W *gpu.Tensor `sd:"w"`
	B *gpu.Tensor `sd:"b,optional"`
}

type net struct {
	In     block   `sd:"in"`
	Layers []block `sd:"layers"`
	Width  int
}

func TestBind(t *testing.T) {
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	shapes := map[string][]int64{
		"m.in.w": {4, 4}, "m.in.b": {4},
		"m.layers.0.w": {4, 4}, "m.layers.1.w": {4, 4}, "m.layers.1.b": {4},
		"m.layers.3.w": {4, 4}, // not consecutive: not a layer
		"m.extra":      {1},
		"other.x":      {1},
	}
	src := fileOf(t, rt, shapes)
	var n net
	rep, err := Bind(rt, src, "m.", &n)
	if err != nil {
		t.Fatal(err)
	}
	if len(n.Layers) != 2 {
		t.Fatalf("%d layers, want 2", len(n.Layers))
	}
	if n.Layers[0].B != nil || n.Layers[1].B == nil {
		t.Fatal("optional bias bound wrongly")
	}
	if n.In.W.DType() != gpu.F16 || n.In.B.DType() != gpu.F32 {
		t.Fatalf("matrix kept %s, vector became %s; want F16 and F32", n.In.W.DType(), n.In.B.DType())
	}
	if want := []string{"m.extra", "m.layers.3.w"}; !slices.Equal(rep.Unused, want) {
		t.Fatalf("unused %v, want %v", rep.Unused, want)
	}

	delete(shapes, "m.in.w")
	src = fileOf(t, rt, shapes)
	var n2 net
	_, err = Bind(rt, src, "m.", &n2)
	var me *MissingError
	if !errors.As(err, &me) || !slices.Equal(me.Keys, []string{"m.in.w"}) {
		t.Fatalf("err = %v, want missing m.in.w", err)
	}
	if _, err := Bind(rt, src, "m.", n2); err == nil {
		t.Fatal("non-pointer target accepted")
	}
}

// TestFileSourceAliases serves keys the file stores under other names or computes from
// stored tensors, and reports how each key is made.
func TestFileSourceAliases(t *testing.T) {
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	vals := []float32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11} // in_proj (6, 2): rows 0..5
	data := make([]byte, 2*len(vals))
	dtype.EncodeF16(data, vals)
	var buf bytes.Buffer
	if err := safetensors.Write(&buf, []safetensors.Entry{{Name: "in_proj", DType: weights.F16, Shape: []int64{6, 2}, Data: data}}, nil); err != nil {
		t.Fatal(err)
	}
	f, err := tensorfile.OpenBytes("m.safetensors", buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	src := NewFileSource(rt, f)
	src.Alias("k", Derived{Stored: "in_proj", From: 2, N: 2})
	src.Alias("t", Derived{Stored: "in_proj", Transpose: true})
	src.Alias("conv", Derived{Stored: "in_proj", Shape: []int{6, 2, 1, 1}})
	src.Alias("bad", Derived{Stored: "in_proj", From: 5, N: 2})
	if want := []string{"in_proj", "k", "t", "conv", "bad"}; !slices.Equal(src.Keys(), want) {
		t.Fatalf("keys %v, want %v", src.Keys(), want)
	}
	for _, tc := range []struct {
		key   string
		shape []int
		want  []float32
	}{
		{"in_proj", []int{6, 2}, vals},
		{"k", []int{2, 2}, []float32{4, 5, 6, 7}},
		{"t", []int{2, 6}, []float32{0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11}},
		{"conv", []int{6, 2, 1, 1}, vals},
	} {
		tn, err := src.Tensor(tc.key)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tn.Float32()
		if err != nil || tn.DType() != gpu.F16 || !slices.Equal(tn.Shape(), tc.shape) || !slices.Equal(got, tc.want) {
			t.Errorf("%s: %s%v %v (%v), want F16%v %v", tc.key, tn.DType(), tn.Shape(), got, err, tc.shape, tc.want)
		}
	}
	if _, err := src.Tensor("bad"); err == nil || !strings.Contains(err.Error(), `m.safetensors: tensor "in_proj": [6 2] has no rows 5…7`) {
		t.Errorf("rows past the end: %v", err)
	}
	if _, err := src.Tensor("absent"); err == nil {
		t.Error("absent key served")
	}
	if d, ok := src.Derivation("k"); !ok || d.Stored != "in_proj" || d.N != 2 {
		t.Errorf("derivation of k: %+v %v", d, ok)
	}
	if d, ok := src.Derivation("in_proj"); !ok || d.Stored != "in_proj" || d.N != 0 || d.Transpose || d.Shape != nil {
		t.Errorf("derivation of a stored key: %+v %v", d, ok)
	}
	if _, ok := src.Derivation("absent"); ok || src.Has("k") || !src.Has("in_proj") {
		t.Error("Has/Derivation see keys that are not there")
	}
}

package nn

import (
	"bytes"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// block and net are a small model tree: nested structs, a slice, pointers (one shared),
// a pointer that holds no layer, and an interface.
type block struct {
	Norm  Norm        `sd:"norm"`
	Proj  Linear      `sd:"proj"`
	Skip  Conv        `sd:"skip,optional"`
	Scale *gpu.Tensor `sd:"scale.weight,optional"`
}

// embeds holds tensors and no layer.
type embeds struct {
	Table *gpu.Tensor `sd:"table"`
}

type meta struct{ Name string }

type net struct {
	Module
	In     Conv        `sd:"in"`
	Pos    *gpu.Tensor `sd:"pos"`
	Emb    embeds      `sd:"emb"`
	Blocks []block     `sd:"blocks"`
	Out    *block
	Alias  *block
	Info   *meta
	Any    any
}

func newRuntime(t testing.TB) *gpu.Runtime {
	t.Helper()
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

// source writes random F32 tensors of the given shapes to an in-memory safetensors file.
func source(t testing.TB, rt *gpu.Runtime, shapes map[string][]int64) *statedict.FileSource {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	var es []safetensors.Entry
	for name, shape := range shapes {
		n, _ := weights.ShapeElements(shape, 1<<30)
		vals := make([]float32, n)
		for i := range vals {
			vals[i] = float32(r.NormFloat64())
		}
		data := make([]byte, 4*n)
		if err := gpu.EncodeFloat32(gpu.F32, data, vals); err != nil {
			t.Fatal(err)
		}
		es = append(es, safetensors.Entry{Name: name, DType: weights.F32, Shape: shape, Data: data})
	}
	safetensors.SortEntries(es)
	var buf bytes.Buffer
	if err := safetensors.Write(&buf, es, nil); err != nil {
		t.Fatal(err)
	}
	f, err := tensorfile.OpenBytes("net.safetensors", buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return statedict.NewFileSource(rt, f)
}

func loadNet(t *testing.T, rt *gpu.Runtime) *net {
	t.Helper()
	src := source(t, rt, map[string][]int64{
		"m.in.weight": {4, 3, 3, 3}, "m.in.bias": {4}, "m.pos": {2, 4}, "m.emb.table": {5, 4},
		"m.blocks.1.scale.weight": {4},
		"m.blocks.0.norm.weight":  {4}, "m.blocks.0.norm.bias": {4},
		"m.blocks.0.proj.weight": {4, 4},
		"m.blocks.1.norm.weight": {4}, "m.blocks.1.norm.bias": {4},
		"m.blocks.1.proj.weight": {4, 4}, "m.blocks.1.proj.bias": {4},
		"m.blocks.1.skip.weight": {4, 4, 1, 1}, "m.blocks.1.skip.bias": {4},
		"m.out.norm.weight": {4}, "m.out.norm.bias": {4}, "m.out.proj.weight": {2, 4},
	})
	n := &net{Info: &meta{Name: "tiny"}, Any: &block{}}
	if _, err := statedict.Bind(rt, src, "m.", n); err != nil {
		t.Fatal(err)
	}
	n.Out = &block{}
	if _, err := statedict.Bind(rt, src, "m.out.", n.Out); err != nil {
		t.Fatal(err)
	}
	n.Alias = n.Out
	return n
}

func TestLayersAndPrefixes(t *testing.T) {
	rt := newRuntime(t)
	n := loadNet(t, rt)
	var got []string
	err := Layers(n, func(l Layer) error {
		p, ok := l.Prefix()
		if !ok {
			p = "(unbound)"
		}
		got = append(got, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"m.in.", "m.blocks.0.norm.", "m.blocks.0.proj.", "(unbound)", "m.blocks.1.norm.", "m.blocks.1.proj.",
		"m.blocks.1.skip.", "m.out.norm.", "m.out.proj.", "(unbound)"}
	if !slices.Equal(got, want) {
		t.Fatalf("layers %q\nwant %q", got, want)
	}
	if p, ok := n.Prefix(); !ok || p != "m." {
		t.Fatalf("root prefix %q %v", p, ok)
	}
	if err := Layers(*n, func(Layer) error { return nil }); err == nil {
		t.Fatal("Layers of a struct value accepted")
	}
}

// TestFields checks the keys and addresses of the tensor fields outside layers.
func TestFields(t *testing.T) {
	rt := newRuntime(t)
	n := loadNet(t, rt)
	var keys []string
	err := Fields(n, func(f Field) error {
		keys = append(keys, f.Key)
		if *f.Tensor == nil {
			t.Errorf("%s: nil tensor visited", f.Key)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// n.Out is reached through an untagged field but binds its own prefix; its Scale is
	// nil (no key), so it is skipped.
	want := []string{"m.pos", "m.emb.table", "m.blocks.1.scale.weight"}
	if !slices.Equal(keys, want) {
		t.Fatalf("fields %q\nwant %q", keys, want)
	}
	var got **gpu.Tensor
	_ = Fields(n, func(f Field) error {
		if f.Key == "m.emb.table" {
			got = f.Tensor
		}
		return nil
	})
	if got != &n.Emb.Table {
		t.Fatal("Fields does not give the field's address")
	}
	if err := Fields(*n, func(Field) error { return nil }); err == nil {
		t.Fatal("Fields of a struct value accepted")
	}
	// A struct bound by hand without a prefix has no keys.
	var loose embeds
	loose.Table = n.Pos
	count := 0
	_ = Fields(&loose, func(Field) error { count++; return nil })
	if count != 0 {
		t.Fatal("a field without a bound struct above it was visited")
	}
}

func TestClone(t *testing.T) {
	rt := newRuntime(t)
	n := loadNet(t, rt)
	c, err := Clone(n)
	if err != nil {
		t.Fatal(err)
	}
	if c == n || &c.Blocks[0] == &n.Blocks[0] || c.Out == n.Out {
		t.Fatal("layer containers are shared with the original")
	}
	if c.Out != c.Alias {
		t.Fatal("a pointer shared in the original is not shared in the copy")
	}
	if c.Info != n.Info || c.Any != n.Any {
		t.Fatal("values that hold no layer were copied")
	}
	if c.Blocks[1].Proj.Weight != n.Blocks[1].Proj.Weight || c.Emb.Table != n.Emb.Table || c.Blocks[1].Scale != n.Blocks[1].Scale {
		t.Fatal("tensors were copied")
	}
	if p, _ := c.Blocks[1].Proj.Prefix(); p != "m.blocks.1.proj." {
		t.Fatalf("prefix lost in the copy: %q", p)
	}
	// Changing the copy's layers leaves the original alone.
	w, _ := rt.FromFloat32(make([]float32, 16), 4, 4)
	c.Blocks[1].Proj.Weight = w
	c.Out.Proj.Patches = []Patch{{}}
	c.Blocks[0].Proj.Patches = append(c.Blocks[0].Proj.Patches, Patch{})
	c.Emb.Table, c.Pos, c.Blocks[1].Scale = w, w, w
	if n.Blocks[1].Proj.Weight == w || n.Out.Proj.Patches != nil || n.Blocks[0].Proj.Patches != nil ||
		n.Emb.Table == w || n.Pos == w || n.Blocks[1].Scale == w {
		t.Fatal("the original changed with its copy")
	}
	if _, err := Clone[net](nil); err == nil {
		t.Fatal("Clone(nil) accepted")
	}
}

func randMat(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

func tensor(t testing.TB, rt *gpu.Runtime, v []float32, shape ...int) *gpu.Tensor {
	t.Helper()
	x, err := rt.FromFloat32(v, shape...)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// valuesOf returns a function that reads an op's result, failing t on an error.
func valuesOf(t testing.TB) func(*gpu.Tensor, error) []float32 {
	return func(x *gpu.Tensor, err error) []float32 {
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
}

func near(t *testing.T, name string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", name, len(got), len(want))
	}
	for i := range want {
		if d := math.Abs(float64(got[i] - want[i])); d > tol*(1+math.Abs(float64(want[i]))) {
			t.Fatalf("%s[%d] = %v, want %v", name, i, got[i], want[i])
		}
	}
}

// upDown returns Up·Down for up (out, r) and down (r, in) in float64.
func upDown(up, down []float32, out, r, in int) []float32 {
	d := make([]float32, out*in)
	for o := 0; o < out; o++ {
		for i := 0; i < in; i++ {
			var s float64
			for k := 0; k < r; k++ {
				s += float64(up[o*r+k]) * float64(down[k*in+i])
			}
			d[o*in+i] = float32(s)
		}
	}
	return d
}

func addTo(a, b []float32) []float32 {
	out := make([]float32, len(a))
	for i := range a {
		out[i] = a[i] + b[i]
	}
	return out
}

// TestLinearPatch checks y = x·Wᵀ·s + b + (x·Downᵀ)·Upᵀ against the merged weight.
func TestLinearPatch(t *testing.T) {
	rt := newRuntime(t)
	values := valuesOf(t)
	r := rand.New(rand.NewPCG(3, 4))
	const rows, in, out, rank = 5, 6, 7, 2
	xv, wv, bv := randMat(r, rows*in), randMat(r, out*in), randMat(r, out)
	upv, downv := randMat(r, out*rank), randMat(r, rank*in)
	x := tensor(t, rt, xv, rows, in)
	l := Linear{Weight: tensor(t, rt, wv, out, in), Bias: tensor(t, rt, bv, out),
		Patches: []Patch{{Down: tensor(t, rt, downv, rank, in), Up: tensor(t, rt, upv, out, rank)}}}
	if err := l.Patches[0].CheckLinear(out, in); err != nil {
		t.Fatal(err)
	}
	if err := l.Patches[0].CheckLinear(in, out); err == nil {
		t.Fatal("a patch of the wrong shape fits")
	}
	got := values(l.Forward(rt, x))
	merged := Linear{Weight: tensor(t, rt, addTo(wv, upDown(upv, downv, out, rank, in)), out, in), Bias: l.Bias}
	near(t, "patched linear", got, values(merged.Forward(rt, x)), 1e-5)

	// scaled fp8 style: (x·Wᵀ)·s + b, the patch added after.
	l.ScaleWeight = tensor(t, rt, []float32{0.5}, 1)
	got = values(l.Forward(rt, x))
	half := make([]float32, len(wv))
	for i := range wv {
		half[i] = wv[i] / 2
	}
	merged.Weight = tensor(t, rt, addTo(half, upDown(upv, downv, out, rank, in)), out, in)
	near(t, "scaled linear", got, values(merged.Forward(rt, x)), 1e-5)
	l.ScaleWeight = tensor(t, rt, []float32{1, 2}, 2)
	if _, err := l.Forward(rt, x); err == nil {
		t.Fatal("a two-value scale_weight accepted")
	}
}

// TestConvPatch checks a 3×3 stride-2 conv with asymmetric padding and a low-rank patch
// (Down at the layer's stride and padding, Up 1×1) against the merged weight, and AsConv.
func TestConvPatch(t *testing.T) {
	rt := newRuntime(t)
	values := valuesOf(t)
	r := rand.New(rand.NewPCG(5, 6))
	const n, cin, cout, rank, h, w = 2, 3, 4, 2, 7, 6
	xv, wv, bv := randMat(r, n*cin*h*w), randMat(r, cout*cin*9), randMat(r, cout)
	upv, downv := randMat(r, cout*rank), randMat(r, rank*cin*9)
	x := tensor(t, rt, xv, n, cin, h, w)
	c := Conv{Weight: tensor(t, rt, wv, cout, cin, 3, 3), Bias: tensor(t, rt, bv, cout),
		Patches: []Patch{{Down: tensor(t, rt, downv, rank, cin, 3, 3), Up: tensor(t, rt, upv, cout, rank, 1, 1)}}}
	if err := c.Patches[0].CheckConv(cout, cin, 3, 3); err != nil {
		t.Fatal(err)
	}
	if err := c.Patches[0].CheckConv(cout, cin, 1, 1); err == nil {
		t.Fatal("a patch of the wrong kernel fits")
	}
	p := gpu.ConvParams{Stride: 2, Bottom: 1, Right: 1}
	merged := Conv{Weight: tensor(t, rt, addTo(wv, upDown(upv, downv, cout, rank, cin*9)), cout, cin, 3, 3), Bias: c.Bias}
	near(t, "patched conv", values(c.Forward(rt, x, p)), values(merged.Forward(rt, x, p)), 1e-5)
	near(t, "patched same conv", values(c.Same(rt, x, 1)), values(merged.Same(rt, x, 1)), 1e-5)

	// A 1×1 conv stored as a Linear-typed layer (SD1's proj_in).
	lin := Linear{Weight: tensor(t, rt, wv[:cout*cin], cout, cin, 1, 1), Bias: c.Bias,
		Patches: []Patch{{Down: tensor(t, rt, downv[:rank*cin], rank, cin, 1, 1), Up: c.Patches[0].Up}}}
	conv := lin.AsConv()
	merged1 := Conv{Weight: tensor(t, rt, addTo(wv[:cout*cin], upDown(upv, downv[:rank*cin], cout, rank, cin)), cout, cin, 1, 1), Bias: c.Bias}
	near(t, "1×1 conv", values(conv.Same(rt, x, 1)), values(merged1.Same(rt, x, 1)), 1e-5)
}

package gpu

import (
	"errors"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func newRT(t testing.TB) *Runtime {
	t.Helper()
	rt, err := New(Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

func TestViews(t *testing.T) {
	rt := newRT(t)
	r := rand.New(rand.NewPCG(1, 1))
	x, xv := randTensor(t, rt, r, false, 2, 3, 4)

	rs := ok(t)(Reshape(rt, x, 4, -1))
	if s := rs.Shape(); s[0] != 4 || s[1] != 6 || rs.Buffer() != x.Buffer() {
		t.Fatalf("reshape: shape %v, shared %v", s, rs.Buffer() == x.Buffer())
	}
	checkClose(t, rs, xv, 0, 0)

	p := ok(t)(Permute(x, 2, 0, 1))
	if p.IsContiguous() || p.Dim(0) != 4 || p.Dim(-1) != 3 {
		t.Fatalf("permute: %v", p)
	}
	// reshape of a strided view copies
	pr := ok(t)(Reshape(rt, p, 24))
	if pr.Buffer() == x.Buffer() || !pr.IsContiguous() {
		t.Fatal("reshape of a permuted view must copy")
	}
	pv, _ := pr.Float32()
	if pv[1] != float32(xv[4]) { // p[0,0,1] = x[0,1,0]
		t.Fatalf("permuted order: %v", pv[:3])
	}

	parts := ok2(t)(Chunk(x, 2, 2))
	if len(parts) != 2 || parts[0].Dim(2) != 2 || parts[1].Dim(2) != 2 {
		t.Fatalf("chunk: %v", parts)
	}
	odd := ok2(t)(Chunk(x, 2, 1)) // torch.chunk(3 → 2) gives sizes 2 and 1
	if len(odd) != 2 || odd[0].Dim(1) != 2 || odd[1].Dim(1) != 1 {
		t.Fatalf("chunk of 3 into 2: %v", odd)
	}
	few := ok2(t)(Chunk(ok(t)(Reshape(rt, x, 24, 1)), 5, 1)) // size 1 cannot make 5 pieces
	if len(few) != 1 {
		t.Fatalf("chunk of 1 into 5 gave %d pieces", len(few))
	}
	sp := ok2(t)(Split(x, -1, 1, 3))
	want := make([]float64, 0, 18)
	for i := 0; i < 6; i++ {
		want = append(want, xv[i*4+1:i*4+4]...)
	}
	checkClose(t, sp[1], want, 0, 0)

	errs := []struct {
		name string
		err  error
	}{
		{"reshape count", second(Reshape(rt, x, 5, 5))},
		{"reshape two -1", second(Reshape(rt, x, -1, -1))},
		{"permute dup", second(Permute(x, 0, 0, 1))},
		{"permute rank", second(Permute(x, 0, 1))},
		{"narrow range", second(Narrow(x, 1, 2, 2))},
		{"narrow dim", second(Narrow(x, 3, 0, 1))},
		{"split sum", errOf(Split(x, 0, 1, 2))},
		{"chunk zero", errOf(Chunk(x, 0, 0))},
		{"transpose dim", second(Transpose(x, 0, 5))},
	}
	for _, e := range errs {
		if e.err == nil || !strings.HasPrefix(e.err.Error(), "gpu: ") {
			t.Errorf("%s: error %v", e.name, e.err)
		}
	}
	for _, v := range append(append(parts, odd...), sp...) {
		v.Release()
	}
}

func ok2(t testing.TB) func([]*Tensor, error) []*Tensor {
	return func(x []*Tensor, err error) []*Tensor {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
}

func second(_ *Tensor, err error) error  { return err }
func errOf(_ []*Tensor, err error) error { return err }

// TestOpErrors: bad shapes and dtypes give "gpu: …" errors, never panics.
func TestOpErrors(t *testing.T) {
	rt := newRT(t)
	r := rand.New(rand.NewPCG(2, 2))
	x, _ := randTensor(t, rt, r, false, 2, 3, 4, 5)
	v3, _ := randTensor(t, rt, r, false, 3, 4, 5)
	w16 := ok(t)(rt.FromBytes(F16, make([]byte, 2*6*3*9), 6, 3, 3, 3))
	q := ok(t)(rt.FromBytes(Q8_0, make([]byte, 34*2), 2, 32))
	cases := []struct {
		name string
		err  error
	}{
		{"matmul inner", second(MatMul(rt, v3, v3))},
		{"matmul rank", second(MatMul(rt, ok(t)(rt.Zeros(F32, 3)), v3))},
		{"matmul dtype", second(MatMul(rt, w16, w16))},
		{"linear K", second(Linear(rt, v3, ok(t)(rt.Zeros(F32, 2, 4)), nil))},
		{"linear bias", second(Linear(rt, v3, ok(t)(rt.Zeros(F32, 2, 5)), ok(t)(rt.Zeros(F32, 3))))},
		{"linear q8_0 K", second(Linear(rt, v3, q, nil))},
		{"conv channels", second(Conv2D(rt, x, ok(t)(rt.Zeros(F32, 2, 4, 3, 3)), nil, 1, 1))},
		{"conv f16 channels", second(Conv2D(rt, v3.view([]int{1, 3, 4, 5}, []int{60, 20, 5, 1}, 0), ok(t)(rt.FromBytes(F16, make([]byte, 2*6*2*9), 6, 2, 3, 3)), nil, 1, 1))},
		{"conv stride", second(Conv2D(rt, x, ok(t)(rt.Zeros(F32, 2, 3, 3, 3)), nil, 0, 1))},
		{"conv too small", second(Conv2D(rt, x, ok(t)(rt.Zeros(F32, 2, 3, 7, 7)), nil, 1, 0))},
		{"conv input rank", second(Conv2D(rt, v3, ok(t)(rt.Zeros(F32, 2, 3, 3, 3)), nil, 1, 0))},
		{"group norm groups", second(GroupNorm(rt, x, 2, nil, nil, 1e-5))},
		{"group norm weight", second(GroupNorm(rt, x, 3, ok(t)(rt.Zeros(F32, 4)), nil, 1e-5))},
		{"layer norm weight", second(LayerNorm(rt, x, ok(t)(rt.Zeros(F32, 4)), nil, 1e-5))},
		{"attention shapes", second(Attention(rt, x, v3.view([]int{1, 3, 4, 5}, []int{60, 20, 5, 1}, 0), x, nil, AttentionParams{}))},
		{"attention mask", second(Attention(rt, x, x, x, ok(t)(rt.Zeros(F32, 3, 5)), AttentionParams{}))},
		{"rope odd", second(RoPE(rt, x, x))},
		{"timestep rank", second(TimestepEmbedding(rt, x, TimestepParams{Dim: 4}))},
		{"concat shapes", second(Concat(rt, 0, x, v3))},
		{"concat none", second(Concat(rt, 0))},
		{"upscale size", second(Upscale(rt, x, UpscaleParams{Width: 0, Height: 3, Method: "area", Crop: "disabled"}))},
		{"cast quantized", second(Cast(rt, q, F32))},
		{"from float32 count", second(rt.FromFloat32(make([]float32, 5), 2, 3))},
		{"from bytes count", second(rt.FromBytes(F16, make([]byte, 5), 3))},
		{"from bytes block", second(rt.FromBytes(Q8_0, make([]byte, 34), 1, 32, 1))},
		{"empty negative", second(rt.Empty(F32, 2, -1))},
		{"gelu dtype", second(GELU(rt, w16))},
	}
	for _, c := range cases {
		if c.err == nil || !strings.HasPrefix(c.err.Error(), "gpu: ") {
			t.Errorf("%s: error %v", c.name, c.err)
		}
	}
	if _, err := q.Float32(); err == nil {
		t.Error("Float32 of Q8_0 should be refused")
	}
}

// TestPoolSteadyState: repeating the same step reuses every buffer (no pool misses after
// the first step), which is what keeps a sampling loop from allocating tensor storage.
func TestPoolSteadyState(t *testing.T) {
	rt := newRT(t)
	r := rand.New(rand.NewPCG(3, 3))
	x, _ := randTensor(t, rt, r, false, 1, 8, 12, 12)
	w, _ := randTensor(t, rt, r, false, 8, 8, 3, 3)
	gw, _ := randTensor(t, rt, r, false, 8)
	step := func() {
		h := ok(t)(GroupNorm(rt, x, 4, gw, gw, 1e-5))
		a := ok(t)(SiLU(rt, h))
		h.Release()
		c := ok(t)(Conv2D(rt, a, w, gw, 1, 1))
		a.Release()
		q := ok(t)(Reshape(rt, c, 1, 1, 8, 144))
		qt := ok(t)(Transpose(q, 2, 3))
		o := ok(t)(Attention(rt, qt, qt, qt, nil, AttentionParams{}))
		y := ok(t)(Add(rt, o, qt))
		for _, v := range []*Tensor{c, q, qt, o, y} {
			v.Release()
		}
	}
	step()
	_, miss0, _ := rt.PoolStats()
	for i := 0; i < 3; i++ {
		step()
	}
	allocs := testing.AllocsPerRun(5, step)
	if allocs != 0 {
		t.Errorf("a steady-state step allocates %.0f objects on the Go heap, want 0 (headers, calls, loops and scratch are all reused)", allocs)
	}
	hits, miss, idle := rt.PoolStats()
	if miss != miss0 {
		t.Fatalf("steady state allocated: misses %d → %d (hits %d)", miss0, miss, hits)
	}
	if idle == 0 {
		t.Fatal("released buffers were not kept")
	}
	rt.TrimPool()
	if _, _, idle := rt.PoolStats(); idle != 0 {
		t.Fatalf("trim left %d bytes", idle)
	}
}

// TestExpf: the attention exp is within 2 ulp of the correctly rounded value.
func TestExpf(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	check := func(x float32) {
		got := expf(x)
		want := math.Exp(float64(x))
		w32 := float32(want)
		if math.IsInf(want, 1) || w32 > math.MaxFloat32 {
			if !math.IsInf(float64(got), 1) {
				t.Fatalf("expf(%v) = %v, want +Inf", x, got)
			}
			return
		}
		ulp := float64(math.Nextafter32(w32, float32(math.Inf(1))) - w32)
		if want < 1.2e-38 { // subnormal results: absolute ulp of the subnormal range
			ulp = 1.4e-45
		}
		if d := math.Abs(float64(got) - want); d > 2*ulp {
			t.Fatalf("expf(%v) = %v, want %v (%.1f ulp)", x, got, want, d/ulp)
		}
	}
	for i := 0; i < 200000; i++ {
		check(float32(r.Float64()*190 - 104))
	}
	for _, x := range []float32{0, -0, 1, -1, 88.7, 88.72283, 88.8, -87.3, -87.4, -100, -103.9, -104, -200, float32(math.Inf(-1))} {
		check(x)
	}
	if v := expf(float32(math.NaN())); v == v {
		t.Fatal("expf(NaN) is not NaN")
	}
}

func TestDTypes(t *testing.T) {
	for d := DType(0); d < dtypeCount; d++ {
		if d.String() == "" || d.BlockSize() <= 0 || d.BlockBytes() <= 0 {
			t.Errorf("dtype %d incomplete", d)
		}
		if d.IsFloat() == d.IsQuantized() {
			t.Errorf("%s is both or neither float and quantized", d)
		}
	}
	if n, err := Q4_K.StorageBytes(512); err != nil || n != 288 {
		t.Errorf("Q4_K 512 elements: %d %v", n, err)
	}
	if _, err := Q8_0.StorageBytes(33); err == nil {
		t.Error("33 Q8_0 elements accepted")
	}
	if DType(200).Valid() || DType(200).String() != "DType(200)" {
		t.Error("invalid dtype")
	}
}

// TestUnalignedF32Bytes: F32 storage at an odd address is copied, not misread.
func TestUnalignedF32Bytes(t *testing.T) {
	rt := newRT(t)
	raw := make([]byte, 9)
	_ = EncodeFloat32(F32, raw[1:], []float32{1.5, -2})
	x := ok(t)(rt.FromBytes(F32, raw[1:], 2))
	checkClose(t, ok(t)(Add(rt, x, x)), []float64{3, -4}, 0, 0)
}

func TestHostFloat32(t *testing.T) {
	rt := newRT(t)
	x := ok(t)(rt.FromFloat32([]float32{1, 2, 3, 4, 5, 6}, 2, 3))
	d, isHost := x.HostFloat32()
	if !isHost || len(d) != 6 {
		t.Fatalf("HostFloat32 = %v, %v", d, isHost)
	}
	d[4] = 50
	if v, _ := x.Float32(); v[4] != 50 {
		t.Fatal("write through HostFloat32 not visible")
	}
	if _, isHost := ok(t)(Transpose(x, 0, 1)).HostFloat32(); isHost {
		t.Fatal("strided view must not expose storage")
	}
	n := ok(t)(Narrow(x, 0, 1, 1)) // contiguous row 1 view starts at offset 3
	if d, isHost := n.HostFloat32(); !isHost || len(d) != 3 || d[1] != 50 {
		t.Fatalf("row view: %v %v", d, isHost)
	}
}

// decliningBackend is the cpu backend refusing softmax, to exercise the Runtime's fallback.
type decliningBackend struct{ *CPU }

func (d decliningBackend) Name() string { return "declining" }

func (d decliningBackend) Supports(op Op, dts ...DType) bool {
	return op != OpSoftmax && d.CPU.Supports(op, dts...)
}

func (d decliningBackend) Run(op Op, c *Call) error {
	if op == OpSoftmax {
		return errors.New("declining backend asked to run softmax")
	}
	return d.CPU.Run(op, c)
}

// TestFallback: an op the backend declines runs on the cpu backend, logged once.
func TestFallback(t *testing.T) {
	var logs strings.Builder
	rt, err := New(Options{
		Backend: decliningBackend{NewCPU(CPUOptions{Threads: 2})},
		Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	x := ok(t)(rt.FromFloat32([]float32{0, 0, 1, 1}, 2, 2))
	for i := 0; i < 3; i++ {
		checkClose(t, ok(t)(Softmax(rt, x)), []float64{0.5, 0.5, 0.5, 0.5}, 1e-7, 0)
	}
	if n := strings.Count(logs.String(), "op falls back to cpu"); n != 1 {
		t.Fatalf("fallback logged %d times: %q", n, logs.String())
	}
	if !strings.Contains(logs.String(), "op=softmax") || !strings.Contains(logs.String(), "backend=declining") {
		t.Fatalf("log lacks the op or backend: %q", logs.String())
	}
	// an op neither backend supports is an error naming both
	q := ok(t)(rt.FromBytes(Q8_0, make([]byte, 34), 1, 32))
	if _, err := Softmax(rt, q); err == nil {
		t.Fatal("softmax of Q8_0 accepted")
	}
}

package gpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// deviceRuntimes opens the runtimes of other backends for the shared op table. It is
// filled by test files of the external package (cuda_test.go adds the cuda backend,
// which imports this package and so cannot be named here); an opener returns nil and
// the reason when its device is absent.
var deviceRuntimes = map[string]func() (*Runtime, string){}

// runtimesUnderTest returns one Runtime per backend present: the cpu backend with two
// threads (so every parallel split runs even on one core), with one thread, and with
// the generic GEMM path forced (which takes the Go forms of every assembly kernel), a
// cpu backend that poisons fresh buffers, and each device backend found (cuda).
func runtimesUnderTest(t testing.TB) map[string]*Runtime {
	t.Helper()
	out := map[string]*Runtime{}
	for name, open := range deviceRuntimes {
		if rt, why := open(); rt != nil {
			out[name] = rt
		} else {
			t.Logf("backend %s not tested: %s", name, why)
		}
	}
	for _, th := range []int{2, 1} {
		rt, err := New(Options{Threads: th})
		if err != nil {
			t.Fatal(err)
		}
		out[fmt.Sprintf("cpu-%dt", th)] = rt
	}
	generic, err := New(Options{Threads: 2, GEMM: "generic"})
	if err != nil {
		t.Fatal(err)
	}
	out["cpu-generic"] = generic
	// The cpu kernels behind a foreign Backend value whose fresh buffers are full of NaN:
	// catches kernels that leave output elements unwritten, and runs the Runtime's
	// non-aliasing paths (FromBytes copies, Zeros uploads) as a device backend would.
	// It also takes the padded-band conv form for every stride-1 conv, where the plain
	// runtimes choose the im2col form for small images.
	pc := NewCPU(CPUOptions{Threads: 2})
	pc.convForm = convFormBand
	rt, err := New(Options{Backend: poisonBackend{pc}})
	if err != nil {
		t.Fatal(err)
	}
	out["poisoned"] = rt
	return out
}

// poisonBackend is the cpu backend with NaN-filled allocations.
type poisonBackend struct{ *CPU }

func (p poisonBackend) Alloc(n int) (*Buffer, error) {
	b, err := p.CPU.Alloc(n)
	if err == nil {
		for i := range b.Host {
			b.Host[i] = 0xff // 0xffffffff is a NaN as float32
		}
	}
	return b, err
}

func randData(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

// randTensor returns a random F32 tensor of shape and its values (row-major, float64).
// With strided set, the tensor is a non-contiguous view: its storage is laid out with
// the dims reversed and permuted back.
func randTensor(t testing.TB, rt *Runtime, r *rand.Rand, strided bool, shape ...int) (*Tensor, []float64) {
	t.Helper()
	n := numel(shape)
	if !strided || len(shape) < 2 {
		d := randData(r, n)
		x, err := rt.FromFloat32(d, shape...)
		if err != nil {
			t.Fatal(err)
		}
		return x, f64(d)
	}
	rev := make([]int, len(shape))
	perm := make([]int, len(shape))
	for i := range shape {
		rev[i] = shape[len(shape)-1-i]
		perm[i] = len(shape) - 1 - i
	}
	d := randData(r, n)
	base, err := rt.FromFloat32(d, rev...)
	if err != nil {
		t.Fatal(err)
	}
	v, err := Permute(base, perm...)
	if err != nil {
		t.Fatal(err)
	}
	base.Release()
	// logical values: v[i0..ik] = base[ik..i0]
	want := make([]float64, n)
	idx := make([]int, len(shape))
	for lin := 0; lin < n; lin++ {
		rem := lin
		for i := len(shape) - 1; i >= 0; i-- {
			idx[i] = rem % shape[i]
			rem /= shape[i]
		}
		off := 0
		for i := 0; i < len(shape); i++ {
			off = off*rev[i] + idx[len(shape)-1-i]
		}
		want[lin] = float64(d[off])
	}
	return v, want
}

func f64(x []float32) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = float64(v)
	}
	return y
}

// checkClose fails unless |got-want| ≤ atol + rtol·|want| everywhere (NaN must match NaN).
func checkClose(t testing.TB, got *Tensor, want []float64, atol, rtol float64) {
	t.Helper()
	g, err := got.Float32()
	if err != nil {
		t.Fatal(err)
	}
	if len(g) != len(want) {
		t.Fatalf("got %d values (%v), want %d", len(g), got.shape, len(want))
	}
	bad := 0
	for i := range g {
		gv, wv := float64(g[i]), want[i]
		ok := math.Abs(gv-wv) <= atol+rtol*math.Abs(wv) || (math.IsNaN(gv) && math.IsNaN(wv)) ||
			(math.IsInf(wv, 0) && gv == wv)
		if !ok {
			if bad < 5 {
				t.Errorf("[%d] = %v, want %v", i, gv, wv)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d values differ", bad, len(g))
	}
}

// rawBytes returns the storage bytes of a contiguous tensor, from device memory too.
func rawBytes(t testing.TB, x *Tensor) []byte {
	t.Helper()
	if x.buf.Host != nil {
		return x.bytes()
	}
	n, _ := x.dtype.StorageBytes(x.Numel())
	off, _ := x.dtype.StorageBytes(x.offset)
	raw := make([]byte, n)
	if err := x.rt.be.Download(raw, x.buf, off); err != nil {
		t.Fatal(err)
	}
	if err := x.rt.be.Synchronize(); err != nil {
		t.Fatal(err)
	}
	return raw
}

// ok(t)(Op(...)) unwraps an op's result, failing the test on error.
func ok(t testing.TB) func(*Tensor, error) *Tensor {
	return func(x *Tensor, err error) *Tensor {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
}

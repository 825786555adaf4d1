package gpu

import (
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// kernelCall is one cpu kernel call on preallocated tensors.
type kernelCall struct {
	name string
	op   Op
	call *Call
	form int // CPU.convForm for the call
}

// kernelCalls builds a steady-state call of every kernel family on rt's tensors, sized
// so that each one splits its loops over two threads.
func kernelCalls(t *testing.T, rt *Runtime) []kernelCall {
	t.Helper()
	r := rand.New(rand.NewPCG(3, 4))
	rnd := func(shape ...int) *Tensor {
		x, _ := randTensor(t, rt, r, false, shape...)
		return x
	}
	empty := func(shape ...int) *Tensor { return ok(t)(rt.Empty(F32, shape...)) }
	weight := func(d DType, shape ...int) *Tensor {
		nb, _ := d.StorageBytes(numel(shape))
		raw := make([]byte, nb)
		if err := EncodeFloat32(d, raw, randData(r, numel(shape))); err != nil {
			t.Fatal(err)
		}
		return ok(t)(rt.FromBytes(d, raw, shape...))
	}
	x := rnd(2, 32, 24, 24)
	xt := ok(t)(Transpose(rnd(2, 64, 300), 1, 2)) // (2, 300, 64), last two dims transposed
	xp := ok(t)(Permute(rnd(4, 6, 8, 128), 0, 2, 1, 3))
	rows := rnd(600, 96)
	bias := rnd(1, 32, 1, 1)
	q, k, v := rnd(2, 4, 300, 40), rnd(2, 4, 300, 40), rnd(2, 4, 300, 40)
	convW, convB := weight(F16, 32, 32, 3, 3), rnd(32)
	linW, linB := weight(F16, 96, 96), rnd(96)
	conv := func(name string, form, stride int) kernelCall {
		oh := (24+2-3)/stride + 1
		return kernelCall{name, OpConv2D, &Call{In: []*Tensor{x, convW, convB}, Out: empty(2, 32, oh, oh),
			Params: &ConvParams{Stride: stride, Top: 1, Bottom: 1, Left: 1, Right: 1}}, form}
	}
	return []kernelCall{
		{"silu", OpSiLU, &Call{In: []*Tensor{x}, Out: empty(2, 32, 24, 24)}, 0},
		{"gelu-strided", OpGELU, &Call{In: []*Tensor{xt}, Out: empty(2, 300, 64)}, 0},
		{"quickgelu", OpQuickGELU, &Call{In: []*Tensor{x}, Out: empty(2, 32, 24, 24)}, 0},
		{"add", OpAdd, &Call{In: []*Tensor{x, x}, Out: empty(2, 32, 24, 24)}, 0},
		{"add-broadcast", OpAdd, &Call{In: []*Tensor{x, bias}, Out: empty(2, 32, 24, 24)}, 0},
		{"copy-transposed", OpCopy, &Call{In: []*Tensor{xt}, Out: empty(2, 300, 64)}, 0},
		{"copy-rows", OpCopy, &Call{In: []*Tensor{xp}, Out: empty(4, 8, 6, 128)}, 0},
		{"concat", OpConcat, &Call{In: []*Tensor{x, x}, Out: empty(2, 64, 24, 24), Params: &ConcatParams{Dim: 1}}, 0},
		{"groupnorm", OpGroupNorm, &Call{In: []*Tensor{x, convB, convB}, Out: empty(2, 32, 24, 24), Params: &NormParams{Groups: 8, Eps: 1e-5}}, 0},
		{"groupnorm-silu", OpGroupNorm, &Call{In: []*Tensor{x, convB, convB}, Out: empty(2, 32, 24, 24), Params: &NormParams{Groups: 8, Eps: 1e-5, silu: true}}, 0},
		{"layernorm", OpLayerNorm, &Call{In: []*Tensor{rows, linB, linB}, Out: empty(600, 96), Params: &NormParams{Eps: 1e-5}}, 0},
		{"rmsnorm", OpRMSNorm, &Call{In: []*Tensor{rows, linB}, Out: empty(600, 96), Params: &NormParams{Eps: 1e-6}}, 0},
		{"softmax", OpSoftmax, &Call{In: []*Tensor{rows}, Out: empty(600, 96)}, 0},
		{"leaky", OpLeakyReLU, &Call{In: []*Tensor{x, nil}, Out: empty(2, 32, 24, 24), Params: &LeakyParams{Slope: 0.2}}, 0},
		{"leaky-prelu", OpLeakyReLU, &Call{In: []*Tensor{x, convB}, Out: empty(2, 32, 24, 24)}, 0},
		{"linear", OpLinear, &Call{In: []*Tensor{rows, linW, linB}, Out: empty(600, 96)}, 0},
		conv("conv-band", convFormBand, 1),
		conv("conv-col", convFormCol, 1),
		conv("conv-stride2", convFormCol, 2),
		conv("conv-winograd", convFormWino, 1),
		{"attention", OpAttention, &Call{In: []*Tensor{q, k, v, nil}, Out: empty(2, 4, 300, 40), Params: &AttentionParams{Scale: 0.15}}, 0},
		{"upscale-nearest", OpUpscale, &Call{In: []*Tensor{x}, Out: empty(2, 32, 48, 48), Params: &UpscaleParams{Width: 48, Height: 48, Method: "nearest-exact", Crop: "disabled"}}, 0},
		{"upscale-bilinear", OpUpscale, &Call{In: []*Tensor{x}, Out: empty(2, 32, 40, 40), Params: &UpscaleParams{Width: 40, Height: 40, Method: "bilinear", Crop: "disabled"}}, 0},
	}
}

// TestKernelsAllocateNothing: after its first call, a kernel of every family hands its
// loops to the workers, reuses its scratch and tables, and allocates nothing on the Go
// heap (the Runtime's tensor headers and Call values are not part of this test).
func TestKernelsAllocateNothing(t *testing.T) {
	rt, err := New(Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	c := rt.cpu
	for _, kc := range kernelCalls(t, rt) {
		c.convForm = kc.form
		run := func() {
			if err := c.Run(kc.op, kc.call); err != nil {
				t.Fatalf("%s: %v", kc.name, err)
			}
		}
		// a few calls first: the free lists grow to what the workers take at once, which
		// depends on their timing
		for range 3 {
			run()
		}
		if a := testing.AllocsPerRun(10, run); a != 0 {
			t.Errorf("%s: %.1f allocations per call, want 0", kc.name, a)
		}
	}
}

// TestConcurrentKernels runs every kernel family from four goroutines at once on one
// backend (run with -race): each result equals the one computed alone.
func TestConcurrentKernels(t *testing.T) {
	rt, err := New(Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	c := rt.cpu
	c.convForm = convFormBand
	calls := kernelCalls(t, rt)
	var keep []kernelCall
	want := map[string][]float32{}
	for _, kc := range calls {
		if kc.form != 0 && kc.form != convFormBand {
			continue // convForm is the backend's, not the call's
		}
		if err := c.Run(kc.op, kc.call); err != nil {
			t.Fatalf("%s: %v", kc.name, err)
		}
		want[kc.name] = append([]float32(nil), kc.call.Out.f32c()...)
		keep = append(keep, kc)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for range 3 {
				for _, kc := range keep {
					call := &Call{In: kc.call.In, Out: ok(t)(rt.Empty(F32, kc.call.Out.shape...)), Params: kc.call.Params}
					if err := c.Run(kc.op, call); err != nil {
						t.Errorf("goroutine %d, %s: %v", g, kc.name, err)
						return
					}
					got := call.Out.f32c()
					for i, w := range want[kc.name] {
						if got[i] != w && !(got[i] != got[i] && w != w) {
							t.Errorf("goroutine %d, %s: [%d] = %v, alone %v", g, kc.name, i, got[i], w)
							return
						}
					}
					call.Out.Release()
				}
			}
		})
	}
	wg.Wait()
}

// TestRuntimeCloseStopsWorkers: a Runtime's worker goroutines end with Close (and ops
// still run afterwards, on the caller's goroutine).
func TestRuntimeCloseStopsWorkers(t *testing.T) {
	// runtimes of earlier tests stop their workers when collected, from a cleanup
	// goroutine: let their count settle first
	before := -1
	for range 100 {
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
		n := runtime.NumGoroutine()
		if n == before {
			break
		}
		before = n
	}
	var rts []*Runtime
	for range 3 {
		rt, err := New(Options{Threads: 4})
		if err != nil {
			t.Fatal(err)
		}
		x := ok(t)(rt.FromFloat32(make([]float32, 1<<16), 1<<16))
		ok(t)(SiLU(rt, x)).Release()
		rts = append(rts, rt)
	}
	if got := runtime.NumGoroutine(); got < before+9 {
		t.Fatalf("%d goroutines with 3 runtimes of 4 threads, %d before: the workers are not running", got, before)
	}
	for _, rt := range rts {
		rt.Close()
		rt.Close()
	}
	// the GEMM engines share the backend's pool: nothing else is left running
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := runtime.NumGoroutine(); got > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines after Close, %d before:\n%s", got, before, buf[:runtime.Stack(buf, true)])
	}
	x := ok(t)(rts[0].FromFloat32([]float32{-1, 0, 1}, 3))
	y := ok(t)(SiLU(rts[0], x))
	if got, _ := y.Float32(); len(got) != 3 || got[2] != silu(1) {
		t.Fatalf("SiLU after Close = %v", got)
	}
}

// TestWorkerPanicReachesCaller: a kernel that panics on a worker makes the op's caller
// panic with the message (not a hung op or a dead process), and the backend keeps
// working.
func TestWorkerPanicReachesCaller(t *testing.T) {
	rt, err := New(Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	c := rt.cpu
	type args struct{ xs []float32 }
	got := func() (msg string) {
		defer func() { msg, _ = recover().(string) }()
		_ = forEach(c, 2, 1, args{xs: make([]float32, 1)}, func(a *args, w, lo, hi int) error {
			a.xs[w] = 1 // index out of range on worker 1
			return nil
		})
		return ""
	}()
	if !strings.Contains(got, "index out of range") {
		t.Fatalf("caller recovered %q, want the worker's index out of range", got)
	}
	x := ok(t)(rt.FromFloat32(make([]float32, 1<<16), 1<<16))
	ok(t)(SiLU(rt, x)).Release()
}

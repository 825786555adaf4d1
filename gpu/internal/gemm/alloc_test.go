package gemm

import (
	"math/rand/v2"
	"testing"
)

// TestSteadyStateAllocs checks that repeated calls reuse the pooled packing
// buffers and jobs and hand their phases to the Engine's worker pool without
// allocating: no call allocates, on one thread or two.
func TestSteadyStateAllocs(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	const m, n, k = 200, 150, 300
	a, b, c := randSlice(r, m*k), randSlice(r, k*n), make([]float32, m*n)
	data, _ := testWeight(r, Q8_0, n, 320)
	x := randSlice(r, m*320)
	w := Weight{DType: Q8_0, N: n, K: 320, Data: data}
	f16, _ := testWeight(r, F16, n, 320)
	for _, threads := range []int{1, 2} {
		e, err := New(Options{Threads: threads})
		if err != nil {
			t.Fatal(err)
		}
		pw := Weight{DType: F16, N: n, K: 320, Data: f16}
		if pw.Packed, err = e.Pack(pw); err != nil {
			t.Fatal(err)
		}
		calls := map[string]func(){
			"sgemm":  func() { _ = e.SGEMM(m, n, k, a, k, b, n, c, n, false) },
			"linear": func() { _ = e.Linear(m, x, 320, w, c, n, false) },
			"gemv":   func() { _ = e.Linear(2, x, 320, w, c, n, false) },
			"packed": func() { _ = e.Linear(m, x, 320, pw, c, n, false) },
		}
		for name, f := range calls {
			f() // fill the pools
			got := testing.AllocsPerRun(20, f)
			t.Logf("threads=%d %s: %.1f allocations per call", threads, name, got)
			if got != 0 {
				t.Errorf("threads=%d %s: %.1f allocations per call, want 0", threads, name, got)
			}
		}
	}
}

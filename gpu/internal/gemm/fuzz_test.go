package gemm

import (
	"testing"
)

// FuzzArgs throws arbitrary sizes, strides and transpositions at SGEMMT,
// SGEMMBatched, Linear, LinearGather and Transpose over small buffers: each
// call must either succeed or return an error, never panic or write past its
// slices.
func FuzzArgs(f *testing.F) {
	f.Add(3, 4, 5, 5, 4, 4, 0, 1, 0, 0, 0, false, false)
	f.Add(0, 0, 0, 1, 1, 1, 2, 0, 0, 0, 5, true, true)
	f.Add(1<<40, 2, 2, 2, 2, 2, 1, 0, 0, 0, 6, false, true)
	e, err := New(Options{Threads: 2})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, m, n, k, lda, ldb, ldc, count, sa, sb, sc, dt int, ta, tb bool) {
		const size = 4096
		a, b, c := make([]float32, size), make([]float32, size), make([]float32, size)
		_ = e.SGEMMBatched(Batch{Count: count % 5, StrideA: sa, StrideB: sb, StrideC: sc}, ta, tb, m, n, k, a, lda, b, ldb, c, ldc, true)
		w := Weight{DType: DType(dt % (int(dtypeCount) + 1)), N: n, K: k, Data: make([]byte, size), Stride: sb}
		_ = e.Linear(m, a, lda, w, c, ldc, false)
		if k >= 0 && k <= 512 {
			// column offsets sa, sa+sb, sa+2·sb, … (any of them may be out of range)
			off := make([]int, k)
			for p := range off {
				off[p] = sa + p*sb
			}
			w.K = k
			_ = e.LinearGather(m, a, off, w, c, ldc, true)
		}
		_ = e.Transpose(m, n, a, lda, c, ldc)
	})
}

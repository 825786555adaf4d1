package gpu

import (
	"fmt"

	"github.com/forgeflow/forgeflow/gpu/internal/gemm"
	"github.com/forgeflow/forgeflow/gpu/internal/par"
)

// matmuler is the one place the cpu backend reaches the GEMM package, so that a change
// of its API touches this file only. wide uses all threads; narrow runs on the caller's
// goroutine (for kernels such as attention that parallelise over heads themselves);
// weighted runs the products with a weight (Linear, Conv2D): wide, or an all-thread
// bfloat16 engine when that was asked for and the CPU has it.
type matmuler struct {
	wide, narrow, weighted *gemm.Engine
	bf16                   *gemm.Engine // the bfloat16 engine when one was asked for and made
	err                    error
	bf16Err                error // why a requested bfloat16 engine is not used
}

// newMatmuler makes the engines on pool for a kernel path name and the blocking: src
// and, where a calibration chose one, its explicit blocking b (zero fields keep src's).
func newMatmuler(pool *par.Pool, path string, bf16 bool, src gemm.BlockingSource, b gemm.Blocking) *matmuler {
	threads := pool.Threads()
	p, err := gemm.ParsePath(path)
	if err != nil {
		return &matmuler{err: err}
	}
	opts := gemm.Options{Path: p, Threads: threads, Source: src, Blocking: b, Pool: pool}
	wide, err := gemm.New(opts)
	if err != nil {
		return &matmuler{err: err}
	}
	one := opts
	one.Threads = 1
	narrow, err := gemm.New(one)
	if err != nil {
		return &matmuler{err: err}
	}
	m := &matmuler{wide: wide, narrow: narrow, weighted: wide}
	if bf16 {
		opts.BF16 = true
		if e, err := gemm.New(opts); err != nil {
			m.bf16Err = err
		} else {
			m.weighted, m.bf16 = e, e
		}
	}
	return m
}

// generic reports whether the portable GEMM path was chosen (forced by Options.GEMM or
// for lack of CPU features); the other cpu kernels then use their Go forms too, so
// forcing the fallback covers every assembly routine.
func (m *matmuler) generic() bool {
	return m.err != nil || m.wide.Path() == gemm.PathGeneric
}

func (m *matmuler) engine(serial bool) (*gemm.Engine, error) {
	if m.err != nil {
		return nil, fmt.Errorf("gpu: cpu: gemm: %w", m.err)
	}
	if serial {
		return m.narrow, nil
	}
	return m.wide, nil
}

// sgemm computes C (+)= op(A)·op(B) for count products spaced by the strides.
func (m *matmuler) sgemm(serial bool, count, sa, sb, sc int, transA, transB bool, mm, n, k int,
	a []float32, lda int, b []float32, ldb int, c []float32, ldc int, acc bool) error {
	e, err := m.engine(serial)
	if err != nil {
		return err
	}
	return e.SGEMMBatched(gemm.Batch{Count: count, StrideA: sa, StrideB: sb, StrideC: sc},
		transA, transB, mm, n, k, a, lda, b, ldb, c, ldc, acc)
}

// linear computes y (+)= x·Wᵀ with W (n×k) in its stored dtype, blocks decoded in the
// arithmetic of deq (Tensor.WithDequantDType), read from pk where set.
func (m *matmuler) linear(rows int, x []float32, ldx int, wd, deq DType, wdata []byte, pk *gemm.Packed, n, k int, y []float32, ldy int, acc bool) error {
	if m.err != nil {
		return fmt.Errorf("gpu: cpu: gemm: %w", m.err)
	}
	e := m.weighted
	gd, ok := gemmWeightDType(wd, deq)
	if !ok {
		return fmt.Errorf("gpu: cpu: linear: weight dtype %s has no kernel", wd)
	}
	return e.Linear(rows, x, ldx, gemm.Weight{DType: gd, N: n, K: k, Data: wdata, Packed: pk}, y, ldy, acc)
}

// gather computes y (+)= A·Wᵀ for the gathered A of gemm.LinearGather (A[i][p] =
// x[off[p]+i]) with W (n×k) in its stored dtype (read from pk where set), on all threads.
func (m *matmuler) gather(rows int, x []float32, off []int, wd DType, wdata []byte, pk *gemm.Packed, n, k int, y []float32, ldy int) error {
	if m.err != nil {
		return fmt.Errorf("gpu: cpu: gemm: %w", m.err)
	}
	e := m.weighted
	gd, ok := gemmDType(wd)
	if !ok {
		return fmt.Errorf("gpu: cpu: conv2d: weight dtype %s has no kernel", wd)
	}
	return e.LinearGather(rows, x, off, gemm.Weight{DType: gd, N: n, K: k, Data: wdata, Packed: pk}, y, ldy, false)
}

// transpose writes dst[c·ldd + r] = src[r·lds + c] for r < rows, c < cols.
func (m *matmuler) transpose(rows, cols int, src []float32, lds int, dst []float32, ldd int) error {
	e, err := m.engine(true)
	if err != nil {
		return err
	}
	return e.Transpose(rows, cols, src, lds, dst, ldd)
}

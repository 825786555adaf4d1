package gemm

import (
	"sync"
	"sync/atomic"
)

// rowDotMaxM is the largest m that Linear serves with dot products instead
// of the packed GEMM: below a register tile's height most of the tile
// would multiply zero padding, and packing W costs as much as using it.
// Measured with BenchmarkLinear/*/1x… and 4x… (codex/gemm.md).
const rowDotMaxM = 4

// rowPanel is the longest piece of a W row linearRows converts at once.
const rowPanel = 4096

// rowChunk is how many output columns (W rows) one unit of work covers.
const rowChunk = 32

// linearRows computes y (+)= x·Wᵀ for a few rows of x: each row of W is
// converted once, a panel of at most kcAlloc elements at a time, and dotted
// with every row of x while it is in L1. The threads share the rows of W.
func (e *Engine) linearRows(m int, x []float32, ldx int, b *bSource, n, k int, y []float32, ldy int, acc bool) {
	kr := &e.k
	chunks := (n + rowChunk - 1) / rowChunk
	workers := min(e.threads, chunks)
	if int64(m)*int64(n)*int64(k) < minParallelFlops/4 {
		workers = 1
	}
	// An f32 row is dotted whole; a stored row is converted in panels of
	// up to rowPanel elements (16 KiB, in L1 with the x rows' panels).
	depth := k
	if b.w != nil {
		depth = panelDepth(min(k, rowPanel), &problem{b: *b})
	}
	var next atomic.Int64
	work := func() {
		ws := e.getWorkspace()
		var sums [rowDotMaxM]float32
		for {
			ch := int(next.Add(1)) - 1
			if ch >= chunks {
				break
			}
			for j := ch * rowChunk; j < min(n, (ch+1)*rowChunk); j++ {
				clear(sums[:m])
				for pc := 0; pc < k; pc += depth {
					kc := min(depth, k-pc)
					var wr []float32
					if b.w == nil {
						wr = b.f32[j*b.ld+pc : j*b.ld+pc+kc]
					} else {
						if cap(ws.row) < kc {
							ws.row = make([]float32, depth)
						}
						wr = ws.row[:kc]
						kr.decodeRow(b.w.DType, wr, b.w.Data[j*b.wld:], pc)
					}
					for i := 0; i < m; i++ {
						sums[i] += kr.dot(x[i*ldx+pc:i*ldx+pc+kc], wr)
					}
				}
				for i := 0; i < m; i++ {
					if acc {
						y[i*ldy+j] += sums[i]
					} else {
						y[i*ldy+j] = sums[i]
					}
				}
			}
		}
		e.bufs.Put(ws)
	}
	if workers <= 1 {
		work()
		return
	}
	var wg sync.WaitGroup
	for w := 1; w < workers; w++ {
		wg.Go(work)
	}
	work()
	wg.Wait()
}

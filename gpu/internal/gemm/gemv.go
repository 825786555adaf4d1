package gemm

// rowDotMaxM is the largest m that Linear serves with dot products instead
// of the packed GEMM: below a register tile's height most of the tile
// would multiply zero padding, and packing W costs as much as using it.
// Measured with BenchmarkLinear/*/1x… and 4x… (codex/gemm.md).
const rowDotMaxM = 4

// DotRows is the most rows Linear serves with dot products on the stored
// weight, where Weight.Packed is not read.
const DotRows = rowDotMaxM

// rowPanel is the longest piece of a W row linearRows converts at once.
const rowPanel = 4096

// rowChunk is how many output columns (W rows) one unit of work covers.
const rowChunk = 32

// linearRows computes y (+)= x·Wᵀ for a few rows of x: each row of W is
// converted once, a panel of at most rowPanel elements at a time, and
// dotted with every row of x while it is in L1. The threads share the rows
// of W.
func (e *Engine) linearRows(p *problem) {
	chunks := (p.n + rowChunk - 1) / rowChunk
	workers := e.threads
	if int64(p.m)*int64(p.n)*int64(p.k) < minParallelFlops/4 {
		workers = 1
	}
	j := e.newJob(p)
	defer e.jobs.put(j)
	// An f32 row is dotted whole; a stored row is converted in panels of
	// up to rowPanel elements (16 KiB, in L1 with the x rows' panels).
	j.kc = p.k
	if p.b.isW {
		j.kc = panelDepth(min(p.k, rowPanel), p)
	}
	j.do(phaseRows, chunks, workers)
}

// rowChunkDots computes output columns [ch·rowChunk, (ch+1)·rowChunk).
func (j *job) rowChunkDots(ws *workspace, ch int) {
	kr, p := &j.e.k, &j.p
	b, x, y := &p.b, p.a.data, p.c
	depth := j.kc
	var sums [rowDotMaxM]float32
	for col := ch * rowChunk; col < min(p.n, (ch+1)*rowChunk); col++ {
		clear(sums[:p.m])
		for pc := 0; pc < p.k; pc += depth {
			kc := min(depth, p.k-pc)
			var wr []float32
			if !b.isW {
				wr = b.f32[col*b.ld+pc : col*b.ld+pc+kc]
			} else {
				if cap(ws.row) < kc {
					ws.row = make([]float32, depth)
				}
				wr = ws.row[:kc]
				kr.decodeRow(b.w.DType, wr, b.w.Data[col*b.wld:], pc)
			}
			for i := 0; i < p.m; i++ {
				sums[i] += kr.dot(x[i*p.a.ld+pc:i*p.a.ld+pc+kc], wr)
			}
		}
		for i := 0; i < p.m; i++ {
			if p.acc {
				y[i*p.ldc+col] += sums[i]
			} else {
				y[i*p.ldc+col] = sums[i]
			}
		}
	}
}

package gemm

import (
	"sync"
	"sync/atomic"
)

// runShared computes one product with all workers sharing each packed B
// block, the BLIS arrangement: per (jc, pc) the workers first pack the B
// block's slivers together, then take mc-row blocks of A one at a time from
// a counter. Compared with giving each worker a fixed rectangle it packs B
// once instead of once per worker and, above all, balances the load when
// another process takes a core for a while: a worker that runs late simply
// takes fewer blocks.
func (e *Engine) runShared(p *problem, workers int) {
	kr := &e.k
	c, a, b := p.operands(0)
	depth := panelDepth(kr.kc, p)
	// Row blocks small enough that each worker gets about four of them.
	blk := min(kr.mc, max(kr.mr, (p.m+4*workers-1)/(4*workers)))
	blk = (blk + kr.mr - 1) / kr.mr * kr.mr
	nblk := (p.m + blk - 1) / blk
	bbuf := e.getPanel()
	defer e.panels.Put(bbuf)
	for jc := 0; jc < p.n; jc += kr.nc {
		nc := min(kr.nc, p.n-jc)
		slivers := (nc + kr.nr - 1) / kr.nr
		for pc := 0; pc < p.k; pc += depth {
			kc := min(depth, p.k-pc)
			bp := (*bbuf)[:kc*slivers*kr.nr]
			acc := p.acc || pc > 0
			// Pack B in groups of slivers (a group is about 4·nr columns).
			const group = 4
			e.parallel(workers, (slivers+group-1)/group, func(ws *workspace, g int) {
				kr.packB(bp, ws.row, &b, pc, kc, jc, nc, g*group, min(slivers, (g+1)*group))
				kr.toPairs(bp, kc, kr.nr, g*group, min(slivers, (g+1)*group))
			})
			e.parallel(workers, nblk, func(ws *workspace, i int) {
				ic := i * blk
				mc := min(blk, p.m-ic)
				packA(ws.a, &a, ic, mc, pc, kc, kr.mr)
				kr.toPairs(ws.a, kc, kr.mr, 0, (mc+kr.mr-1)/kr.mr)
				kr.macro(ws.a, bp, ws.tile, c, p.ldc, ic, mc, jc, nc, kc, acc)
			})
		}
	}
}

// getPanel returns a shared B block buffer of kcAlloc×nc elements.
func (e *Engine) getPanel() *[]float32 {
	if b, ok := e.panels.Get().(*[]float32); ok {
		return b
	}
	b := make([]float32, kcAlloc(e.k.kc)*e.k.nc)
	return &b
}

// parallel runs f(ws, i) for i in [0, n) on up to workers goroutines (the
// caller's included), handing out indices from a counter, and returns when
// all are done. Each goroutine has its own workspace.
func (e *Engine) parallel(workers, n int, f func(ws *workspace, i int)) {
	var next atomic.Int64
	work := func() {
		ws := e.getWorkspace()
		for {
			i := int(next.Add(1)) - 1
			if i >= n {
				break
			}
			f(ws, i)
		}
		e.bufs.Put(ws)
	}
	workers = min(workers, n)
	var wg sync.WaitGroup
	for w := 1; w < workers; w++ {
		wg.Go(work)
	}
	work()
	wg.Wait()
}

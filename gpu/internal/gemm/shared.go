package gemm

// runShared computes one product with all workers sharing each packed B
// block, the BLIS arrangement: per (jc, pc) the workers first pack the B
// block's slivers together, then take mc-row blocks of A one at a time from
// a counter. Compared with giving each worker a fixed rectangle it packs B
// once instead of once per worker and, above all, balances the load when
// another process takes a core for a while: a worker that runs late simply
// takes fewer blocks.
func (j *job) runShared(workers int) {
	e, p := j.e, &j.p
	kr := &e.k
	j.c, j.a, j.b = p.operands(0)
	depth := panelDepth(kr.kc, p)
	// Row blocks small enough that each worker gets about four of them.
	blk := min(kr.mc, max(kr.mr, (p.m+4*workers-1)/(4*workers)))
	j.blk = (blk + kr.mr - 1) / kr.mr * kr.mr
	nblk := (p.m + j.blk - 1) / j.blk
	bbuf := e.getPanel()
	defer e.panels.put(bbuf)
	for j.jc = 0; j.jc < p.n; j.jc += kr.nc {
		j.nc = min(kr.nc, p.n-j.jc)
		j.slivers = (j.nc + kr.nr - 1) / kr.nr
		for j.pc = 0; j.pc < p.k; j.pc += depth {
			j.kc = min(depth, p.k-j.pc)
			j.bp = (*bbuf)[:j.kc*j.slivers*kr.nr]
			j.acc = p.acc || j.pc > 0
			j.do(phasePackB, (j.slivers+packGroup-1)/packGroup, workers)
			j.do(phaseBlocks, nblk, workers)
		}
	}
}

// packGroup is how many B slivers one packing work item covers.
const packGroup = 4

// packBGroup packs B slivers [g·packGroup, (g+1)·packGroup) of the block.
func (j *job) packBGroup(ws *workspace, g int) {
	kr := &j.e.k
	s0, s1 := g*packGroup, min(j.slivers, (g+1)*packGroup)
	kr.packB(j.bp, ws.rows, &j.b, j.pc, j.kc, j.jc, j.nc, s0, s1)
	kr.toPairs(j.bp, j.kc, kr.nr, s0, s1)
}

// rowBlock packs row block i of A and multiplies it by the shared B block.
func (j *job) rowBlock(ws *workspace, i int) {
	kr := &j.e.k
	ic := i * j.blk
	mc := min(j.blk, j.p.m-ic)
	kr.packA(ws.a, &j.a, ic, mc, j.pc, j.kc)
	kr.toPairs(ws.a, j.kc, kr.mr, 0, (mc+kr.mr-1)/kr.mr)
	kr.macro(ws.a, j.bp, ws.tile, j.c, j.p.ldc, ic, mc, j.jc, j.nc, j.kc, j.acc)
}

// getPanel returns a shared B block buffer of kcAlloc×nc elements.
func (e *Engine) getPanel() *[]float32 {
	if b, ok := e.panels.get(nil); ok {
		return b
	}
	b := make([]float32, kcAlloc(e.k.kc)*e.k.nc)
	return &b
}

package gemm

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"
	"time"
	"unsafe"
)

// Packed is a weight laid out once in the right-operand panel layout of one
// kernel family, so that a Linear or LinearGather with it neither converts
// nor transposes the weight on every call (the cost that dominated the
// small-latent convolutions of an SD UNet: see codex/gemm.md).
//
// The layout is ceil(N/nr) slivers of nr weight rows; sliver s holds
// element (p, j) = W[s·nr+j][p] at s·K·nr + p·nr + j, zero for rows past N.
// Any panel depth pc…pc+kc of a sliver is therefore one contiguous run, and
// the blocking stays free. The elements keep the weight's own width: F32
// panels for an F32 weight; F16 and BF16 panels for 16-bit weights, which
// the micro-kernel widens while it loads them (VCVTPH2PS, or a shift), so a
// packed model holds no more bytes than its stored weights. Products and
// sums are exactly those of the unpacked path (same panel depth, same
// order), so results are bit-identical.
type Packed struct {
	n, k  int
	nr    int
	path  Path
	dtype DType // F32, F16 or BF16
	f32   []float32
	u16   []uint16
}

// N and K are the packed weight's shape.
func (p *Packed) N() int { return p.n }

// K is the packed weight's depth.
func (p *Packed) K() int { return p.k }

// Bytes is the memory the panels hold.
func (p *Packed) Bytes() int64 {
	if p == nil {
		return 0
	}
	return int64(len(p.f32))*4 + int64(len(p.u16))*2
}

// CanPack reports whether Pack accepts weights of dtype d on this Engine:
// F32 on every float32 kernel (not the bfloat16 dot-product one, whose
// panels are pairs), F16 and BF16 where the kernel widens 16-bit panels
// (the assembly paths).
func (e *Engine) CanPack(d DType) bool {
	if e.check() != nil || e.k.pairs {
		return false
	}
	switch d {
	case F32:
		return true
	case F16:
		return e.k.tilePH != nil
	case BF16:
		return e.k.tilePB != nil
	}
	return false
}

// PackedBytes is the size Pack would give a weight of dtype d and shape
// n×k on this Engine (0 when CanPack(d) is false): what a caller accounts
// before packing.
func (e *Engine) PackedBytes(d DType, n, k int) int64 {
	if !e.CanPack(d) || n <= 0 || k <= 0 {
		return 0
	}
	elems := int64((n+e.k.nr-1)/e.k.nr*e.k.nr) * int64(k)
	if d == F32 || e.widen {
		return elems * 4
	}
	return elems * 2
}

// Widened reports whether Pack gives 16-bit weights float32 panels on this
// Engine (Options.Widen16).
func (e *Engine) Widened() bool { return e.widen }

// Pack lays w out for this Engine's kernel, using the Engine's threads.
// The result is read-only and may be shared by every Engine with the same
// path and no BF16 (Weight.Packed); it does not refer to w.Data.
func (e *Engine) Pack(w Weight) (*Packed, error) {
	if _, err := e.weightSource(w); err != nil {
		return nil, err
	}
	if !e.CanPack(w.DType) {
		return nil, fmt.Errorf("gemm: cannot pack a %s weight for path %s (bf16 %v)", w.DType, e.k.path, e.k.pairs)
	}
	if w.N == 0 || w.K == 0 {
		return nil, fmt.Errorf("gemm: cannot pack an empty %d×%d weight", w.N, w.K)
	}
	wld, _ := w.rowStride()
	nr := e.k.nr
	slivers := (w.N + nr - 1) / nr
	p := &Packed{n: w.N, k: w.K, nr: nr, path: e.k.path, dtype: w.DType}
	if e.widen {
		p.dtype = F32
	}
	if p.dtype == F32 {
		p.f32 = make([]float32, slivers*nr*w.K)
		adviseHuge(unsafe.Pointer(unsafe.SliceData(p.f32)), 4*len(p.f32))
	} else {
		p.u16 = make([]uint16, slivers*nr*w.K)
		adviseHuge(unsafe.Pointer(unsafe.SliceData(p.u16)), 2*len(p.u16))
	}
	e.pool.Run(slivers, 1, &packTask{e: e, p: p, w: w, wld: wld})
	return p, nil
}

// packTask is Pack's loop over slivers, run on the Engine's worker pool.
type packTask struct {
	e   *Engine
	p   *Packed
	w   Weight
	wld int
}

// Run implements par.Task: slivers [lo, hi), with scratch of the worker's own.
func (t *packTask) Run(_, lo, hi int) {
	p, w := t.p, t.w
	var scr []float32
	if (p.u16 != nil && t.e.k.narrow16 != nil) || (p.f32 != nil && w.DType != F32) {
		scr = make([]float32, 2*p.nr*packChunk16)
	}
	for s := lo; s < hi; s++ {
		p.packSliver(&t.e.k, w, t.wld, s, scr)
	}
}

// packChunk is how many k steps of a sliver packSliver writes per pass: 64
// steps of nr elements stay in L1 while nr rows are read.
const packChunk = 64

// packChunk16 is the depth of one pass of the vector 16-bit packing:
// nr rows of it widened, transposed and narrowed in L1/L2.
const packChunk16 = 256

// packSliver writes sliver s of p from w. With a narrowing kernel, 16-bit
// slivers are widened (exactly) to float32, transposed by the packing
// transposer and narrowed back (exactly) in chunks, using scr (2·nr·
// packChunk16 floats): about ten times the speed of moving 16-bit values
// one by one, which made packing an SD1.5 UNet take seconds.
func (p *Packed) packSliver(kr *kernel, w Weight, wld, s int, scr []float32) {
	nr, k := p.nr, p.k
	rows := min(nr, p.n-s*nr)
	base := s * k * nr
	if p.dtype == F32 {
		d := p.f32[base : base+k*nr]
		if w.DType != F32 {
			// a 16-bit weight widened once: converted and transposed in chunks
			rowBuf := scr[:nr*packChunk16]
			for pc := 0; pc < k; pc += packChunk16 {
				kc := min(packChunk16, k-pc)
				for j := 0; j < nr; j++ {
					r := rowBuf[j*kc : (j+1)*kc]
					if j < rows {
						kr.decodeRow(w.DType, r, w.Data[(s*nr+j)*wld:], pc)
					} else {
						clear(r)
					}
				}
				kr.packT(d[pc*nr:(pc+kc)*nr], rowBuf, kc, kc, nr, nr)
			}
			return
		}
		if nativeLittleEndian && isAligned4(w.Data) && wld%4 == 0 {
			src := bytesAsFloat32(w.Data)
			kr.packT(d, src[s*nr*(wld/4):], wld/4, k, rows, nr)
			return
		}
		for j := 0; j < rows; j++ {
			r := w.Data[(s*nr+j)*wld:]
			for q := 0; q < k; q++ {
				d[q*nr+j] = math.Float32frombits(binary.LittleEndian.Uint32(r[4*q:]))
			}
		}
		return
	}
	d := p.u16[base : base+k*nr]
	if scr != nil {
		rowBuf, tr := scr[:nr*packChunk16], scr[nr*packChunk16:]
		for pc := 0; pc < k; pc += packChunk16 {
			kc := min(packChunk16, k-pc)
			for j := 0; j < nr; j++ {
				r := rowBuf[j*kc : (j+1)*kc]
				if j < rows {
					kr.decodeRow(w.DType, r, w.Data[(s*nr+j)*wld:], pc)
				} else {
					clear(r)
				}
			}
			kr.packT(tr[:kc*nr], rowBuf, kc, kc, nr, nr)
			kr.narrow16(d[pc*nr:(pc+kc)*nr], tr[:kc*nr], w.DType == BF16)
		}
		return
	}
	for q0 := 0; q0 < k; q0 += packChunk {
		q1 := min(k, q0+packChunk)
		for j := 0; j < rows; j++ {
			r := w.Data[(s*nr+j)*wld+2*q0 : (s*nr+j)*wld+2*q1]
			for q := q0; q < q1; q++ {
				d[q*nr+j] = binary.LittleEndian.Uint16(r[2*(q-q0):])
			}
		}
	}
}

// usablePacked returns w.Packed when this Engine's kernel reads its layout.
func (e *Engine) usablePacked(w *Weight) *Packed {
	pk := w.Packed
	if pk == nil || e.k.pairs || pk.path != e.k.path || pk.nr != e.k.nr || pk.n != w.N || pk.k != w.K || (pk.dtype != F32 && !e.CanPack(pk.dtype)) {
		return nil
	}
	return pk
}

// panelTile runs the micro-kernel (or its narrow half when half and the
// kernel has one) on kc steps of packed sliver s of pk from depth pc.
func (kr *kernel) panelTile(pk *Packed, s, pc, kc int, a, c []float32, ldc int, acc, half bool) {
	off := s*pk.k*pk.nr + pc*pk.nr
	n := kc * pk.nr
	if pk.dtype == F32 {
		if half && kr.half != nil {
			kr.half(kc, a, pk.f32[off:off+n], c, ldc, acc)
		} else {
			kr.tile(kc, a, pk.f32[off:off+n], c, ldc, acc)
		}
		return
	}
	full, narrow := kr.tilePH, kr.halfPH
	if pk.dtype == BF16 {
		full, narrow = kr.tilePB, kr.halfPB
	}
	if half && narrow != nil {
		narrow(kc, a, pk.u16[off:off+n], c, ldc, acc)
	} else {
		full(kc, a, pk.u16[off:off+n], c, ldc, acc)
	}
}

// macroPacked is macro with B read from the packed slivers of columns
// [jc, jc+nc) at depth [pc, pc+kc), in the other loop order: jr outer, so
// that each B sliver, which comes from memory the first time, is used by
// every A sliver of the block while it is in L1, and the next B sliver is
// prefetched a piece per tile meanwhile (A, packed moments ago, is in L2).
func (kr *kernel) macroPacked(ap []float32, pk *Packed, tile, c []float32, ldc, ic, mc, jc, nc, pc, kc int, acc bool) {
	mr, nr := kr.mr, kr.nr
	tiles := (mc + mr - 1) / mr
	for jr := 0; jr < nc; jr += nr {
		s := (jc + jr) / nr
		cols := min(nr, nc-jr)
		var next []byte
		if jr+nr < nc && kr.path != PathGeneric {
			next = pk.panelBytes((s+1)*pk.k*nr+pc*nr, kc*nr)
		}
		step := (len(next)/64 + tiles - 1) / tiles * 64
		for t, ir := 0, 0; ir < mc; t, ir = t+1, ir+mr {
			if lo := t * step; lo < len(next) {
				prefetchRange(next[lo:min(len(next), lo+step)])
			}
			as := ap[ir*kc : (ir+mr)*kc]
			rows := min(mr, mc-ir)
			off := (ic+ir)*ldc + jc + jr
			if rows == mr && cols == nr {
				kr.panelTile(pk, s, pc, kc, as, c[off:], ldc, acc, false)
				continue
			}
			kr.panelTile(pk, s, pc, kc, as, tile, nr, false, cols <= nr/2)
			for i := 0; i < rows; i++ {
				dst := c[off+i*ldc : off+i*ldc+cols]
				src := tile[i*nr : i*nr+cols]
				if acc {
					for j, v := range src {
						dst[j] += v
					}
				} else {
					copy(dst, src)
				}
			}
		}
	}
}

// maxSharedA bounds the float32 elements of a left operand runPacked packs
// once for all column blocks (16 MiB); a larger one is packed per item.
const maxSharedA = 1 << 22

// panelL2 is the most bytes of B (kc × the columns of one item) an item
// keeps in L2 while it walks its row slivers.
const panelL2 = 512 << 10

// runPacked computes a product whose B is a Packed weight. There is no B
// packing phase, so the work is one grid of (row block, column block)
// items handed out by a counter, each over the whole depth, with no
// barrier between panels: a worker slowed by another process simply takes
// fewer items. The grid is chosen for memory traffic: every row block
// reads all of B (from L3, or DRAM for a large weight), every column block
// all of A, so a tall product is split by rows and a weight-heavy one (the
// deep levels of a UNet: 128 rows against a 1280×11520 weight) by columns,
// with A then packed once, shared, before the grid.
func (j *job) runPacked(threads int) {
	e, p := j.e, &j.p
	kr := &e.k
	j.c, j.a, j.b = p.operands(0)
	pk := j.b.packed
	mTiles := (p.m + kr.mr - 1) / kr.mr
	nSl := (p.n + kr.nr - 1) / kr.nr
	target := 1
	if threads > 1 {
		target = 4 * threads
	}
	elt := int64(2)
	if pk.dtype == F32 {
		elt = 4
	}
	bBytes := int64(nSl*kr.nr) * int64(p.k) * elt
	aBytes := int64(mTiles*kr.mr) * int64(p.k) * 4
	minC := int((int64(nSl*kr.nr)*int64(kr.kc)*elt + panelL2 - 1) / panelL2)
	minC = max(1, min(nSl, minC))
	share := mTiles*kr.mr*p.k <= maxSharedA
	rows, cols, best := 1, minC, int64(-1)
	for r := 1; r <= min(mTiles, max(target, 1)); r++ {
		c := min(nSl, max(minC, (target+r-1)/r))
		cost := int64(r)*bBytes + int64(c)*aBytes
		if c > 1 && !share {
			cost += int64(c) * aBytes // packed again by every column block
		}
		if best < 0 || cost < best {
			rows, cols, best = r, c, cost
		}
	}
	mbT := (mTiles + rows - 1) / rows
	nbS := (nSl + cols - 1) / cols
	j.blk, j.nc = mbT*kr.mr, nbS*kr.nr
	j.rowBlocks = (mTiles + mbT - 1) / mbT
	cols = (nSl + nbS - 1) / nbS
	j.kc = kr.kc
	j.sharedA = nil
	if cols > 1 && share {
		buf := e.getAPanel(mTiles * kr.mr * p.k)
		defer e.apanels.put(buf)
		j.sharedA = (*buf)[:mTiles*kr.mr*p.k]
		j.mPad = mTiles * kr.mr
		panels := (p.k + j.kc - 1) / j.kc
		j.aGroups = (mTiles + 7) / 8
		j.do(phasePackA, panels*j.aGroups, threads)
	}
	j.do(phasePacked, j.rowBlocks*cols, threads)
}

// packAGroup packs row slivers [8g, 8g+8) of panel i/aGroups of the shared A.
func (j *job) packAGroup(i int) {
	kr, p := &j.e.k, &j.p
	pc := i / j.aGroups * j.kc
	kc := min(j.kc, p.k-pc)
	g := i % j.aGroups
	ic := g * 8 * kr.mr
	mc := min(8*kr.mr, p.m-ic)
	if mc <= 0 {
		return
	}
	kr.packA(j.sharedA[pc*j.mPad+ic*kc:], &j.a, ic, mc, pc, kc)
}

// packedItem computes item i of runPacked's grid: one row block against
// one column block, over the whole depth, in row chunks of at most mc so
// that a chunk of A and the item's panel of B share L2.
func (j *job) packedItem(ws *workspace, i int) {
	kr, p := &j.e.k, &j.p
	cb, rb := i/j.rowBlocks, i%j.rowBlocks
	i0, jc := rb*j.blk, cb*j.nc
	i1, nc := min(p.m, i0+j.blk), min(j.nc, p.n-jc)
	if i1 <= i0 || nc <= 0 {
		return
	}
	pk := j.b.packed
	for pc := 0; pc < p.k; pc += j.kc {
		kc := min(j.kc, p.k-pc)
		for ic := i0; ic < i1; ic += kr.mc {
			mc := min(kr.mc, i1-ic)
			var ap []float32
			if j.sharedA != nil {
				ap = j.sharedA[pc*j.mPad+ic*kc:]
			} else {
				kr.packA(ws.a, &j.a, ic, mc, pc, kc)
				ap = ws.a
			}
			kr.macroPacked(ap, pk, ws.tile, j.c, p.ldc, ic, mc, jc, nc, pc, kc, p.acc || pc > 0)
		}
	}
}

// getAPanel returns a pooled buffer of at least n elements.
func (e *Engine) getAPanel(n int) *[]float32 {
	if b, ok := e.apanels.get(func(b *[]float32) bool { return cap(*b) >= n }); ok {
		return b
	}
	b := make([]float32, n)
	return &b
}

// PackedF32 makes an F32 Packed of shape n×k whose panels fill writes directly: fill
// gets the zeroed panel storage and nr, and puts element (j, p) of the weight at
// (j/nr)·k·nr + p·nr + j%nr (rows past n stay zero). For weights computed rather than
// stored (the Winograd transform of a convolution's kernels), this skips a row-major
// copy and its transposition.
func (e *Engine) PackedF32(n, k int, fill func(panel []float32, nr int)) (*Packed, error) {
	if !e.CanPack(F32) {
		return nil, fmt.Errorf("gemm: path %s (bf16 %v) has no panels", e.k.path, e.k.pairs)
	}
	if n <= 0 || k <= 0 {
		return nil, fmt.Errorf("gemm: cannot pack an empty %d×%d weight", n, k)
	}
	nr := e.k.nr
	p := &Packed{n: n, k: k, nr: nr, path: e.k.path, dtype: F32, f32: make([]float32, (n+nr-1)/nr*nr*k)}
	adviseHuge(unsafe.Pointer(unsafe.SliceData(p.f32)), 4*len(p.f32))
	fill(p.f32, nr)
	return p, nil
}

// widenCalibration holds, per kernel path, whether 16-bit panels are better
// widened: measured once per process (about a millisecond), read-only after.
var widenCalibration = [...]func() bool{
	PathAVX512: sync.OnceValue(func() bool { return measureWiden(PathAVX512) }),
	PathAVX2:   sync.OnceValue(func() bool { return measureWiden(PathAVX2) }),
}

// widenPays reports the calibration of path p (false where there is none).
func widenPays(p Path) bool {
	if int(p) < len(widenCalibration) && widenCalibration[p] != nil {
		return widenCalibration[p]()
	}
	return false
}

// measureWiden times the path's float32 micro-kernel against its F16-panel
// one on slivers in L1, best of five interleaved rounds of each, and
// reports whether the F16 one is more than 5 % slower.
func measureWiden(p Path) bool {
	k, err := selectKernel(p)
	if err != nil || k.tilePH == nil {
		return false
	}
	const kc, calls = 256, 400
	a := make([]float32, kc*k.mr)
	b32 := make([]float32, kc*k.nr)
	b16 := make([]uint16, kc*k.nr)
	c := make([]float32, k.mr*k.nr)
	best32, best16 := time.Duration(math.MaxInt64), time.Duration(math.MaxInt64)
	for range 5 {
		t := time.Now()
		for range calls {
			k.tile(kc, a, b32, c, k.nr, false)
		}
		best32 = min(best32, time.Since(t))
		t = time.Now()
		for range calls {
			k.tilePH(kc, a, b16, c, k.nr, false)
		}
		best16 = min(best16, time.Since(t))
	}
	return best16 > best32+best32/20
}

// PanelsF32 returns a Packed over caller-owned float32 panel storage of an
// n×k weight (len(panel) ≥ ceil(n/nr)·nr·k, laid out as Packed describes:
// sliver s, step p, row j at s·k·nr + p·nr + j). The caller fills it, for
// operands made per call such as attention's keys and values, and keeps
// it unchanged while the Packed is used.
func (e *Engine) PanelsF32(n, k int, panel []float32) (Packed, error) {
	if !e.CanPack(F32) {
		return Packed{}, fmt.Errorf("gemm: path %s (bf16 %v) has no panels", e.k.path, e.k.pairs)
	}
	nr := e.k.nr
	if n <= 0 || k <= 0 || len(panel) < (n+nr-1)/nr*nr*k {
		return Packed{}, fmt.Errorf("gemm: %d panel elements for a %d×%d weight", len(panel), n, k)
	}
	return Packed{n: n, k: k, nr: nr, path: e.k.path, dtype: F32, f32: panel}, nil
}

// PanelWidth is the number of weight rows per packed sliver (nr).
func (e *Engine) PanelWidth() int { return e.k.nr }

// PackedA is a left operand laid out once in the micro-kernel's row slivers
// (mr rows, the whole depth k, k-major), so that several products with it
// skip packing it again (attention's query tile against every key block).
type PackedA struct {
	m, k int
	data []float32
}

// PackA lays out rows [0, m) of the m×k row-major a (row stride lda) into
// dst, which needs at least ceil(m/mr)·mr·k elements, and returns it.
func (e *Engine) PackA(m, k int, a []float32, lda int, dst []float32) (PackedA, error) {
	if err := e.check(); err != nil {
		return PackedA{}, err
	}
	if m < 0 || k <= 0 {
		return PackedA{}, fmt.Errorf("gemm: pack A of %d×%d", m, k)
	}
	if err := checkMatrix("A", a, m, k, lda, 1, 0); err != nil {
		return PackedA{}, err
	}
	mr := e.k.mr
	need := (m + mr - 1) / mr * mr * k
	if len(dst) < need {
		return PackedA{}, fmt.Errorf("gemm: pack A: %d elements for %d", len(dst), need)
	}
	if m > 0 {
		e.k.packA(dst, &aSource{data: a, ld: lda}, 0, m, 0, k)
	}
	return PackedA{m: m, k: k, data: dst[:need]}, nil
}

// MulPacked computes C (+)= A·W[j0:j1, k0:k1]ᵀ on the calling goroutine: A
// a PackedA of depth k1−k0, W a Packed weight, C row i column j−j0 at
// c[i·ldc + j − j0]. j0 must be a multiple of PanelWidth. Attention runs
// its score and value products this way, packing nothing per call.
func (e *Engine) MulPacked(a *PackedA, w *Packed, k0, k1, j0, j1 int, c []float32, ldc int, acc bool) error {
	if err := e.check(); err != nil {
		return err
	}
	kr := &e.k
	if w == nil || w.path != kr.path || w.nr != kr.nr || kr.pairs || (w.dtype != F32 && !e.CanPack(w.dtype)) {
		return fmt.Errorf("gemm: MulPacked: panels this engine cannot read")
	}
	if k0 < 0 || k1 > w.k || k1-k0 != a.k || j0 < 0 || j1 > w.n || j0 > j1 || j0%kr.nr != 0 {
		return fmt.Errorf("gemm: MulPacked: depth %d…%d, columns %d…%d of a %d×%d weight with A of depth %d", k0, k1, j0, j1, w.n, w.k, a.k)
	}
	if a.m == 0 || j1 == j0 {
		return nil
	}
	if err := checkMatrix("C", c, a.m, j1-j0, ldc, 1, 0); err != nil {
		return err
	}
	mr, nr, kc := kr.mr, kr.nr, a.k
	ws := e.getWorkspace()
	defer e.bufs.put(ws)
	tile := ws.tile
	for jr := 0; jr < j1-j0; jr += nr {
		s := (j0 + jr) / nr
		cols := min(nr, j1-j0-jr)
		for ir := 0; ir < a.m; ir += mr {
			as := a.data[ir*kc : (ir+mr)*kc]
			rows := min(mr, a.m-ir)
			off := ir*ldc + jr
			if rows == mr && cols == nr {
				kr.panelTile(w, s, k0, kc, as, c[off:], ldc, acc, false)
				continue
			}
			kr.panelTile(w, s, k0, kc, as, tile, nr, false, cols <= nr/2)
			for i := 0; i < rows; i++ {
				dst := c[off+i*ldc : off+i*ldc+cols]
				src := tile[i*nr : i*nr+cols]
				if acc {
					for j, v := range src {
						dst[j] += v
					}
				} else {
					copy(dst, src)
				}
			}
		}
	}
	return nil
}

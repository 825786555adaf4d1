package gemm

import (
	"math"
	"unsafe"
)

// kernel is one micro-kernel family with its register tile (mr×nr) and
// cache blocking (kc, mc, nc: the fixed values from selectKernel, replaced
// in New by the derived or requested ones; codex/gemm.md, "Blocking").
type kernel struct {
	path       Path
	mr, nr     int
	kc, mc, nc int
	// tile computes the mr×nr tile C = Ap·Bp (or C += Ap·Bp when acc) from
	// kc steps of a packed A sliver (kc×mr, k-major) and a packed B sliver
	// (kc×nr, k-major). kc ≥ 1; ldc is in elements.
	tile func(kc int, a, b, c []float32, ldc int, acc bool)
	// half, when set, computes only the left mr×nr/2 of a tile (same
	// packed slivers): edge slivers with at most nr/2 live columns, such as
	// attention's head width 40 = 32 + 8, then cost half.
	half func(kc int, a, b, c []float32, ldc int, acc bool)
	// dot returns Σ a[i]·b[i] over len(a) (b at least as long).
	dot func(a, b []float32) float32
	// cvtF16 and cvtBF16 convert len(dst) 16-bit floats from little-endian
	// src to float32.
	cvtF16, cvtBF16 func(dst []float32, src []byte)
	// packT packs rows rows of kc columns (row stride ld) into a k-major
	// sliver of width stride: d[p·stride+i] = src[i·ld+p].
	packT func(d, src []float32, ld, kc, rows, stride int)
	// pairs marks a bfloat16 dot-product kernel: packed slivers are
	// rewritten by pairsFn (toBF16Pairs or a vector version) before tile
	// reads them.
	pairs   bool
	pairsFn func(x []float32, kc, w int)
	// decQ8_0 and decQ4_0 convert len(dst)/32 whole blocks.
	decQ8_0, decQ4_0 func(dst []float32, src []byte)
	// decQ4K converts len(dst)/256 whole Q4_K super-blocks.
	decQ4K func(dst []float32, src []byte)
	// tilePH and halfPH are tile and half reading a Packed F16 sliver,
	// tilePB and halfPB a Packed BF16 one (nil: such panels are not used).
	tilePH, halfPH, tilePB, halfPB func(kc int, a []float32, b []uint16, c []float32, ldc int, acc bool)
	// narrow16, when set, writes len(dst) float32 values (a multiple of 16)
	// that came from binary16 (or bfloat16, with bf16) back in that format.
	narrow16 func(dst []uint16, src []float32, bf16 bool)
	// gather, when set (mr = 12), packs a full sliver of a gathered A:
	// d[p·mr+i] = src[offs[p]+i] for p < len(offs), i < mr.
	gather func(d, src []float32, offs []int)
}

// aSource is the left operand: m×k, or stored k×m when trans. With offs set
// (LinearGather, always trans) column p starts at data[offs[p]] instead of
// data[p·ld].
type aSource struct {
	data  []float32
	ld    int
	trans bool
	offs  []int
}

// bSource is the right operand k×n: float32 (stored n×k when trans) or,
// when w is set, the transpose of a stored weight.
type bSource struct {
	f32    []float32
	ld     int
	trans  bool
	w      Weight // the stored weight when isW (a value, so that no pointer to a caller's Weight reaches a pooled job)
	isW    bool
	wld    int     // weight row stride in bytes
	packed *Packed // the weight's panels, when set (runPacked)
}

type problem struct {
	m, n, k int
	acc     bool
	batch   Batch
	a       aSource
	b       bSource
	c       []float32
	ldc     int
}

// workspace holds one goroutine's packing buffers; the Engine pools them so
// the steady state does not allocate.
type workspace struct {
	a, b, tile, row, rows []float32
}

func (e *Engine) getWorkspace() *workspace {
	if w, ok := e.bufs.get(nil); ok {
		return w
	}
	kr := e.k
	kc := kcAlloc(kr.kc)
	return &workspace{
		a:    make([]float32, kr.mc*kc),
		b:    make([]float32, kc*kr.nc),
		tile: make([]float32, kr.mr*kr.nr),
		row:  make([]float32, kc),
		rows: make([]float32, kr.nr*kc),
	}
}

// maxBlockSize is the largest weight block (Q4_K's 256): a weight panel
// must start on a block boundary, so its depth is a multiple of the block.
const maxBlockSize = 256

// kcAlloc is the panel depth the workspace is sized for: the kernel's kc,
// rounded up so that a stored weight's panel depth (panelDepth) fits too.
func kcAlloc(kc int) int { return (kc + maxBlockSize - 1) / maxBlockSize * maxBlockSize }

// panelDepth is the kc used for problem p: the kernel's, or for a stored
// weight the nearest multiple of its block size not above kcAlloc.
func panelDepth(kc int, p *problem) int {
	if !p.b.isW {
		return kc
	}
	bs := p.b.w.DType.BlockSize()
	return max(bs, kc/bs*bs)
}

// task is a rectangle of one product of the batch.
type task struct {
	batch          int
	m0, m1, n0, n1 int
}

// minParallelFlops is the size below which a call stays on the caller's
// goroutine: starting a worker costs about a microsecond.
const minParallelFlops = 1 << 21

func (e *Engine) run(p *problem) {
	if p.m == 0 || p.n == 0 || p.batch.Count == 0 {
		return
	}
	if p.k == 0 {
		if !p.acc {
			for i := 0; i < p.batch.Count; i++ {
				c := p.c[i*p.batch.StrideC:]
				for r := 0; r < p.m; r++ {
					clear(c[r*p.ldc : r*p.ldc+p.n])
				}
			}
		}
		return
	}
	kr := &e.k
	threads := e.threads
	if int64(p.m)*int64(p.n)*int64(p.k)*int64(p.batch.Count) < minParallelFlops {
		threads = 1
	}
	j := e.newJob(p)
	defer e.jobs.put(j)
	if p.b.packed != nil {
		j.runPacked(threads)
		return
	}
	if !e.noShare && p.batch.Count == 1 && threads > 1 && (p.m+kr.mr-1)/kr.mr >= 4*threads {
		j.runShared(threads)
		return
	}
	// Split each product into mParts×nParts rectangles aligned to the
	// register tile, so that count×parts covers the threads. Each
	// rectangle packs its own panels: no barriers, and the duplicated
	// packing is O(m·k + k·n) against O(m·n·k) arithmetic.
	j.mParts, j.nParts = 1, 1
	if need := (threads + p.batch.Count - 1) / p.batch.Count; need > 1 {
		mTiles := (p.m + kr.mr - 1) / kr.mr
		nTiles := (p.n + kr.nr - 1) / kr.nr
		// Prefer splitting n for a stored weight (each part then converts
		// only its own rows of W) and otherwise the dimension with more tiles.
		if (p.b.isW && nTiles >= need) || nTiles >= mTiles {
			j.nParts = min(need, nTiles)
		} else {
			j.mParts = min(need, mTiles)
		}
	}
	j.do(phaseTasks, p.batch.Count*j.mParts*j.nParts, threads)
}

// taskAt returns rectangle i of the mParts×nParts split of each product.
func (j *job) taskAt(i int) task {
	kr, p := &j.e.k, &j.p
	b := i / (j.mParts * j.nParts)
	r := i % (j.mParts * j.nParts)
	mi, ni := r/j.nParts, r%j.nParts
	return task{
		batch: b,
		m0:    splitPoint(p.m, j.mParts, mi, kr.mr), m1: splitPoint(p.m, j.mParts, mi+1, kr.mr),
		n0: splitPoint(p.n, j.nParts, ni, kr.nr), n1: splitPoint(p.n, j.nParts, ni+1, kr.nr),
	}
}

// splitPoint returns the start of part i of n split into parts pieces,
// rounded to a multiple of align (the last part takes the remainder).
func splitPoint(n, parts, i, align int) int {
	if i >= parts {
		return n
	}
	tiles := (n + align - 1) / align
	return min(n, tiles*i/parts*align)
}

// compute runs the blocked loops over one task: jc (nc columns) → pc (kc
// deep: pack B) → ic (mc rows: pack A) → macro-kernel.
func (e *Engine) compute(p *problem, t task, ws *workspace) {
	kr := &e.k
	c, a, b := p.operands(t.batch)
	depth := panelDepth(kr.kc, p)
	for jc := t.n0; jc < t.n1; jc += kr.nc {
		nc := min(kr.nc, t.n1-jc)
		for pc := 0; pc < p.k; pc += depth {
			kc := min(depth, p.k-pc)
			kr.packB(ws.b, ws.rows, &b, pc, kc, jc, nc, 0, (nc+kr.nr-1)/kr.nr)
			kr.toPairs(ws.b, kc, kr.nr, 0, (nc+kr.nr-1)/kr.nr)
			for ic := t.m0; ic < t.m1; ic += kr.mc {
				mc := min(kr.mc, t.m1-ic)
				kr.packA(ws.a, &a, ic, mc, pc, kc)
				kr.toPairs(ws.a, kc, kr.mr, 0, (mc+kr.mr-1)/kr.mr)
				kr.macro(ws.a, ws.b, ws.tile, c, p.ldc, ic, mc, jc, nc, kc, p.acc || pc > 0)
			}
		}
	}
}

// operands returns C, A and B of product i of the batch.
func (p *problem) operands(i int) ([]float32, aSource, bSource) {
	a, b := p.a, p.b
	a.data = a.data[i*p.batch.StrideA:]
	if !b.isW {
		b.f32 = b.f32[i*p.batch.StrideB:]
	}
	return p.c[i*p.batch.StrideC:], a, b
}

// macro multiplies a packed mc×kc block of A by a packed kc×nc block of B
// into C[ic:ic+mc, jc:jc+nc]: ir (one A sliver, kept in L1) → jr (B
// slivers streamed from L2) → micro-kernel. Edge tiles go through tile, a
// scratch mr×nr buffer.
func (kr *kernel) macro(ap, bp, tile, c []float32, ldc, ic, mc, jc, nc, kc int, acc bool) {
	mr, nr := kr.mr, kr.nr
	for ir := 0; ir < mc; ir += mr {
		as := ap[ir*kc : (ir+mr)*kc]
		rows := min(mr, mc-ir)
		for jr := 0; jr < nc; jr += nr {
			bs := bp[jr*kc : (jr+nr)*kc]
			cols := min(nr, nc-jr)
			off := (ic+ir)*ldc + jc + jr
			if rows == mr && cols == nr {
				kr.tile(kc, as, bs, c[off:], ldc, acc)
				continue
			}
			if kr.half != nil && cols <= nr/2 {
				kr.half(kc, as, bs, tile, nr, false)
			} else {
				kr.tile(kc, as, bs, tile, nr, false)
			}
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

// toPairs rewrites slivers [s0, s1) of a packed buffer (each kc×w,
// k-major) into (kc+1)/2 steps of w bfloat16 pairs when the kernel wants
// pairs; see toBF16Pairs.
func (kr *kernel) toPairs(buf []float32, kc, w, s0, s1 int) {
	if !kr.pairs {
		return
	}
	for s := s0; s < s1; s++ {
		kr.pairsFn(buf[s*kc*w:(s+1)*kc*w], kc, w)
	}
}

// toBF16Pairs rewrites a kc×w k-major sliver in place as (kc+1)/2 rows of
// w 32-bit pairs: element (p2, i) holds bf16(x[2p2][i]) in its low half
// and bf16(x[2p2+1][i]) (zero past kc) in its high half, the operand
// layout of VDPBF16PS. Writing pair q only overwrites inputs already read,
// so no scratch is needed.
func toBF16Pairs(x []float32, kc, w int) {
	u := unsafe.Slice((*uint32)(unsafe.Pointer(unsafe.SliceData(x))), len(x))
	for p2 := 0; p2 < (kc+1)/2; p2++ {
		for i := 0; i < w; i++ {
			lo := bf16Round(x[2*p2*w+i])
			var hi uint32
			if 2*p2+1 < kc {
				hi = bf16Round(x[(2*p2+1)*w+i])
			}
			u[p2*w+i] = lo | hi<<16
		}
	}
}

// bf16Round rounds x to bfloat16 (round to nearest, ties to even; NaN
// stays NaN) and returns its 16 bits.
func bf16Round(x float32) uint32 {
	b := math.Float32bits(x)
	if b&0x7fffffff > 0x7f800000 {
		return b>>16 | 0x40
	}
	return (b + 0x7fff + (b>>16)&1) >> 16
}

// packA copies rows [ic, ic+mc) × columns [pc, pc+kc) of op(A) into dst as
// ceil(mc/mr) slivers, each kc×mr k-major, zero-padding the last sliver.
func (kr *kernel) packA(dst []float32, a *aSource, ic, mc, pc, kc int) {
	mr := kr.mr
	for s := 0; s < mc; s += mr {
		rows := min(mr, mc-s)
		d := dst[s*kc : (s+mr)*kc]
		if a.offs != nil && rows == mr && kr.gather != nil {
			kr.gather(d, a.data[ic+s:], a.offs[pc:pc+kc])
			continue
		}
		if a.trans {
			// A stored k×m: a sliver row of kc×mr is contiguous in the source.
			for p := 0; p < kc; p++ {
				base := (pc + p) * a.ld
				if a.offs != nil {
					base = a.offs[pc+p]
				}
				src := a.data[base+ic+s:]
				dp := d[p*mr : p*mr+mr]
				copy(dp, src[:rows])
				clear(dp[rows:])
			}
			continue
		}
		if rows == mr {
			kr.packT(d, a.data[(ic+s)*a.ld+pc:], a.ld, kc, mr, mr)
			continue
		}
		for i := 0; i < rows; i++ {
			src := a.data[(ic+s+i)*a.ld+pc : (ic+s+i)*a.ld+pc+kc]
			for p, v := range src {
				d[p*mr+i] = v
			}
		}
		for i := rows; i < mr; i++ {
			for p := 0; p < kc; p++ {
				d[p*mr+i] = 0
			}
		}
	}
}

// prefetchSliver prefetches the runs [pc, pc+kc) of the rows weight rows
// starting at row r0 (nothing when rows ≤ 0).
func (kr *kernel) prefetchSliver(b *bSource, r0, rows, pc, kc int) {
	if rows <= 0 || kr.path == PathGeneric {
		return
	}
	off, _ := b.w.DType.RowBytes(pc)
	n, _ := b.w.DType.RowBytes(kc)
	for j := 0; j < rows; j++ {
		o := (r0+j)*b.wld + off
		prefetchRange(b.w.Data[o:min(len(b.w.Data), o+n)])
	}
}

// packTGo is the portable packT, one source row at a time (the amd64
// AVX-512 path transposes 4×4 blocks in registers instead).
func packTGo(d, src []float32, ld, kc, rows, stride int) {
	d = d[:(kc-1)*stride+rows]
	for i := 0; i < rows; i++ {
		r := src[i*ld : i*ld+kc]
		for p, v := range r {
			d[p*stride+i] = v
		}
	}
}

// packB copies rows [pc, pc+kc) × columns [jc, jc+nc) of the k×n operand
// into dst as ceil(nc/nr) slivers, each kc×nr k-major, zero-padding the
// last sliver; only slivers [s0, s1) are written, so that several
// goroutines can share the packing of one block. A stored weight is converted to float32 here, one row
// sliver of nr row segments at a time (rows is scratch of nr·kc).
func (kr *kernel) packB(dst, rows []float32, b *bSource, pc, kc, jc, nc, s0, s1 int) {
	nr := kr.nr
	for s := s0 * nr; s < min(nc, s1*nr); s += nr {
		cols := min(nr, nc-s)
		d := dst[s*kc : (s+nr)*kc]
		switch {
		case b.isW && cols == nr:
			// Convert nr rows of W, then transpose them in one pass. Each row
			// contributes only a short run (kc elements) and the rows are far
			// apart, so the hardware prefetchers barely start before the next
			// row: ask for the next sliver's runs now, to arrive while this
			// one is converted.
			kr.prefetchSliver(b, jc+s+nr, min(nr, nc-s-nr), pc, kc)
			for j := 0; j < nr; j++ {
				kr.decodeRow(b.w.DType, rows[j*kc:(j+1)*kc], b.w.Data[(jc+s+j)*b.wld:], pc)
			}
			kr.packT(d, rows, kc, kc, nr, nr)
			continue
		case b.isW:
			r := rows[:kc]
			for j := 0; j < cols; j++ {
				kr.decodeRow(b.w.DType, r, b.w.Data[(jc+s+j)*b.wld:], pc)
				for p, v := range r {
					d[p*nr+j] = v
				}
			}
		case b.trans && cols == nr:
			kr.packT(d, b.f32[(jc+s)*b.ld+pc:], b.ld, kc, nr, nr)
			continue
		case b.trans:
			for j := 0; j < cols; j++ {
				src := b.f32[(jc+s+j)*b.ld+pc : (jc+s+j)*b.ld+pc+kc]
				for p, v := range src {
					d[p*nr+j] = v
				}
			}
		default:
			for p := 0; p < kc; p++ {
				src := b.f32[(pc+p)*b.ld+jc+s:]
				dp := d[p*nr : p*nr+nr]
				copy(dp, src[:cols])
				clear(dp[cols:])
			}
			continue
		}
		if cols < nr {
			for p := 0; p < kc; p++ {
				clear(d[p*nr+cols : p*nr+nr])
			}
		}
	}
}

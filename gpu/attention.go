package gpu

import (
	"fmt"
	"math"

	"github.com/forgeflow/forgeflow/gpu/internal/gemm"
)

// Attention returns softmax(q·kᵀ·scale + mask)·v for q (B, H, Lq, D), k (B, H, Lk, D),
// v (B, H, Lk, Dv): torch.nn.functional.scaled_dot_product_attention. mask (may be nil) is
// additive and broadcasts to (B, H, Lq, Lk); Causal masks key j > query i (PyTorch's
// top-left aligned tril). q, k, v may be strided views (e.g. a (B, L, H, D) projection
// permuted), as long as their last dim is contiguous.
//
// The cpu kernel is flash-style: queries in tiles of 256, keys in blocks of 256, a running
// max and sum per query (online softmax), so scratch memory is O(tile·block) per thread
// and never O(Lq·Lk).
func Attention(rt *Runtime, q, k, v, mask *Tensor, p AttentionParams) (*Tensor, error) {
	for _, t := range []*Tensor{q, k, v} {
		if t.dtype != F32 || len(t.shape) != 4 {
			return nil, fmt.Errorf("gpu: attention operand %s must be F32 (B, H, L, D)", t)
		}
	}
	b, h, lq, d := q.shape[0], q.shape[1], q.shape[2], q.shape[3]
	lk, dv := k.shape[2], v.shape[3]
	if k.shape[0] != b || v.shape[0] != b || k.shape[1] != h || v.shape[1] != h || k.shape[3] != d || v.shape[2] != lk {
		return nil, fmt.Errorf("gpu: attention shapes q %v k %v v %v do not match", q.shape, k.shape, v.shape)
	}
	if mask != nil {
		if mask.dtype != F32 || len(mask.shape) > 4 {
			return nil, fmt.Errorf("gpu: attention mask %s must be F32 with ≤4 dims", mask)
		}
		var sb [4]int
		bs, err := broadcastShape(sb[:], mask.shape, []int{b, h, lq, lk})
		if err != nil {
			return nil, fmt.Errorf("gpu: attention mask %v: %w", mask.shape, err)
		}
		if bs[0] != b || bs[1] != h || bs[2] != lq || bs[3] != lk {
			return nil, fmt.Errorf("gpu: attention mask %v does not broadcast to %v", mask.shape, []int{b, h, lq, lk})
		}
	}
	prep := func(t *Tensor) (*Tensor, error) {
		// used in place when its rows are contiguous and do not overlap (a broadcast
		// view's rows do)
		if (t.strides[3] == 1 || t.shape[3] <= 1) && (t.shape[2] <= 1 || t.strides[2] >= t.shape[3]) {
			return t.view(t.shape, t.strides, t.offset), nil
		}
		return Contiguous(rt, t)
	}
	in := make([]*Tensor, 0, 4)
	defer func() {
		for _, t := range in {
			t.Release()
		}
	}()
	for _, t := range []*Tensor{q, k, v} {
		pt, err := prep(t)
		if err != nil {
			return nil, err
		}
		in = append(in, pt)
	}
	if p.Scale == 0 {
		p.Scale = 1 / math.Sqrt(float64(d))
	}
	out, err := rt.Empty(F32, b, h, lq, dv)
	if err != nil {
		return nil, err
	}
	c := rt.call(out, in[0], in[1], in[2], mask)
	c.params.attention = p
	c.Params = &c.params.attention
	if err := rt.exec(OpAttention, c); err != nil {
		out.Release()
		return nil, err
	}
	return out, nil
}

const (
	attnTileQ = 256 // query rows per tile: amortises packing K and V over many queries
	attnTileK = 256
)

func cpuAttention(c *CPU, call *Call) error {
	q, k, v, mask, out := call.In[0], call.In[1], call.In[2], call.In[3], call.Out
	p := *call.Params.(*AttentionParams)
	b, h, lq, d := q.shape[0], q.shape[1], q.shape[2], q.shape[3]
	lk, dv := k.shape[2], v.shape[3]
	o := out.f32c()
	if len(o) == 0 {
		return nil
	}
	if lk == 0 {
		// softmax over no keys is undefined; PyTorch returns NaN rows
		for i := range o {
			o[i] = float32(math.NaN())
		}
		return nil
	}
	l := attnLoop{c: c, q: q, k: k, v: v, qs: q.f32(), o: o, d: d, dv: dv, h: h, lq: lq, lk: lk,
		causal: p.Causal, scale: float32(p.Scale)}
	if mask != nil {
		l.ms = mask.f32()
		shape := [4]int{b, h, lq, lk}
		broadcastStrides(l.mst[:], mask, shape[:])
	}
	l.e = c.mm.narrow
	if c.mm.err != nil {
		return fmt.Errorf("gpu: cpu: gemm: %w", c.mm.err)
	}
	// Every head's K and V are laid out once as GEMM panels (K as the weight of S = Q·Kᵀ,
	// V as the weight Vᵀ of O = P·V), and every query tile is packed once for all key
	// blocks: the products of the tiles then pack nothing but the probabilities P. Head
	// widths that are not a multiple of the 32-column panel (SD1.5's 40) end in a half
	// tile (12×16), so 40 costs 48 columns' work and 80 exactly 80.
	nr := l.e.PanelWidth()
	ksl, vsl := (lk+nr-1)/nr, (dv+nr-1)/nr
	l.kPanels = c.scratch.get(b * h * ksl * nr * max(d, 1))
	defer c.scratch.put(l.kPanels)
	l.vPanels = c.scratch.get(b * h * vsl * nr * lk)
	defer c.scratch.put(l.vPanels)
	l.kStride, l.vStride = ksl*nr*max(d, 1), vsl*nr*lk
	heads := c.attnHeads.get()
	defer c.attnHeads.put(heads)
	if cap(heads.kp) < b*h {
		heads.kp, heads.vp = make([]gemm.Packed, b*h), make([]gemm.Packed, b*h)
	}
	l.kp, l.vp = heads.kp[:b*h], heads.vp[:b*h]
	defer clear(l.kp)
	defer clear(l.vp)
	if err := forEach(c, b*h, 1, l, func(l *attnLoop, _, lo, hi int) error {
		for bh := lo; bh < hi; bh++ {
			if err := l.c.headPanels(l.e, &l.kp[bh], &l.vp[bh], l.kPanels[bh*l.kStride:], l.vPanels[bh*l.vStride:], l.k, l.v, bh/l.h, bh%l.h); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	l.tilesPerHead = (lq + attnTileQ - 1) / attnTileQ
	l.mrA = (attnTileQ + 11) / 12 * 12 // rows of a packed tile, a multiple of every kernel's mr
	// the workers' tiles in one buffer: one request per call whatever the workers' timing,
	// so the scratch pool's free lists stop growing after the first call
	items := b * h * l.tilesPerHead
	l.perWorker = attnTileQ*attnTileK + attnTileQ*max(dv, 1) + 2*attnTileQ + l.mrA*max(d, 1) + l.mrA*attnTileK
	l.scr = c.scratch.get(c.parts(items, 1) * l.perWorker)
	defer c.scratch.put(l.scr)
	return forEach(c, items, 1, l, attnTiles)
}

// attnLoop is cpuAttention's operands: the heads' K and V panels (kp, vp, laid out in
// kPanels and vPanels, kStride and vStride floats per head) and the query tiles.
type attnLoop struct {
	c                 *CPU
	e                 *gemm.Engine
	q, k, v           *Tensor
	qs, ms, o         []float32
	mst               [4]int
	d, dv, h, lq, lk  int
	causal            bool
	scale             float32
	kPanels, vPanels  []float32
	kStride, vStride  int
	kp, vp            []gemm.Packed
	tilesPerHead, mrA int
	scr               []float32 // perWorker floats of tiles for each worker
	perWorker         int
}

// attnHeads recycles cpuAttention's per-head panel descriptors.
type attnHeads struct{ kp, vp []gemm.Packed }

// attnTiles computes query tiles [lo, hi) (tile t: head t/tilesPerHead, rows from
// (t mod tilesPerHead)·attnTileQ) with an online softmax over blocks of keys.
func attnTiles(l *attnLoop, w, lo, hi int) error {
	c, e, q, qs, o := l.c, l.e, l.q, l.qs, l.o
	d, dv, h, lq, lk := l.d, l.dv, l.h, l.lq, l.lk
	kp, vp, ms, mst := l.kp, l.vp, l.ms, l.mst[:]
	causal, scale, tilesPerHead, mrA := l.causal, l.scale, l.tilesPerHead, l.mrA
	scr := l.scr[w*l.perWorker : (w+1)*l.perWorker]
	s, scr := scr[:attnTileQ*attnTileK], scr[attnTileQ*attnTileK:]
	acc, scr := scr[:attnTileQ*max(dv, 1)], scr[attnTileQ*max(dv, 1):]
	rm, scr := scr[:2*attnTileQ], scr[2*attnTileQ:]
	qpack, ppack := scr[:mrA*max(d, 1)], scr[mrA*max(d, 1):]
	for it := lo; it < hi; it++ {
		bh, tile := it/tilesPerHead, it%tilesPerHead
		bi, hi2 := bh/h, bh%h
		i0 := tile * attnTileQ
		nq := min(attnTileQ, lq-i0)
		mrow, lsum := rm[:nq], rm[attnTileQ:attnTileQ+nq]
		for i := range mrow {
			mrow[i] = float32(math.Inf(-1))
			lsum[i] = 0
		}
		oacc := acc[:nq*dv]
		clear(oacc)
		var qa gemm.PackedA
		if d > 0 {
			var err error
			qa, err = e.PackA(nq, d, qs[bi*q.strides[0]+hi2*q.strides[1]+i0*q.strides[2]:], rowStride(q), qpack)
			if err != nil {
				return err
			}
		}
		kend := lk
		if causal {
			kend = min(lk, i0+nq)
		}
		for kb := 0; kb < kend; kb += attnTileK {
			nk := min(attnTileK, kend-kb)
			st := s[:nq*attnTileK]
			if d == 0 {
				clear(st)
			} else if err := e.MulPacked(&qa, &kp[bh], 0, d, kb, kb+nk, st, attnTileK, false); err != nil {
				return err
			}
			for i := 0; i < nq; i++ {
				row := st[i*attnTileK : i*attnTileK+nk]
				// Plain rows stay in the raw score domain (max and exp take the
				// scale); masked rows are scaled and masked first.
				rs := scale
				if ms != nil || causal || scale <= 0 {
					var mo int
					if ms != nil {
						mo = bi*mst[0] + hi2*mst[1] + (i0+i)*mst[2]
					}
					for j := range row {
						x := row[j] * scale
						if ms != nil {
							x += ms[mo+(kb+j)*mst[3]]
						}
						if causal && kb+j > i0+i {
							x = float32(math.Inf(-1))
						}
						row[j] = x
					}
					rs = 1
				}
				mnew := max(mrow[i], c.rk.max(row))
				if math.IsInf(float64(mnew), -1) {
					clear(row) // nothing visible yet: contributes no weight
					continue
				}
				if mrow[i] != mnew {
					corr := expf((mrow[i] - mnew) * rs)
					lsum[i] *= corr
					orow := oacc[i*dv : (i+1)*dv]
					for j := range orow {
						orow[j] *= corr
					}
				}
				lsum[i] += c.rk.expScale(row, rs, mnew)
				mrow[i] = mnew
			}
			if dv == 0 {
				continue
			}
			pa, err := e.PackA(nq, nk, st, attnTileK, ppack)
			if err == nil {
				err = e.MulPacked(&pa, &vp[bh], kb, kb+nk, 0, dv, oacc, dv, true)
			}
			if err != nil {
				return err
			}
		}
		dst := o[(bh*lq+i0)*dv:]
		for i := 0; i < nq; i++ {
			inv := 1 / lsum[i] // 0 when every key was masked: NaN like PyTorch
			for j := 0; j < dv; j++ {
				dst[i*dv+j] = oacc[i*dv+j] * inv
			}
		}
	}
	return nil
}

// rowStride is the element distance between rows of a (B, H, L, D) operand whose last
// dim is contiguous (its L stride, or D for a single row, whose stride is never used).
func rowStride(t *Tensor) int {
	if t.shape[2] <= 1 {
		return max(t.strides[2], t.shape[3], 1)
	}
	return t.strides[2]
}

// headPanels lays out head (bi, hi) of k (B, H, Lk, D) as the panels of a weight with
// Lk rows (the keys: S = Q·Kᵀ) and of v (B, H, Lk, Dv) as the panels of the weight Vᵀ
// with Dv rows (O = P·V), into kst and vst, and wraps them in kp and vp.
func (c *CPU) headPanels(e *gemm.Engine, kp, vp *gemm.Packed, kst, vst []float32, k, v *Tensor, bi, hi int) error {
	nr := e.PanelWidth()
	lk, d, dv := k.shape[2], k.shape[3], v.shape[3]
	if d > 0 {
		ks, kld := k.f32()[bi*k.strides[0]+hi*k.strides[1]:], rowStride(k)
		for s := 0; s*nr < lk; s++ {
			rows := min(nr, lk-s*nr)
			dst := kst[s*d*nr : (s+1)*d*nr]
			// dst[p·nr + j] = K[s·nr+j][p]
			if err := c.mm.transpose(rows, d, ks[s*nr*kld:], kld, dst, nr); err != nil {
				return err
			}
			if rows < nr {
				for p := 0; p < d; p++ {
					clear(dst[p*nr+rows : (p+1)*nr])
				}
			}
		}
		var err error
		if *kp, err = e.PanelsF32(lk, d, kst); err != nil {
			return err
		}
	}
	if dv > 0 {
		vs, vld := v.f32()[bi*v.strides[0]+hi*v.strides[1]:], rowStride(v)
		for s := 0; s*nr < dv; s++ {
			cols := min(nr, dv-s*nr)
			dst := vst[s*lk*nr : (s+1)*lk*nr]
			// dst[p·nr + j] = V[p][s·nr+j]
			for p := 0; p < lk; p++ {
				copy(dst[p*nr:p*nr+cols], vs[p*vld+s*nr:p*vld+s*nr+cols])
				clear(dst[p*nr+cols : (p+1)*nr])
			}
		}
		var err error
		if *vp, err = e.PanelsF32(dv, lk, vst); err != nil {
			return err
		}
	}
	return nil
}

// expf is a float32 exp accurate to about 1 ulp: x = n·ln2 + r with |r| ≤ ln2/2, a
// degree-7 Taylor polynomial for e^r, and 2^n put into the exponent bits. It is the
// inner loop of attention's softmax, where math.Exp (float64) would cost more than
// the matrix products.
func expf(x float32) float32 {
	switch {
	case x != x:
		return x
	case x < -87.33654:
		if x < -103.97 {
			return 0
		}
		// subnormal result: e^x = e^(x + 64·ln2)·2^-64
		return expf(x+44.36141956) * 5.421011e-20
	case x > 88.72283:
		return float32(math.Inf(1))
	}
	const (
		log2e = 1.44269504088896341
		ln2hi = 0.693359375
		ln2lo = -2.12194440e-4
	)
	n := float32(math.Floor(float64(x*log2e + 0.5)))
	r := x - n*ln2hi
	r -= n * ln2lo
	p := float32(1.0 / 5040)
	p = p*r + 1.0/720
	p = p*r + 1.0/120
	p = p*r + 1.0/24
	p = p*r + 1.0/6
	p = p*r + 0.5
	p = p*r + 1
	p = p*r + 1
	ni := int32(n)
	if ni > 127 { // x close to the overflow bound
		return p * 2 * math.Float32frombits(uint32(ni-1+127)<<23)
	}
	return p * math.Float32frombits(uint32(ni+127)<<23)
}

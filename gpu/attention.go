package gpu

import (
	"fmt"
	"math"
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
		if _, err := broadcastShape(mask.shape, []int{b, h, lq, lk}); err != nil {
			return nil, fmt.Errorf("gpu: attention mask %v: %w", mask.shape, err)
		}
		if bs, _ := broadcastShape(mask.shape, []int{b, h, lq, lk}); bs[0] != b || bs[1] != h || bs[2] != lq || bs[3] != lk {
			return nil, fmt.Errorf("gpu: attention mask %v does not broadcast to %v", mask.shape, []int{b, h, lq, lk})
		}
	}
	prep := func(t *Tensor) (*Tensor, error) {
		if t.strides[3] == 1 || t.shape[3] <= 1 {
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
	if err := rt.run(OpAttention, &Call{In: []*Tensor{in[0], in[1], in[2], mask}, Out: out, Params: p}); err != nil {
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
	p := call.Params.(AttentionParams)
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
	var ms []float32
	var mst []int
	if mask != nil {
		ms = mask.f32()
		mst = broadcastStrides(mask, []int{b, h, lq, lk})
	}
	qs, ks, vs := q.f32(), k.f32(), v.f32()
	qld, vld := max(q.strides[2], d), max(v.strides[2], dv)
	// Kᵀ per head (D × Lk), built once and shared by every query tile of the head: the
	// GEMM then packs plain rows instead of gathering a transposed K for every tile.
	kt := c.scratch.get(b * h * d * lk)
	defer c.scratch.put(kt)
	if err := c.perHeadT(kt, ks, k.strides, b, h, lk, d); err != nil {
		return err
	}
	// With a head width just past a multiple of the 32-column register tile (SD1.5's
	// 40 = 32 + 8), O += P·V ends in a mostly empty half tile; computing
	// Oᵀ (Dv × queries) += Vᵀ · Pᵀ instead puts Dv in the 12-row direction (40 → 48
	// rows) and the 256 queries in full 32-column tiles. Measured (BenchmarkAttention,
	// GFLOP/cpu-s): 4096×8×40 124–127 → 134; but 1024×8×80 (80 = 64 + a full half
	// tile) went 142–155 → 125–132, hence only a remainder of at most 8 columns.
	transO := dv%32 != 0 && dv%32 <= 8
	var vt []float32
	if transO {
		vt = c.scratch.get(b * h * dv * lk)
		defer c.scratch.put(vt)
		if err := c.perHeadT(vt, vs, v.strides, b, h, lk, dv); err != nil {
			return err
		}
	}
	tilesPerHead := (lq + attnTileQ - 1) / attnTileQ
	items := b * h * tilesPerHead
	serial := items >= c.threads
	errs := make([]error, c.threads)
	scale := float32(p.Scale)
	work := func(wi, lo, hi int) {
		s := c.scratch.get(attnTileQ * attnTileK)
		acc := c.scratch.get(attnTileQ * max(dv, 1)) // nq×dv or dv×attnTileQ
		rm := c.scratch.get(2 * attnTileQ)
		defer c.scratch.put(s)
		defer c.scratch.put(acc)
		defer c.scratch.put(rm)
		for it := lo; it < hi; it++ {
			bh, tile := it/tilesPerHead, it%tilesPerHead
			bi, hi2 := bh/h, bh%h
			i0 := tile * attnTileQ
			nq := min(attnTileQ, lq-i0)
			qo := bi*q.strides[0] + hi2*q.strides[1] + i0*q.strides[2]
			ko := bh * d * lk
			vo := bi*v.strides[0] + hi2*v.strides[1]
			mrow, lsum := rm[:nq], rm[attnTileQ:attnTileQ+nq]
			for i := range mrow {
				mrow[i] = float32(math.Inf(-1))
				lsum[i] = 0
			}
			// oacc is nq×dv, or dv×attnTileQ (row stride attnTileQ) when transO
			oacc := acc[:nq*dv]
			if transO {
				oacc = acc[:dv*attnTileQ]
			}
			clear(oacc)
			kend := lk
			if p.Causal {
				kend = min(lk, i0+nq)
			}
			for kb := 0; kb < kend; kb += attnTileK {
				nk := min(attnTileK, kend-kb)
				st := s[:nq*attnTileK]
				var err error
				if d == 0 {
					clear(st)
				} else {
					err = c.mm.sgemm(serial, 1, 0, 0, 0, false, false, nq, nk, d,
						qs[qo:], qld, kt[ko+kb:], lk, st, attnTileK, false)
				}
				if err != nil {
					errs[wi] = err
					return
				}
				for i := 0; i < nq; i++ {
					row := st[i*attnTileK : i*attnTileK+nk]
					// Plain rows stay in the raw score domain (max and exp take the
					// scale); masked rows are scaled and masked first.
					rs := scale
					if ms != nil || p.Causal || scale <= 0 {
						var mo int
						if ms != nil {
							mo = bi*mst[0] + hi2*mst[1] + (i0+i)*mst[2]
						}
						for j := range row {
							x := row[j] * scale
							if ms != nil {
								x += ms[mo+(kb+j)*mst[3]]
							}
							if p.Causal && kb+j > i0+i {
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
						if transO {
							for j := 0; j < dv; j++ {
								oacc[j*attnTileQ+i] *= corr
							}
						} else {
							orow := oacc[i*dv : (i+1)*dv]
							for j := range orow {
								orow[j] *= corr
							}
						}
					}
					lsum[i] += c.rk.expScale(row, rs, mnew)
					mrow[i] = mnew
				}
				if transO {
					// Oᵀ (dv × nq) += Vᵀ[:, kb:kb+nk] · Pᵀ, P read as a transposed B
					err = c.mm.sgemm(serial, 1, 0, 0, 0, false, true, dv, nq, nk,
						vt[bh*dv*lk+kb:], lk, st, attnTileK, oacc, attnTileQ, true)
					if err != nil {
						errs[wi] = err
						return
					}
				} else if dv > 0 {
					err = c.mm.sgemm(serial, 1, 0, 0, 0, false, false, nq, dv, nk,
						st, attnTileK, vs[vo+kb*v.strides[2]:], vld, oacc, dv, true)
					if err != nil {
						errs[wi] = err
						return
					}
				}
			}
			dst := o[(bh*lq+i0)*dv:]
			if transO {
				for i := 0; i < nq; i++ {
					lsum[i] = 1 / lsum[i]
				}
				for i := 0; i < nq; i++ {
					inv := lsum[i] // 1/sum (0 sums give NaN like PyTorch)
					for j := 0; j < dv; j++ {
						dst[i*dv+j] = oacc[j*attnTileQ+i] * inv
					}
				}
				continue
			}
			for i := 0; i < nq; i++ {
				inv := 1 / lsum[i] // 0 when every key was masked: NaN like PyTorch
				for j := 0; j < dv; j++ {
					dst[i*dv+j] = oacc[i*dv+j] * inv
				}
			}
		}
	}
	if serial {
		c.parallelForW(items, 1, work)
	} else {
		work(0, 0, items)
	}
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// perHeadT writes, for every (batch, head) of x (B, H, L, D, strides st, last dim
// contiguous), its transpose D × L into dst[bh·D·L:], on all threads.
func (c *CPU) perHeadT(dst, x []float32, st []int, b, h, l, d int) error {
	ld := st[2]
	if l == 1 {
		ld = max(ld, d) // a single row: its stride is never used
	}
	errs := make([]error, c.threads)
	c.parallelForW(b*h, 1, func(wi, lo, hi int) {
		for bh := lo; bh < hi && d > 0; bh++ {
			src := x[(bh/h)*st[0]+(bh%h)*st[1]:]
			out := dst[bh*d*l:][:d*l]
			if ld < d {
				// rows overlap (a broadcast or expanded view): element by element
				for j := 0; j < l; j++ {
					for p, v := range src[j*ld:][:d] {
						out[p*l+j] = v
					}
				}
				continue
			}
			if err := c.mm.transpose(l, d, src, ld, out, l); err != nil {
				errs[wi] = err
				return
			}
		}
	})
	for _, e := range errs {
		if e != nil {
			return e
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

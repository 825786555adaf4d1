package lora

import (
	"errors"
	"fmt"

	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/gpu"
)

// weightValues reads a weight as float32: plain float dtypes converted, quantized
// (GGUF block) matrices dequantized row by row through gpu.Embedding, times a
// scaled-fp8 scale.
func weightValues(rt *gpu.Runtime, w, scale *gpu.Tensor) ([]float32, error) {
	var v []float32
	var err error
	if w.DType().IsFloat() {
		v, err = w.Float32()
	} else {
		if w.Rank() != 2 {
			return nil, fmt.Errorf("lora: quantized weight %s is not a matrix", w)
		}
		ids := make([]int, w.Dim(0))
		for i := range ids {
			ids[i] = i
		}
		var rows *gpu.Tensor
		if rows, err = gpu.Embedding(rt, w, ids); err != nil {
			return nil, err
		}
		v, err = rows.Float32()
		rows.Release()
	}
	if err != nil || scale == nil {
		return v, err
	}
	s, err := scale.Float32()
	if err != nil {
		return nil, err
	}
	if len(s) != 1 {
		return nil, fmt.Errorf("lora: scale_weight of %d values", len(s))
	}
	for i := range v {
		v[i] *= s[0]
	}
	return v, nil
}

// swapHalves exchanges the first and second half of d's rows (ComfyUI's
// swap_scale_shift).
func swapHalves(d []float32, rows int) {
	half := len(d) / 2
	if rows%2 != 0 {
		return
	}
	tmp := append([]float32(nil), d[:half]...)
	copy(d, d[half:])
	copy(d[half:], tmp)
}

// merge computes base (times scale) with every patch applied, in float32, rounded to
// mergedDType. ok is false when no patch fitted (the reasons are in rep.Skipped).
func (ap *applier) merge(key string, base, scale *gpu.Tensor, ps []stacked, rep *Report) (*gpu.Tensor, bool, error) {
	shape := base.Shape()
	n := base.Numel()
	// Each patch's update first (a failed one is skipped, as ComfyUI leaves it out).
	var deltas []delta
	for _, p := range ps {
		d, err := ap.delta(shape, n, p)
		if errors.Is(err, errShape) {
			rep.Skipped = append(rep.Skipped, fmt.Sprintf("%s (%s): %v", key, p.patch.Adapter.Module, err))
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("lora: %s (%s): %w", key, p.patch.Adapter.Module, err)
		}
		deltas = append(deltas, d)
	}
	if len(deltas) == 0 {
		return nil, false, nil
	}
	out := mergedDType(base.DType())
	size, err := out.StorageBytes(n)
	if err != nil {
		return nil, false, err
	}
	buf := make([]byte, size)
	if err := ap.combine(base, scale, shape, deltas, out, buf); err != nil {
		return nil, false, fmt.Errorf("lora: %s: %w", key, err)
	}
	// Caller-owned bytes: the merged weight is not a pooled buffer and lives as long as
	// the network does.
	t, err := ap.rt.FromBytes(out, buf, shape...)
	return t, err == nil, err
}

// delta is one patch's update, ready to add over the weight's elements [from, from+n):
// w += s·d (kinds LoRA, LoHa, LoKr, diff), w = d (set) or w *= s (scale, d nil); DoRA updates are applied to
// the whole weight by decompose. A LoRA update without DoRA stays low-rank, d = up·down
// with up (n/inner rows × rank), computed a few rows at a time as the weight is merged.
type delta struct {
	d       []float32
	up      []float32
	down    *gpu.Tensor // (rank, inner) F32
	rank    int
	from, n int
	s       float32
	set     bool
	scale   bool
	dora    *doraUpdate
}

// rows returns the update of the weight's rows [r0, r1) (relative to from, in rows of
// inner values), and a function that releases what it borrowed.
func (d *delta) rows(rt *gpu.Runtime, r0, r1, inner int) ([]float32, func(), error) {
	if d.down == nil {
		return d.d[r0*inner : r1*inner], func() {}, nil
	}
	up, err := rt.FromFloat32(d.up[r0*d.rank:r1*d.rank], r1-r0, d.rank)
	if err != nil {
		return nil, nil, err
	}
	defer up.Release()
	c, err := gpu.MatMul(rt, up, d.down)
	if err != nil {
		return nil, nil, err
	}
	if v, ok := c.HostFloat32(); ok {
		return v, c.Release, nil
	}
	v, err := c.Float32()
	c.Release()
	return v, func() {}, err
}

type doraUpdate struct {
	mag      mat
	scale    float64
	strength float64
	shape    []int
}

// delta computes p's update for a weight of shape: calculate_weight's step for one
// adapter, before it touches the weight.
func (ap *applier) delta(shape []int, n int, p stacked) (delta, error) {
	a := p.patch.Adapter
	if a.Kind == KindScale {
		// calculate_weight's weight *= strength_model: the float32 weight times the
		// factor rounded to float32 (torch's scalar multiply of a float32 tensor).
		return delta{scale: true, n: n, s: float32(a.Factor)}, nil
	}
	if a.Reshape != nil {
		return delta{}, fmt.Errorf("%w: reshape_weight (padding the weight to %v) is not implemented", errors.ErrUnsupported, a.Reshape)
	}
	t := p.patch.Target
	rows, inner := shape[0], n/max(shape[0], 1)
	if t.Length > 0 {
		if t.Start < 0 || t.Start+t.Length > shape[0] {
			return delta{}, fmt.Errorf("%w: rows %d…%d of %v", errShape, t.Start, t.Start+t.Length, shape)
		}
		rows = t.Length
	}
	if a.Kind == KindLoRA && a.DoRA == "" {
		up, down, scale, err := p.set.loraFactors(a)
		if err == nil && (up.rows() != rows || down.cols() != inner) {
			err = fmt.Errorf("%w: up %v · down %v for %d×%d values", errShape, up.shape, down.shape, rows, inner)
		}
		if err != nil {
			return delta{}, err
		}
		if t.SwapHalves {
			swapHalves(up.v, rows) // the update's rows are up's rows times down
		}
		dt, err := ap.rt.FromFloat32(down.v, down.rows(), inner)
		if err != nil {
			return delta{}, err
		}
		return delta{up: up.v, down: dt, rank: down.rows(), from: t.Start * inner, n: rows * inner, s: float32(p.strength * scale)}, nil
	}
	d, scale, err := p.set.dense(ap.rt, a, rows*inner)
	if err != nil {
		return delta{}, err
	}
	out := delta{d: d, from: t.Start * inner, n: len(d)}
	switch {
	case a.Kind == KindSet:
		out.set = true
		return out, nil
	case t.SwapHalves:
		swapHalves(d, rows)
	}
	switch {
	case a.Kind == KindDiff:
		out.s = float32(p.strength)
	case a.DoRA != "":
		dora, err := p.set.mat(a.DoRA)
		if err != nil {
			return delta{}, err
		}
		out.dora = &doraUpdate{mag: dora, scale: scale, strength: p.strength, shape: append([]int{rows}, shape[1:]...)}
	default:
		out.s = float32(p.strength * scale)
	}
	return out, nil
}

// combineChunk is how many values combine decodes, updates and encodes at a time: a
// buffer that stays in the cache.
const combineChunk = 1 << 14

// combine writes base (times scale) with the deltas applied, in order, to buf in dtype
// out. Without DoRA it goes through the weight in chunks, each decoded, updated by
// every delta and encoded in one pass; DoRA needs norms over the whole weight, so a
// weight with a DoRA update is decoded whole first.
func (ap *applier) combine(base, scale *gpu.Tensor, shape []int, deltas []delta, out gpu.DType, buf []byte) error {
	s := float32(1)
	if scale != nil {
		v, err := scale.Float32()
		if err != nil {
			return err
		}
		if len(v) != 1 {
			return fmt.Errorf("scale_weight of %d values", len(v))
		}
		s = v[0]
	}
	n := base.Numel()
	inner := n / max(shape[0], 1)
	plain := base.DType().IsFloat()
	for _, d := range deltas {
		plain = plain && d.dora == nil
	}
	if !plain {
		w, err := weightValues(ap.rt, base, scale)
		if err != nil {
			return err
		}
		for _, d := range deltas {
			v := w[d.from : d.from+d.n]
			if d.scale {
				mulScalar(v, d.s)
				continue
			}
			if d.down != nil {
				full, release, err := d.rows(ap.rt, 0, d.n/inner, inner)
				if err != nil {
					return err
				}
				addScaled(v, full, d.s)
				release()
				continue
			}
			switch {
			case d.set:
				copy(v, d.d)
			case d.dora != nil:
				if err := decompose(v, d.d, d.dora.shape, d.dora.mag, d.dora.scale, d.dora.strength); err != nil {
					return err
				}
			default:
				addScaled(v, d.d, d.s)
			}
		}
		return gpu.EncodeFloat32(out, buf, w)
	}
	step := max(1, combineChunk/max(inner, 1)) // whole rows, so that a chunk is a view
	ob := out.StorageBytes
	for r := 0; r < shape[0]; r += step {
		rows, err := gpu.Narrow(base, 0, r, min(step, shape[0]-r))
		if err != nil {
			return err
		}
		c, err := rows.Float32()
		rows.Release()
		if err != nil {
			return err
		}
		off := r * inner
		if s != 1 {
			for i := range c {
				c[i] *= s
			}
		}
		for i := range deltas {
			d := &deltas[i]
			lo, hi := max(off, d.from), min(off+len(c), d.from+d.n)
			if lo >= hi {
				continue
			}
			if d.scale {
				mulScalar(c[lo-off:hi-off], d.s)
				continue
			}
			dv, release, err := d.rows(ap.rt, (lo-d.from)/inner, (hi-d.from)/inner, inner)
			if err != nil {
				return err
			}
			if v := c[lo-off : hi-off]; d.set {
				copy(v, dv)
			} else {
				addScaled(v, dv, d.s)
			}
			release()
		}
		o0, _ := ob(off)
		o1, _ := ob(off + len(c))
		if err := gpu.EncodeFloat32(out, buf[o0:o1], c); err != nil {
			return err
		}
	}
	return nil
}

// addScaled is v += s·d, each product rounded to float32 before the sum, as torch's
// weight += (s·d) computes it.
func addScaled(v, d []float32, s float32) {
	d = d[:len(v)]
	for i := range v {
		v[i] += s * d[i]
	}
}

// mulScalar is v *= s in float32.
func mulScalar(v []float32, s float32) {
	for i := range v {
		v[i] *= s
	}
}

// lowRank builds the run-time patches of a weight of shape wshape: Down (r, in) or
// (r, in, kh, kw) with any Tucker mid folded in, Up (out, r[, 1, 1]) times
// strength·alpha/r, zero outside the rows a target covers. Both are float32 copies, so
// the network does not keep the LoRA file's mapping.
func (ap *applier) lowRank(key string, wshape []int, ps []stacked) ([]nn.Patch, []string, error) {
	var patches []nn.Patch
	var skipped []string
	out, inner := wshape[0], 1
	for _, s := range wshape[1:] {
		inner *= s
	}
	for _, p := range ps {
		up, down, scale, err := p.set.loraFactors(p.patch.Adapter)
		if err == nil && down.cols() != inner {
			err = fmt.Errorf("%w: down %v for a weight %v", errShape, down.shape, wshape)
		}
		t := p.patch.Target
		rows := out
		if err == nil && t.Length > 0 {
			if t.Start < 0 || t.Start+t.Length > out {
				err = fmt.Errorf("%w: rows %d…%d of %v", errShape, t.Start, t.Start+t.Length, wshape)
			}
			rows = t.Length
		}
		if err == nil && up.rows() != rows {
			err = fmt.Errorf("%w: up %v for %d rows", errShape, up.shape, rows)
		}
		if errors.Is(err, errShape) {
			skipped = append(skipped, fmt.Sprintf("%s (%s): %v", key, p.patch.Adapter.Module, err))
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("lora: %s (%s): %w", key, p.patch.Adapter.Module, err)
		}
		r := down.rows()
		full := make([]float32, out*r)
		s := float32(p.strength * scale)
		dst := full[t.Start*r : (t.Start+rows)*r]
		for i, x := range up.v {
			dst[i] = s * x
		}
		if t.SwapHalves {
			swapHalves(dst, rows)
		}
		upShape, downShape := []int{out, r}, []int{r, inner}
		if len(wshape) == 4 {
			upShape, downShape = []int{out, r, 1, 1}, []int{r, wshape[1], wshape[2], wshape[3]}
		}
		upT, err := ap.owned(full, upShape)
		if err != nil {
			return nil, nil, err
		}
		downT, err := ap.owned(down.v, downShape)
		if err != nil {
			return nil, nil, err
		}
		patches = append(patches, nn.Patch{Down: downT, Up: upT})
	}
	return patches, skipped, nil
}

// owned returns an F32 tensor over its own bytes (not a pooled buffer).
func (ap *applier) owned(v []float32, shape []int) (*gpu.Tensor, error) {
	buf := make([]byte, 4*len(v))
	if err := gpu.EncodeFloat32(gpu.F32, buf, v); err != nil {
		return nil, err
	}
	return ap.rt.FromBytes(gpu.F32, buf, shape...)
}

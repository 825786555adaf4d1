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

// view returns the rows of w a target covers (all of them for Length 0) and their shape.
func view(w []float32, shape []int, t Target) ([]float32, []int, error) {
	if t.Length == 0 {
		return w, shape, nil
	}
	inner := len(w) / shape[0]
	if t.Start < 0 || t.Length < 0 || t.Start+t.Length > shape[0] {
		return nil, nil, fmt.Errorf("%w: rows %d…%d of %v", errShape, t.Start, t.Start+t.Length, shape)
	}
	s := append([]int{t.Length}, shape[1:]...)
	return w[t.Start*inner : (t.Start+t.Length)*inner], s, nil
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
	w, err := weightValues(ap.rt, base, scale)
	if err != nil {
		return nil, false, fmt.Errorf("lora: %s: %w", key, err)
	}
	shape := base.Shape()
	applied := false
	for _, p := range ps {
		err := ap.apply(w, shape, p)
		if errors.Is(err, errShape) {
			rep.Skipped = append(rep.Skipped, fmt.Sprintf("%s (%s): %v", key, p.patch.Adapter.Module, err))
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("lora: %s (%s): %w", key, p.patch.Adapter.Module, err)
		}
		applied = true
	}
	if !applied {
		return nil, false, nil
	}
	d := mergedDType(base.DType())
	n, err := d.StorageBytes(len(w))
	if err != nil {
		return nil, false, err
	}
	buf := make([]byte, n)
	if err := gpu.EncodeFloat32(d, buf, w); err != nil {
		return nil, false, err
	}
	// Caller-owned bytes: the merged weight is not a pooled buffer and lives as long as
	// the network does.
	t, err := ap.rt.FromBytes(d, buf, shape...)
	return t, err == nil, err
}

// apply adds one patch to the weight values w (shape) in place: calculate_weight's step
// for one adapter.
func (ap *applier) apply(w []float32, shape []int, p stacked) error {
	a := p.patch.Adapter
	if a.Reshape != nil {
		return fmt.Errorf("%w: reshape_weight (padding the weight to %v) is not implemented", errors.ErrUnsupported, a.Reshape)
	}
	v, vshape, err := view(w, shape, p.patch.Target)
	if err != nil {
		return err
	}
	d, scale, err := p.set.dense(ap.rt, a, len(v))
	if err != nil {
		return err
	}
	if a.Kind == KindSet {
		copy(v, d)
		return nil
	}
	if p.patch.Target.SwapHalves {
		swapHalves(d, vshape[0])
	}
	if a.Kind == KindDiff {
		st := float32(p.strength)
		for i := range v {
			v[i] += st * d[i]
		}
		return nil
	}
	if a.DoRA != "" {
		dora, err := p.set.mat(a.DoRA)
		if err != nil {
			return err
		}
		return decompose(v, d, vshape, dora, scale, p.strength)
	}
	s := float32(p.strength * scale)
	for i := range v {
		v[i] += s * d[i]
	}
	return nil
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

package nn

import (
	"fmt"

	"github.com/forgeflow/forgeflow/gpu"
)

// Patch is a low-rank weight update ΔW = Up·Down that a layer adds beside its own
// product at run time, so that the stored weight is never copied: a Linear computes
// y = x·Wᵀ + (x·Downᵀ)·Upᵀ, a Conv y = conv(x, W) + conv₁ₓ₁(conv(x, Down), Up) with
// Down convolved at the layer's own stride and padding. Any strength and α/rank factor
// is folded into Up by whoever builds the patch.
//
// For a Linear, Down is (r, in) and Up (out, r); for a Conv, Down is (r, in, kh, kw)
// and Up (out, r, 1, 1). Down and Up may be stored in any dtype the layer's op takes
// as a weight.
type Patch struct {
	Down, Up *gpu.Tensor
}

// CheckLinear reports whether p fits a Linear with weight shape (out, in).
func (p *Patch) CheckLinear(out, in int) error {
	if p.Down.Rank() != 2 || p.Up.Rank() != 2 || p.Down.Dim(1) != in || p.Up.Dim(0) != out || p.Up.Dim(1) != p.Down.Dim(0) {
		return fmt.Errorf("nn: patch down %v, up %v does not fit a linear (%d, %d)", p.Down.Shape(), p.Up.Shape(), out, in)
	}
	return nil
}

// CheckConv reports whether p fits a Conv with weight shape (out, in, kh, kw).
func (p *Patch) CheckConv(out, in, kh, kw int) error {
	d, u := p.Down.Shape(), p.Up.Shape()
	if len(d) != 4 || len(u) != 4 || d[1] != in || d[2] != kh || d[3] != kw || u[0] != out || u[1] != d[0] || u[2] != 1 || u[3] != 1 {
		return fmt.Errorf("nn: patch down %v, up %v does not fit a conv (%d, %d, %d, %d)", d, u, out, in, kh, kw)
	}
	return nil
}

func (p *Patch) linear(rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error) {
	d, err := gpu.Linear(rt, x, p.Down, nil)
	if err != nil {
		return nil, err
	}
	return consume(d, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Linear(rt, t, p.Up, nil) })
}

func (p *Patch) conv(rt *gpu.Runtime, x *gpu.Tensor, params gpu.ConvParams) (*gpu.Tensor, error) {
	d, err := gpu.Conv2DPadded(rt, x, p.Down, nil, params)
	if err != nil {
		return nil, err
	}
	return consume(d, func(t *gpu.Tensor) (*gpu.Tensor, error) {
		return gpu.Conv2DPadded(rt, t, p.Up, nil, gpu.ConvParams{Stride: 1})
	})
}

// addPatches adds delta(p) to y for every patch, releasing y's intermediate values.
func addPatches(rt *gpu.Runtime, y *gpu.Tensor, ps []Patch, delta func(*Patch) (*gpu.Tensor, error)) (*gpu.Tensor, error) {
	for i := range ps {
		d, err := delta(&ps[i])
		if err != nil {
			y.Release()
			return nil, err
		}
		sum, err := gpu.Add(rt, y, d)
		y.Release()
		d.Release()
		if err != nil {
			return nil, err
		}
		y = sum
	}
	return y, nil
}

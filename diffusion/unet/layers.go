package unet

import (
	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/gpu"
)

// groupNorm is GroupNorm(32) with the given eps, followed by SiLU when silu is set.
func groupNorm(rt *gpu.Runtime, n *nn.Norm, x *gpu.Tensor, eps float64, silu bool) (*gpu.Tensor, error) {
	if silu {
		return n.GroupSiLU(rt, x, 32, eps)
	}
	return n.Group(rt, x, 32, eps)
}

// then applies f to x and releases x.
func then(x *gpu.Tensor, f func(*gpu.Tensor) (*gpu.Tensor, error)) (*gpu.Tensor, error) {
	y, err := f(x)
	x.Release()
	return y, err
}

// addTo returns a + b and releases b.
func addTo(rt *gpu.Runtime, a, b *gpu.Tensor) (*gpu.Tensor, error) {
	y, err := gpu.Add(rt, a, b)
	b.Release()
	return y, err
}

// ResBlock is the timestep-conditioned residual block.
type ResBlock struct {
	InNorm  nn.Norm   `sd:"in_layers.0"`
	InConv  nn.Conv   `sd:"in_layers.2"`
	Emb     nn.Linear `sd:"emb_layers.1"`
	OutNorm nn.Norm   `sd:"out_layers.0"`
	OutConv nn.Conv   `sd:"out_layers.3"`
	// Skip is the 1×1 conv of a block that changes the channel count (zero otherwise).
	Skip nn.Conv `sd:"skip_connection,optional"`
}

// forward computes skip(x) + out(in(x) + emb_layers(emb)); embSiLU is SiLU(emb),
// computed once per step and shared by every block.
func (b *ResBlock) forward(rt *gpu.Runtime, x, embSiLU *gpu.Tensor) (*gpu.Tensor, error) {
	h, err := groupNorm(rt, &b.InNorm, x, 1e-5, true)
	if err != nil {
		return nil, err
	}
	if h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return b.InConv.Same(rt, t, 1) }); err != nil {
		return nil, err
	}
	e, err := b.Emb.Forward(rt, embSiLU) // (N, C)
	if err != nil {
		h.Release()
		return nil, err
	}
	e4, err := then(e, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Reshape(rt, t, t.Dim(0), t.Dim(1), 1, 1) })
	if err != nil {
		h.Release()
		return nil, err
	}
	h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return addTo(rt, t, e4) })
	if err != nil {
		return nil, err
	}
	if h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return groupNorm(rt, &b.OutNorm, t, 1e-5, true) }); err != nil {
		return nil, err
	}
	if h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return b.OutConv.Same(rt, t, 1) }); err != nil {
		return nil, err
	}
	if b.Skip.Weight == nil {
		return addTo(rt, x, h)
	}
	s, err := b.Skip.Same(rt, x, 1)
	if err != nil {
		h.Release()
		return nil, err
	}
	defer s.Release()
	return addTo(rt, s, h)
}

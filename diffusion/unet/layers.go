package unet

import (
	"github.com/forgeflow/forgeflow/gpu"
)

// Linear is a torch.nn.Linear.
type Linear struct {
	Weight *gpu.Tensor `sd:"weight"`
	Bias   *gpu.Tensor `sd:"bias,optional"`
}

func (l *Linear) forward(rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error) {
	return gpu.Linear(rt, x, l.Weight, l.Bias)
}

// Conv is a torch.nn.Conv2d with "same" padding for odd kernels.
type Conv struct {
	Weight *gpu.Tensor `sd:"weight"`
	Bias   *gpu.Tensor `sd:"bias"`
}

func (c *Conv) forward(rt *gpu.Runtime, x *gpu.Tensor, stride int) (*gpu.Tensor, error) {
	pad := c.Weight.Dim(2) / 2
	return gpu.Conv2D(rt, x, c.Weight, c.Bias, stride, pad)
}

// Norm is a GroupNorm or LayerNorm's affine parameters.
type Norm struct {
	Weight *gpu.Tensor `sd:"weight"`
	Bias   *gpu.Tensor `sd:"bias"`
}

func (n *Norm) group(rt *gpu.Runtime, x *gpu.Tensor, eps float64, silu bool) (*gpu.Tensor, error) {
	h, err := gpu.GroupNorm(rt, x, 32, n.Weight, n.Bias, eps)
	if err != nil || !silu {
		return h, err
	}
	return then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.SiLU(rt, t) })
}

func (n *Norm) layer(rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error) {
	return gpu.LayerNorm(rt, x, n.Weight, n.Bias, 1e-5)
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
	InNorm  Norm   `sd:"in_layers.0"`
	InConv  Conv   `sd:"in_layers.2"`
	Emb     Linear `sd:"emb_layers.1"`
	OutNorm Norm   `sd:"out_layers.0"`
	OutConv Conv   `sd:"out_layers.3"`
	Skip    struct {
		Weight *gpu.Tensor `sd:"weight,optional"`
		Bias   *gpu.Tensor `sd:"bias,optional"`
	} `sd:"skip_connection"`
}

// forward computes skip(x) + out(in(x) + emb_layers(emb)); embSiLU is SiLU(emb),
// computed once per step and shared by every block.
func (b *ResBlock) forward(rt *gpu.Runtime, x, embSiLU *gpu.Tensor) (*gpu.Tensor, error) {
	h, err := b.InNorm.group(rt, x, 1e-5, true)
	if err != nil {
		return nil, err
	}
	if h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return b.InConv.forward(rt, t, 1) }); err != nil {
		return nil, err
	}
	e, err := b.Emb.forward(rt, embSiLU) // (N, C)
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
	if h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return b.OutNorm.group(rt, t, 1e-5, true) }); err != nil {
		return nil, err
	}
	if h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return b.OutConv.forward(rt, t, 1) }); err != nil {
		return nil, err
	}
	if b.Skip.Weight == nil {
		return addTo(rt, x, h)
	}
	sc := Conv{Weight: b.Skip.Weight, Bias: b.Skip.Bias}
	s, err := sc.forward(rt, x, 1)
	if err != nil {
		h.Release()
		return nil, err
	}
	defer s.Release()
	return addTo(rt, s, h)
}

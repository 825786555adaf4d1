package controlnet

import (
	"github.com/forgeflow/forgeflow/gpu"
)

// conv is a torch.nn.Conv2d with "same" padding for odd kernels.
type conv struct {
	Weight *gpu.Tensor `sd:"weight"`
	Bias   *gpu.Tensor `sd:"bias"`
}

func (c *conv) forward(rt *gpu.Runtime, x *gpu.Tensor, stride int) (*gpu.Tensor, error) {
	return gpu.Conv2D(rt, x, c.Weight, c.Bias, stride, c.Weight.Dim(2)/2)
}

// linear is a torch.nn.Linear.
type linear struct {
	Weight *gpu.Tensor `sd:"weight"`
	Bias   *gpu.Tensor `sd:"bias,optional"`
}

func (l *linear) forward(rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error) {
	return gpu.Linear(rt, x, l.Weight, l.Bias)
}

// norm is a LayerNorm's affine parameters.
type norm struct {
	Weight *gpu.Tensor `sd:"weight"`
	Bias   *gpu.Tensor `sd:"bias"`
}

// then applies f to x and releases x.
func then(x *gpu.Tensor, f func(*gpu.Tensor) (*gpu.Tensor, error)) (*gpu.Tensor, error) {
	y, err := f(x)
	x.Release()
	return y, err
}

// release frees every non-nil tensor.
func release(ts ...*gpu.Tensor) {
	for _, t := range ts {
		if t != nil {
			t.Release()
		}
	}
}

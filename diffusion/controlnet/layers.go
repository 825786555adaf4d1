package controlnet

import (
	"github.com/forgeflow/forgeflow/gpu"
)

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

package sd

import (
	"fmt"

	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
)

// UnetLoaderGGUFAdvanced's dequant_dtype. ComfyUI-GGUF decodes every GGUF block weight
// before each product in the type it names (dequant.py's block kernels with the fp16
// scales taken in that type): float16 when the option is "default" (the scales'
// own type), float32 for "float32" and for "target" on a float32 model (every model on
// a CPU), bfloat16 for "bfloat16". forgeflow decodes in float32 unless float16 or
// bfloat16 is named: its UnetLoaderGGUF and "default" keep the float32 arithmetic the
// golden gguf family's dequant_f32 values pin down (within 0.5 % of a weight of
// ComfyUI-GGUF's default), and "float16" reproduces that default bit for bit.

// DequantDTypes are the dequant_dtype (and patch_dtype) choices of
// UnetLoaderGGUFAdvanced.
var DequantDTypes = []string{"default", "target", "float32", "float16", "bfloat16"}

// dequantArithmetic maps a dequant_dtype choice to the runtime dtype GGUF blocks are
// decoded in.
func dequantArithmetic(name string) (gpu.DType, error) {
	switch name {
	case "", "default", "target", "float32":
		return gpu.F32, nil
	case "float16":
		return gpu.F16, nil
	case "bfloat16":
		return gpu.BF16, nil
	}
	return 0, fmt.Errorf("sd: dequant_dtype %q is not one of default, target, float32, float16, bfloat16", name)
}

// dequantSource returns src serving its GGUF block tensors decoded in the arithmetic
// dequant_dtype names (gpu.Tensor.WithDequantDType), or src itself for float32.
func dequantSource(src statedict.Source, dequantDType string) (statedict.Source, error) {
	d, err := dequantArithmetic(dequantDType)
	if err != nil {
		return nil, err
	}
	if d == gpu.F32 {
		return src, nil
	}
	return roundedSource{src, d}, nil
}

// roundedSource marks the quantized tensors of a source with a dequantization dtype.
type roundedSource struct {
	statedict.Source
	deq gpu.DType
}

// Tensor implements statedict.Source.
func (s roundedSource) Tensor(key string) (*gpu.Tensor, error) {
	t, err := s.Source.Tensor(key)
	if err != nil || !t.DType().IsQuantized() {
		return t, err
	}
	v, err := t.WithDequantDType(s.deq)
	t.Release()
	if err != nil {
		return nil, fmt.Errorf("sd: %s: %w", key, err)
	}
	return v, nil
}

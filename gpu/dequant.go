package gpu

import (
	"fmt"

	"github.com/forgeflow/forgeflow/gpu/internal/gemm"
)

// Rounded dequantization. ComfyUI-GGUF decodes a GGUF block weight before each product
// in the type its dequant_dtype option names: float16 by default, float32 or bfloat16
// when asked, every product and sum of the block rounded to that type. The kernels
// decode in float32 (ggml's arithmetic) unless a weight says otherwise; a weight view
// made by WithDequantDType carries the other arithmetic into the GEMM's panel decoders.

// DequantDType is the arithmetic t's blocks are decoded in: F32 (the default), F16 or
// BF16.
func (t *Tensor) DequantDType() DType {
	if t.deq == 0 {
		return F32
	}
	return t.deq
}

// WithDequantDType returns a view of t (sharing its storage) whose GGUF blocks the
// matrix products and embedding lookups decode in d's arithmetic: F32, F16 or BF16.
// Block types without arithmetic of their own in ComfyUI-GGUF (TQ1_0, TQ2_0, MXFP4,
// which it hands to gguf-py's float32 code) and plain float tensors decode as before.
// Only the cpu backend's kernels honour F16 and BF16; other backends run such products
// on it.
func (t *Tensor) WithDequantDType(d DType) (*Tensor, error) {
	if d != F32 && d != F16 && d != BF16 {
		return nil, fmt.Errorf("gpu: dequantization in %s: want F32, F16 or BF16", d)
	}
	v := t.view(t.shape, t.strides, t.offset)
	v.deq = d
	if gd, ok := gemmDType(t.dtype); ok {
		if r, _ := gemmWeightDType(t.dtype, d); r == gd {
			v.deq = F32 // nothing to round
		}
	}
	return v, nil
}

// gemmWeightDType maps a weight's dtype and dequantization arithmetic to the GEMM
// package's dtype.
func gemmWeightDType(d, deq DType) (gemm.DType, bool) {
	gd, ok := gemmDType(d)
	if !ok {
		return 0, false
	}
	m := gemm.MathF32
	switch deq {
	case F16:
		m = gemm.MathF16
	case BF16:
		m = gemm.MathBF16
	}
	r, err := gd.WithMath(m)
	if err != nil {
		return 0, false
	}
	return r, true
}

// roundedDequant reports whether a call's operands include a weight decoded in float16
// or bfloat16 arithmetic.
func roundedDequant(c *Call) bool { return roundedDequantName(c) != "" }

// roundedDequantName names the first such weight's arithmetic, "" for none.
func roundedDequantName(c *Call) string {
	for _, t := range c.In {
		if t != nil && t.deq != 0 && t.deq != F32 {
			return t.deq.String() + " arithmetic"
		}
	}
	return ""
}

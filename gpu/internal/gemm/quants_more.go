package gemm

import (
	"fmt"

	"github.com/forgeflow/forgeflow/internal/dtype"
)

// The GGUF types beyond ggml's legacy and k-quants (IQ4_NL, IQ4_XS, TQ1_0, TQ2_0, MXFP4)
// and the decodings in float16 or bfloat16 arithmetic that ComfyUI-GGUF's dequant_dtype
// option selects. All of them are converted by internal/dtype on every path, a panel at
// a time like the other block types.

// Math is the arithmetic a GGUF block is decoded in: float32 (ggml's dequantize_row_*,
// the default here), or float16 / bfloat16 with every product and sum of the block
// rounded to that type, as ComfyUI-GGUF's block kernels compute with dequant_dtype
// float16 (its default) or bfloat16.
type Math uint8

const (
	MathF32 Math = iota
	MathF16
	MathBF16
)

func (m Math) String() string { return m.rounding().String() }

func (m Math) rounding() dtype.Rounding {
	switch m {
	case MathF16:
		return dtype.RoundF16
	case MathBF16:
		return dtype.RoundBF16
	}
	return dtype.RoundF32
}

// mathShift places a Math above the base dtype's bits: a rounded decoding is a DType of
// its own, so every path that switches on the stored type (the vector decoders, the
// packers) sends it to decodeOther, and block sizes, row sizes and names follow the
// base type.
const mathShift = 8

// WithMath returns d decoded in m's arithmetic. Only the block types that ComfyUI-GGUF
// decodes with its own torch kernels (Q4_0 … Q6_K, IQ4_NL, IQ4_XS) have such a
// variant; the float types, whose conversion has no arithmetic, and TQ1_0, TQ2_0 and
// MXFP4, which ComfyUI-GGUF hands to gguf-py's float32 numpy code, are returned
// unchanged, as is every d for MathF32.
func (d DType) WithMath(m Math) (DType, error) {
	if d < 0 || d >= dtypeCount {
		return 0, fmt.Errorf("gemm: %s has no rounded decoding", d)
	}
	if m > MathBF16 {
		return 0, fmt.Errorf("gemm: unknown decoding arithmetic %d", m)
	}
	switch d {
	case Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS:
		if m != MathF32 {
			return d | DType(m)<<mathShift, nil
		}
	}
	return d, nil
}

// Math is the arithmetic d is decoded in.
func (d DType) Math() Math { return Math(d >> mathShift) }

// Base is d's stored type, without its decoding arithmetic.
func (d DType) Base() DType { return d & (1<<mathShift - 1) }

// decodeMore converts len(dst) elements (whole blocks) of the types decodeOther leaves:
// the five types without a legacy or k-quant layout, and every rounded decoding.
func decodeMore(d DType, dst []float32, src []byte) {
	r := d.Math().rounding()
	switch d.Base() {
	case IQ4_NL:
		r.DecodeIQ4_NL(dst, src)
	case IQ4_XS:
		r.DecodeIQ4_XS(dst, src)
	case TQ1_0:
		dtype.DecodeTQ1_0(dst, src)
	case TQ2_0:
		dtype.DecodeTQ2_0(dst, src)
	case MXFP4:
		dtype.DecodeMXFP4(dst, src)
	case Q8_0:
		r.DecodeQ8_0(dst, src)
	case Q4_0:
		r.DecodeQ4_0(dst, src)
	case Q4_1:
		r.DecodeQ4_1(dst, src)
	case Q5_0:
		r.DecodeQ5_0(dst, src)
	case Q5_1:
		r.DecodeQ5_1(dst, src)
	case Q2_K:
		r.DecodeQ2_K(dst, src)
	case Q3_K:
		r.DecodeQ3_K(dst, src)
	case Q4_K:
		r.DecodeQ4_K(dst, src)
	case Q5_K:
		r.DecodeQ5_K(dst, src)
	case Q6_K:
		r.DecodeQ6_K(dst, src)
	}
}

package gpu

import (
	"fmt"

	"github.com/forgeflow/forgeflow/internal/dtype"
)

// Conversions between float32 and the narrow float storage types. The arithmetic is
// internal/dtype's (shared with weights/ and the GEMM package): rounding to nearest even,
// subnormals kept, overflow and NaN as PyTorch's c10 types (F16/E5M2 → ±Inf, E4M3FN →
// NaN).

// DecodeFloat32 converts n little-endian elements of the plain float type d in src to
// float32. Quantized types are not decoded here: the matmul kernels consume them as
// stored.
func DecodeFloat32(d DType, dst []float32, src []byte) error {
	need, err := d.StorageBytes(len(dst))
	if err != nil {
		return err
	}
	if len(src) < need {
		return fmt.Errorf("gpu: decode %s: %d bytes, need %d", d, len(src), need)
	}
	switch d {
	case F32:
		dtype.DecodeF32(dst, src)
	case F16:
		dtype.DecodeF16(dst, src)
	case BF16:
		dtype.DecodeBF16(dst, src)
	case F8E4M3FN:
		dtype.DecodeE4M3FN(dst, src)
	case F8E5M2:
		dtype.DecodeE5M2(dst, src)
	default:
		return fmt.Errorf("gpu: decode %s: quantized blocks are not a runtime conversion", d)
	}
	return nil
}

// EncodeFloat32 rounds src to the plain float type d, writing little-endian bytes to dst.
func EncodeFloat32(d DType, dst []byte, src []float32) error {
	need, err := d.StorageBytes(len(src))
	if err != nil {
		return err
	}
	if len(dst) < need {
		return fmt.Errorf("gpu: encode %s: %d bytes, need %d", d, len(dst), need)
	}
	switch d {
	case F32:
		dtype.EncodeF32(dst, src)
	case F16:
		dtype.EncodeF16(dst, src)
	case BF16:
		dtype.EncodeBF16(dst, src)
	case F8E4M3FN:
		dtype.EncodeE4M3FN(dst, src)
	case F8E5M2:
		dtype.EncodeE5M2(dst, src)
	default:
		return fmt.Errorf("gpu: encode %s: quantization is not a runtime conversion", d)
	}
	return nil
}

package weights

import (
	"encoding/binary"
	"fmt"

	"github.com/forgeflow/forgeflow/internal/dtype"
)

// ToFloat32 converts little-endian elements of type dt in src to float32 in dst. dst must
// hold exactly len(src)/dt.ElemSize() values. Float types convert exactly (F64 rounds to
// nearest; the arithmetic is internal/dtype's); integer and BOOL types convert by value.
func ToFloat32(dst []float32, src []byte, dt DType) error {
	size := dt.ElemSize()
	if size == 0 {
		return fmt.Errorf("weights: cannot convert %s to float32", dt)
	}
	if len(src)%size != 0 || len(dst) != len(src)/size {
		return fmt.Errorf("weights: convert %s: %d bytes do not make %d elements", dt, len(src), len(dst))
	}
	le := binary.LittleEndian
	switch dt {
	case F32:
		dtype.DecodeF32(dst, src)
	case F64:
		dtype.DecodeF64(dst, src)
	case F16:
		dtype.DecodeF16(dst, src)
	case BF16:
		dtype.DecodeBF16(dst, src)
	case F8_E4M3:
		dtype.DecodeE4M3FN(dst, src)
	case F8_E5M2:
		dtype.DecodeE5M2(dst, src)
	case I64:
		for i := range dst {
			dst[i] = float32(int64(le.Uint64(src[8*i:])))
		}
	case U64:
		for i := range dst {
			dst[i] = float32(le.Uint64(src[8*i:]))
		}
	case I32:
		for i := range dst {
			dst[i] = float32(int32(le.Uint32(src[4*i:])))
		}
	case U32:
		for i := range dst {
			dst[i] = float32(le.Uint32(src[4*i:]))
		}
	case I16:
		for i := range dst {
			dst[i] = float32(int16(le.Uint16(src[2*i:])))
		}
	case U16:
		for i := range dst {
			dst[i] = float32(le.Uint16(src[2*i:]))
		}
	case I8:
		for i := range dst {
			dst[i] = float32(int8(src[i]))
		}
	case U8:
		for i := range dst {
			dst[i] = float32(src[i])
		}
	case BOOL:
		for i := range dst {
			if src[i] != 0 {
				dst[i] = 1
			} else {
				dst[i] = 0
			}
		}
	}
	return nil
}

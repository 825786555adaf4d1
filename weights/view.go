package weights

import (
	"encoding/binary"
	"unsafe"
)

// hostLittleEndian reports whether the machine stores integers little-endian, as every
// format here does.
var hostLittleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// AsFloat32 reinterprets little-endian F32 bytes as []float32 without copying, for
// weights used as stored: the result aliases b (often a read-only mapping, which must
// not be written). It reports false when b is not 4-byte aligned, not a whole number of
// values, or the host is big-endian; the caller then converts with ToFloat32.
func AsFloat32(b []byte) ([]float32, bool) {
	if len(b)%4 != 0 || !hostLittleEndian {
		return nil, false
	}
	if len(b) == 0 {
		return []float32{}, true
	}
	p := unsafe.Pointer(unsafe.SliceData(b))
	if uintptr(p)%4 != 0 {
		return nil, false
	}
	return unsafe.Slice((*float32)(p), len(b)/4), true
}

// AsUint16 reinterprets little-endian 16-bit elements (F16, BF16, I16, U16) as []uint16
// without copying, under the same conditions as AsFloat32 (2-byte alignment).
func AsUint16(b []byte) ([]uint16, bool) {
	if len(b)%2 != 0 || !hostLittleEndian {
		return nil, false
	}
	if len(b) == 0 {
		return []uint16{}, true
	}
	p := unsafe.Pointer(unsafe.SliceData(b))
	if uintptr(p)%2 != 0 {
		return nil, false
	}
	return unsafe.Slice((*uint16)(p), len(b)/2), true
}

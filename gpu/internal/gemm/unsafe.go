package gemm

import "unsafe"

// isAligned4 reports whether b starts on a 4-byte boundary, so that it can
// be read as float32 without an unaligned view.
func isAligned4(b []byte) bool {
	return len(b) == 0 || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%4 == 0
}

// nativeLittleEndian reports whether float32 in memory has the byte order
// of the stored weights, so that bytesAsFloat32 may view them in place.
var nativeLittleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// bytesAsFloat32 views little-endian float32 storage as []float32 without
// copying; callers check nativeLittleEndian first.
func bytesAsFloat32(b []byte) []float32 {
	if len(b) < 4 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/4)
}

// panelBytes views elements [off, off+n) of a packed weight's panels as
// bytes (for prefetching).
func (p *Packed) panelBytes(off, n int) []byte {
	if p.dtype == F32 {
		s := p.f32[off : off+n]
		return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), 4*n)
	}
	s := p.u16[off : off+n]
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), 2*n)
}

package weights

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"
)

// F16ToF32 converts an IEEE 754 binary16 value to float32 exactly.
func F16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch exp {
	case 0x1f: // infinity or NaN: keep the payload
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case 0:
		// Zero or subnormal: mant × 2^-24, exact in float32.
		f := float32(mant) * (1.0 / (1 << 24))
		if sign != 0 {
			f = -f
		}
		return f
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// f16Table maps every binary16 pattern to its float32 value: bulk conversion by lookup is
// several times faster than bit manipulation per element. Built on first use, read-only.
var f16Table = sync.OnceValue(func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for i := range t {
		t[i] = F16ToF32(uint16(i))
	}
	return &t
})

// F16SliceToF32 converts len(dst) little-endian binary16 values from src (which must hold
// at least 2*len(dst) bytes) to float32.
func F16SliceToF32(dst []float32, src []byte) {
	t := f16Table()
	src = src[:2*len(dst)]
	for i := range dst {
		dst[i] = t[uint16(src[2*i])|uint16(src[2*i+1])<<8]
	}
}

// F32ToF16 converts a float32 to binary16, rounding to nearest even (as torch's .half()).
// Values too large become infinities; NaNs stay NaNs.
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Subnormal half: k × 2^-24 with k = mant24 >> (14-e).
		if e < -10 {
			return sign
		}
		m := mant | 0x800000
		shift := uint32(14 - e)
		h := m >> shift
		rest := m & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rest > half || (rest == half && h&1 == 1) {
			h++
		}
		return sign | uint16(h)
	}
	h := uint32(e)<<10 | mant>>13
	rest := mant & 0x1fff
	if rest > 0x1000 || (rest == 0x1000 && h&1 == 1) {
		h++ // a carry into the exponent is the correct rounding, up to infinity
	}
	return sign | uint16(h)
}

// BF16ToF32 converts a bfloat16 value to float32 exactly.
func BF16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// F32ToBF16 converts a float32 to bfloat16, rounding to nearest even (as torch does).
func F32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 { // NaN: keep it a quiet NaN
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// F8E4M3ToF32 converts a float8 e4m3fn value (torch.float8_e4m3fn) to float32: bias 7,
// no infinities, and S.1111.111 is the only NaN.
func F8E4M3ToF32(v uint8) float32 {
	exp := int(v>>3) & 0xf
	mant := float32(v & 7)
	var f float32
	switch {
	case exp == 0xf && v&7 == 7:
		f = float32(math.NaN())
	case exp == 0:
		f = mant / 512 // mant/8 × 2^(1-7)
	default:
		f = (1 + mant/8) * float32(math.Ldexp(1, exp-7))
	}
	if v&0x80 != 0 {
		f = -f
	}
	return f
}

// F8E5M2ToF32 converts a float8 e5m2 value (torch.float8_e5m2) to float32. The format is
// the upper byte of a binary16.
func F8E5M2ToF32(v uint8) float32 { return F16ToF32(uint16(v) << 8) }

// ToFloat32 converts little-endian elements of type dt in src to float32 in dst. dst must
// hold exactly len(src)/dt.ElemSize() values. Float types convert exactly (F64 rounds to
// nearest); integer and BOOL types convert by value.
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
		for i := range dst {
			dst[i] = math.Float32frombits(le.Uint32(src[4*i:]))
		}
	case F64:
		for i := range dst {
			dst[i] = float32(math.Float64frombits(le.Uint64(src[8*i:])))
		}
	case F16:
		F16SliceToF32(dst, src)
	case BF16:
		for i := range dst {
			dst[i] = BF16ToF32(le.Uint16(src[2*i:]))
		}
	case F8_E4M3:
		for i := range dst {
			dst[i] = F8E4M3ToF32(src[i])
		}
	case F8_E5M2:
		for i := range dst {
			dst[i] = F8E5M2ToF32(src[i])
		}
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

package dtype

import (
	"encoding/binary"
	"math"
	"sync"
)

// Conversions to a narrow type round to nearest with ties to even and keep subnormals.
// Overflow and NaN follow PyTorch's c10 types: an F16 or E5M2 value that rounds past
// the largest finite number becomes ±Inf; E4M3FN has no infinity, so such a value (and
// ±Inf) becomes NaN (S.1111.111); a NaN keeps its sign and becomes the format's quiet
// NaN.

// F16ToF32 converts IEEE binary16 bits to float32 (exact, NaN payloads kept).
func F16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
	}
	// Zero or subnormal: mant·2^-24, exact in float32.
	return math.Float32frombits(sign | math.Float32bits(float32(mant)*(1.0/(1<<24))))
}

// F32ToF16 rounds f to IEEE binary16 bits (torch's .half()).
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	if a := b & 0x7fffffff; a-113<<23 < 30<<23 {
		// 2^-14 ≤ |f| < 2^16, the half-precision normals (and what rounds up to
		// infinity): round the 13 dropped mantissa bits to nearest even, then rebias
		// the exponent by 127 − 15; a carry out of the mantissa moves to the next
		// binade, or to infinity from the largest one.
		a += 0x0fff + a>>13&1
		return sign | uint16((a-112<<23)>>13)
	}
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
		// Subnormal half: k·2^-24 with k = mant24 >> (14-e).
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

// BF16ToF32 converts bfloat16 bits to float32 (exact).
func BF16ToF32(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// F32ToBF16 rounds f to bfloat16 bits as c10::BFloat16 does: nearest even on the
// dropped 16 bits; a NaN becomes the quiet NaN 0x7FC0 with f's sign.
func F32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if f != f {
		return uint16(u>>16&0x8000) | 0x7fc0
	}
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}

// E4M3FNToF32 converts float8 e4m3fn bits (torch.float8_e4m3fn: bias 7, no
// infinities, S.1111.111 the only NaN) to float32 (exact).
func E4M3FNToF32(b uint8) float32 { return e4m3fnTable[b] }

// F32ToE4M3FN rounds f to float8 e4m3fn (beyond ±448 and ±Inf → NaN).
func F32ToE4M3FN(f float32) uint8 { return uint8(fmtE4M3FN.encode(float64(f))) }

// E5M2ToF32 converts float8 e5m2 bits (torch.float8_e5m2: bias 15, IEEE-like with
// infinities; the upper byte of a binary16) to float32 (exact).
func E5M2ToF32(b uint8) float32 { return e5m2Table[b] }

// F32ToE5M2 rounds f to float8 e5m2 (overflow to ±Inf).
func F32ToE5M2(f float32) uint8 { return uint8(fmtE5M2.encode(float64(f))) }

// Read-only decoding tables. The binary16 one (256 KiB) is built on first use: bulk F16
// decoding — convolution weights on every call — is then a lookup instead of bit
// fiddling with branches (measured: per-element conversion was 12 % of an SD1.5 UNet
// evaluation).
var (
	e4m3fnTable = f8Table(fmtE4M3FN)
	e5m2Table   = f8Table(fmtE5M2)
	f16Table    = sync.OnceValue(func() *[1 << 16]float32 {
		t := new([1 << 16]float32)
		for c := range t {
			t[c] = F16ToF32(uint16(c))
		}
		return t
	})
)

func f8Table(f smallFloat) (t [256]float32) {
	for c := range t {
		t[c] = float32(f.decode(uint32(c)))
	}
	return t
}

// DecodeF32 converts len(dst) little-endian float32 values from src.
func DecodeF32(dst []float32, src []byte) {
	src = src[:4*len(dst)]
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

// DecodeF64 converts len(dst) little-endian float64 values from src, rounding to
// nearest.
func DecodeF64(dst []float32, src []byte) {
	src = src[:8*len(dst)]
	for i := range dst {
		dst[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(src[8*i:])))
	}
}

// DecodeF16 converts len(dst) little-endian binary16 values from src. Normal values
// are rebiased in place (exponent + 127 − 15), the rest (zeros, subnormals, infinities,
// NaNs) read from the table; both give F16ToF32's bits.
func DecodeF16(dst []float32, src []byte) {
	t := f16Table()
	src = src[:2*len(dst)]
	for i := range dst {
		h := uint32(src[2*i]) | uint32(src[2*i+1])<<8
		if e := h & 0x7c00; e != 0 && e != 0x7c00 {
			dst[i] = math.Float32frombits(h&0x8000<<16 | (h&0x7fff<<13 + 112<<23))
		} else {
			dst[i] = t[h]
		}
	}
}

// DecodeBF16 converts len(dst) little-endian bfloat16 values from src.
func DecodeBF16(dst []float32, src []byte) {
	src = src[:2*len(dst)]
	for i := range dst {
		dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(src[2*i:])) << 16)
	}
}

// DecodeE4M3FN converts len(dst) float8 e4m3fn values from src.
func DecodeE4M3FN(dst []float32, src []byte) {
	src = src[:len(dst)]
	for i, b := range src {
		dst[i] = e4m3fnTable[b]
	}
}

// DecodeE5M2 converts len(dst) float8 e5m2 values from src.
func DecodeE5M2(dst []float32, src []byte) {
	src = src[:len(dst)]
	for i, b := range src {
		dst[i] = e5m2Table[b]
	}
}

// EncodeF32 writes src as little-endian float32 to dst (4·len(src) bytes).
func EncodeF32(dst []byte, src []float32) {
	dst = dst[:4*len(src)]
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

// EncodeF16 rounds src to little-endian binary16 in dst (2·len(src) bytes).
func EncodeF16(dst []byte, src []float32) {
	dst = dst[:2*len(src)]
	for i, v := range src {
		h := F32ToF16(v)
		dst[2*i], dst[2*i+1] = byte(h), byte(h>>8)
	}
}

// EncodeBF16 rounds src to little-endian bfloat16 in dst (2·len(src) bytes).
func EncodeBF16(dst []byte, src []float32) {
	dst = dst[:2*len(src)]
	for i, v := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], F32ToBF16(v))
	}
}

// EncodeE4M3FN rounds src to float8 e4m3fn in dst (len(src) bytes).
func EncodeE4M3FN(dst []byte, src []float32) {
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] = F32ToE4M3FN(v)
	}
}

// EncodeE5M2 rounds src to float8 e5m2 in dst (len(src) bytes).
func EncodeE5M2(dst []byte, src []float32) {
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] = F32ToE5M2(v)
	}
}

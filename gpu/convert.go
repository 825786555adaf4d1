package gpu

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Conversions between float32 and the narrow float storage types. Every conversion to a
// narrow type rounds to nearest with ties to even, keeps subnormals, and treats
// overflow and NaN the way PyTorch's c10 types do (c10/util/Half.h, BFloat16.h,
// Float8_e4m3fn.h, Float8_e5m2.h): an F16/E5M2 value that rounds past the largest finite
// number becomes ±Inf; E4M3FN has no infinity, so such a value (and ±Inf) becomes NaN
// (S.1111.111); a NaN keeps its sign and becomes the quiet NaN of the format.

// smallFloat describes a narrow binary float format.
type smallFloat struct {
	ebits, mbits int
	bias         int
	hasInf       bool   // IEEE-like: the top exponent is Inf/NaN
	nan          uint32 // canonical NaN code without the sign
	maxCode      uint32 // largest finite magnitude code
}

var (
	fmtF16    = smallFloat{ebits: 5, mbits: 10, bias: 15, hasInf: true, nan: 0x7e00, maxCode: 0x7bff}
	fmtE5M2   = smallFloat{ebits: 5, mbits: 2, bias: 15, hasInf: true, nan: 0x7f, maxCode: 0x7b}
	fmtE4M3FN = smallFloat{ebits: 4, mbits: 3, bias: 7, hasInf: false, nan: 0x7f, maxCode: 0x7e}
)

func (f smallFloat) signBit() uint32 { return 1 << (f.ebits + f.mbits) }

// decode returns the float64 value of code c.
func (f smallFloat) decode(c uint32) float64 {
	sign := 1.0
	if c&f.signBit() != 0 {
		sign = -1
	}
	mag := c &^ f.signBit()
	e := int(mag >> f.mbits)
	m := float64(mag & (1<<f.mbits - 1))
	top := 1<<f.ebits - 1
	if f.hasInf && e == top {
		if m == 0 {
			return math.Inf(int(sign))
		}
		return math.NaN()
	}
	if !f.hasInf && mag == f.nan {
		return math.NaN()
	}
	if e == 0 {
		return sign * math.Ldexp(m, 1-f.bias-f.mbits)
	}
	return sign * math.Ldexp(1+m/float64(int(1)<<f.mbits), e-f.bias)
}

// encode rounds v (any float64, in practice a float32 value) to the nearest code.
func (f smallFloat) encode(v float64) uint32 {
	var sign uint32
	if math.Signbit(v) {
		sign = f.signBit()
		v = -v
	}
	if math.IsNaN(v) {
		return sign | f.nan
	}
	maxFinite := f.decode(f.maxCode)
	overflow := func() uint32 {
		if f.hasInf {
			return sign | uint32(1<<f.ebits-1)<<f.mbits
		}
		return sign | f.nan
	}
	if math.IsInf(v, 0) {
		return overflow()
	}
	if v == 0 {
		return sign
	}
	emin := 1 - f.bias
	_, e2 := math.Frexp(v) // v = fr·2^e2, fr in [0.5, 1): exponent of v is e2-1
	e := max(e2-1, emin)
	q := math.Ldexp(1, e-f.mbits) // spacing of representable values around v
	r := math.RoundToEven(v / q)
	val := r * q
	if val > maxFinite {
		return overflow()
	}
	if val < math.Ldexp(1, emin) { // subnormal (or rounded up to the smallest normal, which r encodes)
		return sign | uint32(r)
	}
	_, ve := math.Frexp(val)
	ve--
	mant := uint32(math.Ldexp(val, f.mbits-ve)) - 1<<f.mbits
	return sign | uint32(ve+f.bias)<<f.mbits | mant
}

var (
	f8e4m3fnTable = f8Table(fmtE4M3FN)
	f8e5m2Table   = f8Table(fmtE5M2)
	// f16Table decodes every binary16 code (256 KiB, read-only): bulk F16 decoding —
	// convolution weights on every call — is a table lookup instead of bit fiddling
	// with branches (measured: HalfToFloat32 was 12 % of an SD1.5 UNet evaluation).
	f16Table = halfTable()
)

func halfTable() *[1 << 16]float32 {
	t := new([1 << 16]float32)
	for c := range t {
		t[c] = HalfToFloat32(uint16(c))
	}
	return t
}

func f8Table(f smallFloat) (t [256]float32) {
	for c := range t {
		t[c] = float32(f.decode(uint32(c)))
	}
	return t
}

// HalfToFloat32 converts IEEE binary16 bits to float32 (exact).
func HalfToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	e := uint32(h>>10) & 0x1f
	m := uint32(h & 0x3ff)
	switch {
	case e == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | m<<13)
	case e != 0:
		return math.Float32frombits(sign | (e+112)<<23 | m<<13)
	case m == 0:
		return math.Float32frombits(sign)
	}
	// subnormal half: m·2^-24, normalise for float32
	s := uint32(0)
	for m&0x400 == 0 {
		m <<= 1
		s++
	}
	return math.Float32frombits(sign | (113-s)<<23 | (m&0x3ff)<<13)
}

// Float32ToHalf rounds f to IEEE binary16 bits (nearest even; overflow to ±Inf).
func Float32ToHalf(f float32) uint16 { return uint16(fmtF16.encode(float64(f))) }

// BF16ToFloat32 converts bfloat16 bits to float32 (exact).
func BF16ToFloat32(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// Float32ToBF16 rounds f to bfloat16 bits as c10::BFloat16 does: nearest even on the
// dropped 16 bits; NaN becomes the quiet NaN 0x7FC0 (with f's sign).
func Float32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if f != f {
		return uint16(u>>16&0x8000) | 0x7fc0
	}
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}

// F8E4M3FNToFloat32 converts float8 e4m3fn bits to float32 (exact).
func F8E4M3FNToFloat32(b uint8) float32 { return f8e4m3fnTable[b] }

// Float32ToF8E4M3FN rounds f to float8 e4m3fn (nearest even; beyond ±448 → NaN).
func Float32ToF8E4M3FN(f float32) uint8 { return uint8(fmtE4M3FN.encode(float64(f))) }

// F8E5M2ToFloat32 converts float8 e5m2 bits to float32 (exact).
func F8E5M2ToFloat32(b uint8) float32 { return f8e5m2Table[b] }

// Float32ToF8E5M2 rounds f to float8 e5m2 (nearest even; overflow to ±Inf).
func Float32ToF8E5M2(f float32) uint8 { return uint8(fmtE5M2.encode(float64(f))) }

// DecodeFloat32 converts n little-endian elements of the plain float type d in src to
// float32. Quantized types are not decoded here (weights/ owns that).
func DecodeFloat32(d DType, dst []float32, src []byte) error {
	n := len(dst)
	need, err := d.StorageBytes(n)
	if err != nil {
		return err
	}
	if len(src) < need {
		return fmt.Errorf("gpu: decode %s: %d bytes, need %d", d, len(src), need)
	}
	switch d {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case F16:
		src = src[:2*n]
		for i := range dst {
			dst[i] = f16Table[uint16(src[2*i])|uint16(src[2*i+1])<<8]
		}
	case BF16:
		for i := range dst {
			dst[i] = BF16ToFloat32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case F8E4M3FN:
		for i := range dst {
			dst[i] = f8e4m3fnTable[src[i]]
		}
	case F8E5M2:
		for i := range dst {
			dst[i] = f8e5m2Table[src[i]]
		}
	default:
		return fmt.Errorf("gpu: decode %s: quantized blocks are decoded by weights/", d)
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
		for i, v := range src {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		}
	case F16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], Float32ToHalf(v))
		}
	case BF16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], Float32ToBF16(v))
		}
	case F8E4M3FN:
		for i, v := range src {
			dst[i] = Float32ToF8E4M3FN(v)
		}
	case F8E5M2:
		for i, v := range src {
			dst[i] = Float32ToF8E5M2(v)
		}
	default:
		return fmt.Errorf("gpu: encode %s: quantization is not a runtime conversion", d)
	}
	return nil
}

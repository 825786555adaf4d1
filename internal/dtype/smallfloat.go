package dtype

import "math"

// smallFloat describes a narrow binary float format. Its decode and encode work for any
// such format from the field widths alone: they build the float8 tables, round to the
// float8s, and are the reference the binary16 fast paths are tested against.
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

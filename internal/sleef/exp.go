package sleef

import "math"

// fma returns a·b + c rounded once to float32 (the float64 FMA is exact for the
// product; the final rounding to float32 can differ from a true float32 FMA only in
// halfway cases that do not occur for these operands in practice).
func fma(a, b, c float32) float32 {
	return float32(math.FMA(float64(a), float64(b), float64(c)))
}

// Cody–Waite split of ln 2 and the minimax coefficients of SLEEF's expf (u10).
const (
	rLn2 = float32(1.442695040888963407359924681001892137426645954152985934135449406931)
	ln2U = float32(0.693145751953125)
	ln2L = float32(1.428606765330187045e-06)
)

var expCoeffs = [...]float32{
	0.000198527617612853646278381,
	0.00139304355252534151077271,
	0.00833336077630519866943359,
	0.0416664853692054748535156,
	0.166666671633720397949219,
	0.5,
}

// Expf is SLEEF's xexpf: e^d for float32 d, 1.0 ulp, as torch.exp on a float32 tensor.
func Expf(d float32) float32 {
	switch {
	case d != d:
		return d
	case d < -104:
		return 0
	case d > 100:
		return float32(math.Inf(1))
	}
	q := float32(math.RoundToEven(float64(d * rLn2)))
	s := fma(q, -ln2U, d)
	s = fma(q, -ln2L, s)
	u := expCoeffs[0]
	for _, c := range expCoeffs[1:] {
		u = fma(u, s, c)
	}
	u = 1 + fma(s*s, u, s)
	return ldexp2k(u, int(q))
}

// ldexp2k multiplies by 2^q in two halves so that intermediate powers stay finite.
func ldexp2k(u float32, q int) float32 {
	h := q >> 1
	return u * float32(math.Ldexp(1, h)) * float32(math.Ldexp(1, q-h))
}

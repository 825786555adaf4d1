package sampling

import "math"

// betaPPF is the quantile function of the Beta(a, b) distribution (scipy.stats.beta.ppf):
// the x in [0, 1] with I_x(a, b) = q, found by bisection refined with Newton steps on
// the regularized incomplete beta function, to full float64 precision.
func betaPPF(q, a, b float64) float64 {
	switch {
	case q <= 0:
		return 0
	case q >= 1:
		return 1
	}
	lo, hi := 0.0, 1.0
	x := 0.5
	for range 200 {
		f := regIncBeta(x, a, b) - q
		if f == 0 {
			return x
		}
		if f > 0 {
			hi = x
		} else {
			lo = x
		}
		// Newton step with the beta density; fall back to bisection when it leaves the
		// bracket.
		lbeta := lgamma(a) + lgamma(b) - lgamma(a+b)
		pdf := math.Exp((a-1)*math.Log(x) + (b-1)*math.Log1p(-x) - lbeta)
		nx := x - f/pdf
		if !(nx > lo && nx < hi) || math.IsNaN(nx) {
			nx = (lo + hi) / 2
		}
		if math.Abs(nx-x) <= 1e-17 || hi-lo <= 1e-17 {
			return nx
		}
		x = nx
	}
	return x
}

func lgamma(x float64) float64 {
	v, _ := math.Lgamma(x)
	return v
}

// regIncBeta is the regularized incomplete beta function I_x(a, b), by its continued
// fraction (modified Lentz), using the symmetry I_x(a,b) = 1 − I_{1−x}(b,a) where the
// fraction converges faster.
func regIncBeta(x, a, b float64) float64 {
	if x <= 0 {
		return 0
	}
	if x >= 1 {
		return 1
	}
	lbeta := lgamma(a+b) - lgamma(a) - lgamma(b)
	front := math.Exp(math.Log(x)*a + math.Log1p(-x)*b + lbeta)
	if x < (a+1)/(a+b+2) {
		return front * betaCF(x, a, b) / a
	}
	return 1 - front*betaCF(1-x, b, a)/b
}

func betaCF(x, a, b float64) float64 {
	const tiny = 1e-300
	c, d := 1.0, 1-(a+b)*x/(a+1)
	if math.Abs(d) < tiny {
		d = tiny
	}
	d = 1 / d
	h := d
	for m := 1; m <= 10000; m++ {
		fm := float64(m)
		num := fm * (b - fm) * x / ((a + 2*fm - 1) * (a + 2*fm))
		d = 1 + num*d
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = 1 + num/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		h *= d * c
		num = -(a + fm) * (a + b + fm) * x / ((a + 2*fm) * (a + 2*fm + 1))
		d = 1 + num*d
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = 1 + num/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		delta := d * c
		h *= delta
		if math.Abs(delta-1) < 1e-16 {
			break
		}
	}
	return h
}

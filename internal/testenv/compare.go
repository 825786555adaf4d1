package testenv

import (
	"math"
	"testing"
)

// Close reports, with t.Errorf, every element of got that is not within the case
// tolerance of want (|got − want| ≤ abs + rel·|want|), and returns whether all are. A
// NaN or infinite expected value (the fixtures keep what ComfyUI produced and list it in
// nonfinite_tensors) is matched only by the same value; a NaN never passes otherwise. A
// tolerance the case did not give is an error, never a silent zero.
func Close[F ~float32 | ~float64](t testing.TB, name string, got, want []F, tol Tolerance) bool {
	t.Helper()
	if !tol.Given() {
		t.Errorf("testenv: %s: the case gives no tolerance (field tolerance)", name)
		return false
	}
	return CloseWithin(t, name, got, want, tol.Limit)
}

// CloseWithin is Close with the allowed |got − want| given per expected value, for a
// test that documents an allowance on top of the case tolerance (for instance a float32
// ulp of libm differences).
func CloseWithin[F ~float32 | ~float64](t testing.TB, name string, got, want []F, limit func(want float64) float64) bool {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d values, want %d", name, len(got), len(want))
		return false
	}
	bad, worst := 0, 0.0
	for i := range want {
		g, w := float64(got[i]), float64(want[i])
		var ok bool
		switch {
		case math.IsNaN(w):
			ok = math.IsNaN(g)
		case math.IsInf(w, 0):
			ok = g == w
		default:
			d := math.Abs(g - w)
			ok = d <= limit(w) // false for a NaN g
			if !math.IsNaN(d) {
				worst = max(worst, d)
			}
		}
		if !ok {
			if bad < 3 {
				t.Errorf("%s[%d] = %.9g, want %.9g (allowed %.3g)", name, i, g, w, limit(w))
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d values out of tolerance; worst finite diff %.3g", name, bad, len(want), worst)
	}
	return bad == 0
}

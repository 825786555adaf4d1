package gpu

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestRowKernels: the AVX-512 exp/max agree with the Go forms (and with math.Exp) on
// every length 0..70 (all tail masks), −Inf entries (masked scores) and tiny results.
func TestRowKernels(t *testing.T) {
	simd := selectRowKernels(false)
	if !simd.simd {
		t.Skip("no AVX-512 on this CPU: only the Go form exists")
	}
	gen := selectRowKernels(true)
	r := rand.New(rand.NewPCG(9, 9))
	for n := 0; n <= 70; n++ {
		row := randData(r, n)
		for i := range row {
			row[i] *= 30
			if r.IntN(7) == 0 {
				row[i] = float32(math.Inf(-1))
			}
		}
		if g, w := simd.max(row), gen.max(row); g != w {
			t.Fatalf("n=%d: max %v, want %v", n, g, w)
		}
		m := gen.max(row)
		scale := float32(0.37)
		a, b := append([]float32(nil), row...), append([]float32(nil), row...)
		sa, sb := simd.expScale(a, scale, m), gen.expScale(b, scale, m)
		var ref float64
		for i := range row {
			x := float64((row[i] - m) * scale)
			want := math.Exp(x)
			ref += want
			tol := 3e-7*want + 1e-45
			if math.Abs(float64(a[i])-want) > tol || math.Abs(float64(b[i])-want) > tol {
				t.Fatalf("n=%d [%d] x=%v: simd %v go %v want %v", n, i, row[i], a[i], b[i], want)
			}
		}
		if math.Abs(float64(sa)-ref) > 1e-5*ref+1e-30 || math.Abs(float64(sb)-ref) > 1e-5*ref+1e-30 {
			t.Fatalf("n=%d: sums %v %v, want %v", n, sa, sb, ref)
		}
	}
	// a NaN score stays NaN (and so poisons the sum), in both forms
	for _, k := range []rowKernels{simd, gen} {
		row := []float32{1, float32(math.NaN()), 2}
		if s := k.expScale(row, 1, 2); s == s || row[1] == row[1] || row[2] != 1 {
			t.Fatalf("simd=%v: NaN handling: sum %v row %v", k.simd, s, row)
		}
	}
}

// TestActivationKernels: the AVX-512 GELU and SiLU agree with the scalar Go forms within a
// few ulp on every tail length and across the range (tails, zero, ±Inf, large values).
func TestActivationKernels(t *testing.T) {
	simd := selectRowKernels(false)
	if !simd.simd {
		t.Skip("no AVX-512 on this CPU: only the Go form exists")
	}
	r := rand.New(rand.NewPCG(10, 10))
	for _, tc := range []struct {
		name string
		vec  func(dst, src []float32)
		f    func(float32) float32
	}{{"gelu", simd.gelu, geluErf}, {"gelu_tanh", simd.geluTanh, geluTanh}, {"silu", simd.silu, silu}} {
		for n := 0; n <= 70; n++ {
			src := randData(r, n)
			for i := range src {
				src[i] *= 6
			}
			if n > 5 {
				src[0], src[1], src[2], src[3], src[4] = 0, 120, -120, float32(math.Inf(1)), float32(math.Inf(-1))
			}
			dst := make([]float32, n+1)
			dst[n] = 42 // must stay untouched
			tc.vec(dst, src)
			if dst[n] != 42 {
				t.Fatalf("%s n=%d: wrote past the end", tc.name, n)
			}
			for i, x := range src {
				g, w := float64(dst[i]), float64(tc.f(x))
				// GELU's 1+erf cancels for negative x: allow ulps of 1 scaled by |x|/2
				tol := 4e-7*math.Abs(w) + 1.2e-7*math.Abs(float64(x)) + 1e-37
				if math.IsNaN(w) != math.IsNaN(g) || (!math.IsNaN(w) && !(math.Abs(g-w) <= tol) && !(math.IsInf(w, 0) && g == w)) {
					t.Fatalf("%s(%v) = %v, Go form %v", tc.name, x, g, w)
				}
			}
		}
	}
}

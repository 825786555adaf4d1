package gpu

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestBF16Compute checks the optional bfloat16 path: Linear (stored F16 and F32 weights)
// and Conv2D (both conv forms) against a float64 reference within the bound of rounding
// both operands to bfloat16 (2·2⁻⁹ relative each, so |err| ≤ 2⁻⁷·Σ|x·w| with room for
// the float32 sums), and different from the float32 runtime's result, so that the path is
// really taken.
func TestBF16Compute(t *testing.T) {
	rt, err := New(Options{Threads: 2, BF16: BF16On})
	if err != nil {
		t.Fatal(err)
	}
	if !rt.BF16() {
		t.Skipf("no bfloat16 GEMM on this CPU/path: %v", rt.cpu.mm.bf16Err)
	}
	f32, err := New(Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	if f32.BF16() {
		t.Fatal("float32 runtime reports BF16")
	}
	r := rand.New(rand.NewPCG(51, 52))
	check := func(t *testing.T, got, ref *Tensor, want, mag []float64) {
		t.Helper()
		g, err := got.Float32()
		if err != nil {
			t.Fatal(err)
		}
		f, err := ref.Float32()
		if err != nil {
			t.Fatal(err)
		}
		differs := false
		for i, w := range want {
			if d := math.Abs(float64(g[i]) - w); d > mag[i]/128+1e-6 {
				t.Fatalf("element %d: %g, want %g ± %g", i, g[i], w, mag[i]/128)
			}
			differs = differs || g[i] != f[i]
		}
		if !differs {
			t.Fatal("bfloat16 result equals the float32 one: the bfloat16 path was not used")
		}
	}
	for _, wd := range []DType{F32, F16} {
		t.Run("linear-"+wd.String(), func(t *testing.T) {
			const m, n, k = 40, 37, 96
			x, xv := randTensor(t, rt, r, false, m, k)
			wv := randData(r, n*k)
			w, wf := weightOf(t, rt, wd, wv, n, k)
			want := linearRef(xv, wf, nil, m, n, k)
			mag := make([]float64, m*n)
			for i := 0; i < m; i++ {
				for j := 0; j < n; j++ {
					for p := 0; p < k; p++ {
						mag[i*n+j] += math.Abs(xv[i*k+p] * wf[j*k+p])
					}
				}
			}
			w32, _ := weightOf(t, f32, wd, wv, n, k)
			x32 := ok(t)(f32.FromFloat32(toF32(xv), m, k))
			check(t, ok(t)(Linear(rt, x, w, nil)), ok(t)(Linear(f32, x32, w32, nil)), want, mag)
		})
	}
	for form, name := range map[int]string{convFormBand: "conv-band", convFormCol: "conv-col"} {
		t.Run(name, func(t *testing.T) {
			const n, cin, h, wdt, cout = 2, 24, 9, 11, 20
			old := rt.cpu.convForm
			rt.cpu.convForm = form
			defer func() { rt.cpu.convForm = old }()
			x, xv := randTensor(t, rt, r, false, n, cin, h, wdt)
			wv := randData(r, cout*cin*9)
			w := ok(t)(rt.FromFloat32(wv, cout, cin, 3, 3))
			want, oh, ow := convRef(xv, f64(wv), nil, n, cin, h, wdt, cout, 3, 3, 1, 1)
			abs := make([]float64, len(xv))
			for i, v := range xv {
				abs[i] = math.Abs(v)
			}
			wabs := make([]float64, len(wv))
			for i, v := range wv {
				wabs[i] = math.Abs(float64(v))
			}
			mag, _, _ := convRef(abs, wabs, nil, n, cin, h, wdt, cout, 3, 3, 1, 1)
			if oh != h || ow != wdt {
				t.Fatalf("output %dx%d", oh, ow)
			}
			x32 := ok(t)(f32.FromFloat32(toF32(xv), n, cin, h, wdt))
			w32 := ok(t)(f32.FromFloat32(wv, cout, cin, 3, 3))
			check(t, ok(t)(Conv2D(rt, x, w, nil, 1, 1)), ok(t)(Conv2D(f32, x32, w32, nil, 1, 1)), want, mag)
		})
	}
}

func toF32(v []float64) []float32 {
	o := make([]float32, len(v))
	for i, x := range v {
		o[i] = float32(x)
	}
	return o
}

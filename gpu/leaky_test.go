package gpu

import (
	"math"
	"math/rand/v2"
	"testing"
)

// leakyRef is the float32 product the kernel computes, exactly.
func leakyRef(x, a float64) float64 {
	if x < 0 {
		return float64(float32(a) * float32(x))
	}
	return x
}

var (
	_ = addCases(OpLeakyReLU,
		opCase{"slope-strided", func(t *testing.T, rt *Runtime, r *rand.Rand) {
			x, xv := randTensor(t, rt, r, true, 2, 3, 5, 7)
			want := make([]float64, len(xv))
			for i, v := range xv {
				want[i] = leakyRef(v, 0.2)
			}
			checkClose(t, ok(t)(LeakyReLU(rt, x, 0.2)), want, 0, 0)
			e, _ := randTensor(t, rt, r, false, 0, 3)
			checkClose(t, ok(t)(LeakyReLU(rt, e, 0.1)), nil, 0, 0)
		}},
		opCase{"prelu-per-channel", func(t *testing.T, rt *Runtime, r *rand.Rand) {
			const n, c, h, w = 2, 6, 4, 3
			x, xv := randTensor(t, rt, r, false, n, c, h, w)
			a, av := randTensor(t, rt, r, false, c)
			want := make([]float64, len(xv))
			for i, v := range xv {
				want[i] = leakyRef(v, av[(i/(h*w))%c])
			}
			checkClose(t, ok(t)(PReLU(rt, x, a)), want, 0, 0)
			// one weight for every element, on a strided input
			s, sv := randTensor(t, rt, r, true, 3, 4, 5)
			one := ok(t)(rt.FromFloat32([]float32{0.25}, 1))
			for i, v := range sv {
				sv[i] = leakyRef(v, 0.25)
			}
			checkClose(t, ok(t)(PReLU(rt, s, one)), sv, 0, 0)
			if _, err := PReLU(rt, x, one.view([]int{1, 1}, []int{1, 1}, 0)); err == nil {
				t.Error("a 2-d prelu weight was accepted")
			}
			bad := ok(t)(rt.FromFloat32(make([]float32, c+1), c+1))
			if _, err := PReLU(rt, x, bad); err == nil {
				t.Error("a prelu weight of the wrong channel count was accepted")
			}
		}},
	)
	_ = addCases(OpSigmoid, unaryCase(OpSigmoid, Sigmoid, func(x float64) float64 { return 1 / (1 + math.Exp(-x)) }))
)

package gpu

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestGroupNormSiLU checks the fused group norm + SiLU against the two ops, bit for bit,
// on every runtime (the poisoned one, a foreign backend, runs the two ops), with odd
// spatial sizes that leave vector tails.
func TestGroupNormSiLU(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	for name, rt := range runtimesUnderTest(t) {
		for _, shape := range [][]int{{2, 64, 7, 9}, {1, 32, 33}, {3, 8, 1, 1}} {
			x, _ := randTensor(t, rt, r, false, shape...)
			w := ok(t)(rt.FromFloat32(randData(r, shape[1]), shape[1]))
			b := ok(t)(rt.FromFloat32(randData(r, shape[1]), shape[1]))
			h := ok(t)(GroupNorm(rt, x, 8, w, b, 1e-5))
			want := ok(t)(SiLU(rt, h))
			got := ok(t)(GroupNormSiLU(rt, x, 8, w, b, 1e-5))
			wv, _ := want.Float32()
			gv, _ := got.Float32()
			for i := range wv {
				if math.Float32bits(wv[i]) != math.Float32bits(gv[i]) {
					t.Fatalf("%s %v: element %d = %v fused, %v separate", name, shape, i, gv[i], wv[i])
				}
			}
		}
		if _, err := GroupNormSiLU(rt, ok(t)(rt.Zeros(F32, 1, 6, 2)), 4, nil, nil, 1e-5); err == nil {
			t.Errorf("%s: 6 channels in 4 groups accepted", name)
		}
	}
}

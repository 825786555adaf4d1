package gemm

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestLinearGather checks LinearGather against the float64 product with the
// gathered matrix built explicitly: columns at scattered, overlapping and
// repeated offsets (as a convolution's taps are), every path, stored weight
// dtypes, sizes that are not multiples of any tile, accumulate on and off.
func TestLinearGather(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	shapes := []shape{{1, 5, 7}, {12, 32, 9}, {13, 33, 64}, {100, 40, 288}, {37, 320, 90}, {250, 7, 400}}
	for _, e := range enginesUnderTest(t) {
		for _, d := range []DType{F32, F16, BF16, Q8_0} {
			for _, sh := range shapes {
				m, n, k := sh.m, sh.n, sh.k
				if d == Q8_0 && k%32 != 0 {
					continue
				}
				t.Run(fmt.Sprintf("%s/%s/%dx%dx%d", engineName(e), d, m, n, k), func(t *testing.T) {
					data, wf := testWeight(r, d, n, k)
					x := randSlice(r, 3*m+k+50)
					off := make([]int, k)
					for p := range off {
						off[p] = r.IntN(len(x) - m + 1)
					}
					off[0] = len(x) - m // the last column ends exactly at the end of x
					a := make([]float32, m*k)
					for i := 0; i < m; i++ {
						for p := 0; p < k; p++ {
							a[i*k+p] = x[off[p]+i]
						}
					}
					for _, acc := range []bool{false, true} {
						ldy := n + 2
						y := randSlice(r, m*ldy)
						want, mag := refGEMM(false, true, m, n, k, a, k, wf, k, y, ldy, acc)
						if err := e.LinearGather(m, x, off, Weight{DType: d, N: n, K: k, Data: data}, y, ldy, acc); err != nil {
							t.Fatal(err)
						}
						checkClose(t, m, n, k, y, ldy, want, mag)
					}
				})
			}
		}
	}
}

func TestLinearGatherErrors(t *testing.T) {
	e, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	w := Weight{DType: F32, N: 2, K: 3, Data: make([]byte, 24)}
	x, y := make([]float32, 10), make([]float32, 8)
	for _, c := range []struct {
		name string
		m    int
		off  []int
		want string
	}{
		{"short offsets", 4, []int{0, 1}, "2 column offsets for K = 3"},
		{"negative offset", 4, []int{0, -1, 2}, "column 1 at -1"},
		{"past the end", 4, []int{0, 7, 2}, "column 1 at 7"},
		{"negative m", -1, []int{0, 1, 2}, "negative size"},
		{"y too short", 5, []int{0, 1, 2}, "gemm: y:"},
	} {
		err := e.LinearGather(c.m, x, c.off, w, y, 2, false)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.want)
		}
	}
	if err := e.LinearGather(4, x, []int{0, 6, 3}, w, y, 2, false); err != nil {
		t.Errorf("valid gather: %v", err)
	}
}

func TestTranspose(t *testing.T) {
	r := rand.New(rand.NewPCG(33, 34))
	for _, e := range enginesUnderTest(t) {
		for _, sz := range [][2]int{{1, 1}, {4, 16}, {32, 160}, {7, 33}, {13, 5}, {64, 40}} {
			rows, cols := sz[0], sz[1]
			lds, ldd := cols+3, rows+5
			src := randSlice(r, rows*lds)
			dst := randSlice(r, cols*ldd)
			keep := append([]float32(nil), dst...)
			if err := e.Transpose(rows, cols, src, lds, dst, ldd); err != nil {
				t.Fatal(err)
			}
			for c := 0; c < cols; c++ {
				for i := 0; i < ldd; i++ {
					want := keep[c*ldd+i]
					if i < rows {
						want = src[i*lds+c]
					}
					if dst[c*ldd+i] != want {
						t.Fatalf("%s %dx%d: dst[%d][%d] = %g, want %g", engineName(e), rows, cols, c, i, dst[c*ldd+i], want)
					}
				}
			}
		}
		if err := e.Transpose(3, 4, make([]float32, 11), 4, make([]float32, 12), 3); err == nil {
			t.Error("short src accepted")
		}
		if err := e.Transpose(3, 4, make([]float32, 12), 4, make([]float32, 11), 3); err == nil {
			t.Error("short dst accepted")
		}
	}
}

package resample

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestUpscaleErrors(t *testing.T) {
	src := make([]float32, 2*3*4*5)
	cases := []struct {
		name                   string
		src                    []float32
		n, c, h, w, outW, outH int
		method, crop, want     string
	}{
		{"bad method", src, 2, 3, 4, 5, 8, 8, "cubic", "disabled", "unknown upscale_method"},
		{"bad crop", src, 2, 3, 4, 5, 8, 8, "bilinear", "left", "unknown crop"},
		{"zero width", src, 2, 3, 4, 5, 0, 8, "bilinear", "disabled", "must be positive"},
		{"negative height", src, 2, 3, 4, 5, 8, -1, "area", "disabled", "must be positive"},
		{"short data", src[:10], 2, 3, 4, 5, 8, 8, "area", "disabled", "needs 120"},
		{"negative shape", src, -2, 3, 4, 5, 8, 8, "area", "disabled", "negative input shape"},
		{"empty image", nil, 1, 1, 0, 5, 8, 8, "area", "disabled", "empty"},
		{"lanczos channels", src, 2, 3, 4, 5, 8, 8, "lanczos", "disabled", "3-channel"},
		{"lanczos 4 channels", make([]float32, 4*4*5), 1, 4, 4, 5, 8, 8, "lanczos", "disabled", "3-channel"},
		{"crop leaves nothing", make([]float32, 2), 1, 1, 1, 2, 1, 100, "bilinear", "center", "no pixels"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Upscale(tc.src, tc.n, tc.c, tc.h, tc.w, tc.outW, tc.outH, tc.method, tc.crop)
			if tc.name == "lanczos channels" {
				// 2 images of 3 channels is fine for lanczos
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %v, want one containing %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "resample: ") {
				t.Fatalf("error %q lacks the package prefix", err)
			}
		})
	}
}

func randPlanes(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

// TestIdentity: every method except lanczos (8-bit) returns the input at equal size.
func TestIdentity(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	x := randPlanes(r, 2*3*7*5)
	for _, m := range Methods {
		if m == "lanczos" {
			continue
		}
		t.Run(m, func(t *testing.T) {
			got, err := Upscale(x, 2, 3, 7, 5, 5, 7, m, "disabled")
			if err != nil {
				t.Fatal(err)
			}
			for i := range x {
				if math.Abs(float64(got[i]-x[i])) > 1e-6*(1+math.Abs(float64(x[i]))) {
					t.Fatalf("[%d] = %v, want %v", i, got[i], x[i])
				}
			}
		})
	}
}

// TestBilinearReference compares bilinear with a float64 evaluation of PyTorch's rule
// (src = (dst+0.5)·in/out − 0.5 clamped at 0, edge-replicated upper neighbour) on odd sizes.
func TestBilinearReference(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	sizes := [][4]int{{1, 1, 3, 4}, {1, 1, 7, 11}, {9, 13, 5, 3}, {1, 1, 1, 1}, {6, 1, 17, 2}, {3, 3, 1, 9}}
	for _, s := range sizes {
		h, w, oh, ow := s[0], s[1], s[2], s[3]
		x := randPlanes(r, 2*h*w)
		got, err := Upscale(x, 2, 1, h, w, ow, oh, "bilinear", "disabled")
		if err != nil {
			t.Fatal(err)
		}
		idx := func(o, in, out int) (int, int, float64) {
			if in == out {
				return o, o, 0
			}
			s := (float64(o)+0.5)*float64(in)/float64(out) - 0.5
			s = max(s, 0)
			i0 := min(int(math.Floor(s)), in-1)
			i1 := min(i0+1, in-1)
			return i0, i1, min(max(s-float64(i0), 0), 1)
		}
		for p := 0; p < 2; p++ {
			for y := 0; y < oh; y++ {
				y0, y1, ly := idx(y, h, oh)
				for xx := 0; xx < ow; xx++ {
					x0, x1, lx := idx(xx, w, ow)
					at := func(a, b int) float64 { return float64(x[p*h*w+a*w+b]) }
					want := (1-ly)*((1-lx)*at(y0, x0)+lx*at(y0, x1)) + ly*((1-lx)*at(y1, x0)+lx*at(y1, x1))
					g := float64(got[p*oh*ow+y*ow+xx])
					if math.Abs(g-want) > 1e-5 {
						t.Fatalf("%v: (%d,%d) = %v, want %v", s, y, xx, g, want)
					}
				}
			}
		}
	}
}

// TestAreaBlockMean: an integer-factor area downscale is the mean of each block.
func TestAreaBlockMean(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	x := randPlanes(r, 6*9)
	got, err := Upscale(x, 1, 1, 6, 9, 3, 2, "area", "disabled")
	if err != nil {
		t.Fatal(err)
	}
	for oy := 0; oy < 2; oy++ {
		for ox := 0; ox < 3; ox++ {
			var s float64
			for y := 0; y < 3; y++ {
				for xx := 0; xx < 3; xx++ {
					s += float64(x[(oy*3+y)*9+ox*3+xx])
				}
			}
			if math.Abs(float64(got[oy*3+ox])-s/9) > 1e-5 {
				t.Fatalf("(%d,%d) = %v, want %v", oy, ox, got[oy*3+ox], s/9)
			}
		}
	}
}

// TestCenterCropMargins checks the margin rule against hand-worked values.
func TestCenterCropMargins(t *testing.T) {
	cases := []struct{ w, h, ow, oh, x, y int }{
		{8, 8, 16, 12, 0, 1},     // (8 - 8*0.75)/2 = 1
		{8, 8, 12, 16, 1, 0},     // wider input than target
		{8, 8, 16, 16, 0, 0},     // same aspect
		{10, 4, 1, 1, 3, 0},      // (10-4)/2 = 3
		{5, 4, 1, 1, 0, 0},       // (5-4)/2 = 0.5 rounds to even 0
		{7, 4, 1, 1, 2, 0},       // 1.5 rounds to even 2
		{4, 13, 1, 1, 0, 4},      // 4.5 rounds to even 4
		{640, 480, 5, 6, 120, 0}, // (640 - 640*0.625)/2
	}
	for _, tc := range cases {
		x, y := centerCrop(tc.w, tc.h, tc.ow, tc.oh)
		if x != tc.x || y != tc.y {
			t.Errorf("centerCrop(%d,%d -> %d,%d) = %d,%d want %d,%d", tc.w, tc.h, tc.ow, tc.oh, x, y, tc.x, tc.y)
		}
	}
}

// TestEmptyBatch: zero images give an empty result, not an error.
func TestEmptyBatch(t *testing.T) {
	for _, m := range Methods {
		got, err := Upscale(nil, 0, 4, 8, 8, 16, 16, m, "center")
		if err != nil || len(got) != 0 {
			t.Errorf("%s: got %d values, err %v", m, len(got), err)
		}
	}
}

// TestBislerpConstant: a constant image stays constant under bislerp (equal directions).
func TestBislerpConstant(t *testing.T) {
	x := make([]float32, 4*5*3)
	for c := 0; c < 4; c++ {
		for i := 0; i < 15; i++ {
			x[c*15+i] = float32(c) - 1.5
		}
	}
	got, err := Upscale(x, 1, 4, 5, 3, 7, 9, "bislerp", "disabled")
	if err != nil {
		t.Fatal(err)
	}
	for c := 0; c < 4; c++ {
		for i := 0; i < 63; i++ {
			if math.Abs(float64(got[c*63+i])-(float64(c)-1.5)) > 1e-6 {
				t.Fatalf("channel %d [%d] = %v", c, i, got[c*63+i])
			}
		}
	}
}

func TestGatherIndices(t *testing.T) {
	for _, m := range []string{"nearest", "nearest-exact"} {
		for _, sz := range [][2]int{{5, 9}, {7, 3}, {4, 8}, {6, 6}} {
			in, out := sz[0], sz[1]
			src := make([]float32, in)
			for i := range src {
				src[i] = float32(i)
			}
			// one row resized along x by Upscale is the index table itself
			want, err := Upscale(src, 1, 1, 1, in, out, 1, m, "disabled")
			if err != nil {
				t.Fatal(err)
			}
			idx, ok := GatherIndices(m, in, out)
			if !ok || len(idx) != out {
				t.Fatalf("%s %v: %v %v", m, sz, idx, ok)
			}
			for i := range idx {
				if float32(idx[i]) != want[i] {
					t.Errorf("%s %v: index %d = %d, Upscale took %v", m, sz, i, idx[i], want[i])
				}
			}
		}
	}
	if _, ok := GatherIndices("bilinear", 4, 8); ok {
		t.Error("bilinear reported as a gather")
	}
}

// TestUpscaleInto checks that UpscaleInto gives exactly Upscale's values for every
// method, crop and a range of factors (2× exactly, which takes the duplicating path,
// 3×, shrinking, odd sizes), and refuses a destination of the wrong size.
func TestUpscaleInto(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, method := range Methods {
		for _, crop := range Crops {
			for _, sz := range [][4]int{{5, 7, 10, 14}, {8, 8, 16, 16}, {6, 9, 18, 27}, {9, 6, 4, 5}, {3, 4, 8, 3}} {
				h, w, oh, ow := sz[0], sz[1], sz[2], sz[3]
				c := 2
				if method == "lanczos" {
					c = 3
				}
				src := make([]float32, 2*c*h*w)
				for i := range src {
					src[i] = r.Float32()
				}
				want, err := Upscale(src, 2, c, h, w, ow, oh, method, crop)
				if err != nil {
					t.Fatal(err)
				}
				got := make([]float32, len(want))
				if err := UpscaleInto(got, src, 2, c, h, w, ow, oh, method, crop); err != nil {
					t.Fatal(err)
				}
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("%s/%s %v: value %d = %v, Upscale %v", method, crop, sz, i, got[i], want[i])
					}
				}
				if err := UpscaleInto(got[:len(got)-1], src, 2, c, h, w, ow, oh, method, crop); err == nil {
					t.Fatalf("%s/%s %v: a short destination was accepted", method, crop, sz)
				}
			}
		}
	}
}

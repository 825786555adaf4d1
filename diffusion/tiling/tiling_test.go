package tiling

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"
)

func randVals(seed uint64, n int) []float32 {
	r := rand.New(rand.NewPCG(seed, 1))
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

func TestFeatherMask(t *testing.T) {
	tests := []struct {
		n, feather int
		want       []float32
	}{
		{5, 2, []float32{0.5, 1, 1, 1, 0.5}},
		{6, 3, []float32{1.0 / 3, 2.0 / 3, 1, 1, 2.0 / 3, 1.0 / 3}},
		// Ramps from both edges meet: the middle index gets both factors.
		{3, 2, []float32{0.5, 1, 0.5}},
		{4, 3, []float32{1.0 / 3, 2.0 / 3, 2.0 / 3, 1.0 / 3}},
		{4, 4, []float32{1, 1, 1, 1}}, // feather ≥ n: no ramp
		{4, 0, []float32{1, 1, 1, 1}},
	}
	for _, tc := range tests {
		m := FeatherMask(tc.n, tc.feather)
		for i, w := range tc.want {
			if g := m[i].Apply(1); math.Abs(float64(g-w)) > 1e-7 {
				t.Errorf("FeatherMask(%d, %d)[%d] = %v, want %v", tc.n, tc.feather, i, g, w)
			}
		}
	}
}

func TestTilePositions(t *testing.T) {
	tests := []struct {
		n, tile, overlap int
		want             []int
	}{
		{64, 64, 8, []int{0}},
		{100, 64, 8, []int{0, 56}},
		{128, 32, 8, []int{0, 24, 48, 72, 96}},
	}
	for _, tc := range tests {
		got, err := Positions(tc.n, tc.tile, tc.overlap)
		if err != nil || len(got) != len(tc.want) {
			t.Fatalf("Positions(%d, %d, %d) = %v, %v; want %v", tc.n, tc.tile, tc.overlap, got, err, tc.want)
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Fatalf("Positions(%d, %d, %d) = %v, want %v", tc.n, tc.tile, tc.overlap, got, tc.want)
			}
		}
	}
	if _, err := Positions(100, 8, 8); err == nil {
		t.Error("a tile no larger than the overlap was accepted")
	}
}

// TestTiledScaleLocalFunction runs the tiler with functions whose output at a point
// depends only on that point (nearest 2× upscale; 2×2 average pooling): the blended
// tiles must then equal the function applied to the whole input.
func TestTiledScaleLocalFunction(t *testing.T) {
	const c, h, w = 2, 20, 28
	in := randVals(3, c*h*w)
	up := func(x []float32, th, tw int) ([]float32, int, int, error) {
		out := make([]float32, c*4*th*tw)
		for ch := 0; ch < c; ch++ {
			for y := 0; y < 2*th; y++ {
				for xx := 0; xx < 2*tw; xx++ {
					out[(ch*2*th+y)*2*tw+xx] = x[(ch*th+y/2)*tw+xx/2]
				}
			}
		}
		return out, 2 * th, 2 * tw, nil
	}
	pool := func(x []float32, th, tw int) ([]float32, int, int, error) {
		oh, ow := th/2, tw/2
		out := make([]float32, c*oh*ow)
		for ch := 0; ch < c; ch++ {
			for y := 0; y < oh; y++ {
				for xx := 0; xx < ow; xx++ {
					s := x[(ch*th+2*y)*tw+2*xx] + x[(ch*th+2*y)*tw+2*xx+1] + x[(ch*th+2*y+1)*tw+2*xx] + x[(ch*th+2*y+1)*tw+2*xx+1]
					out[(ch*oh+y)*ow+xx] = s / 4
				}
			}
		}
		return out, oh, ow, nil
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name         string
		fn           Func
		scale        float64
		tile, overl  int
		wantH, wantW int
	}{
		{"upscale", up, 2, 8, 2, 2 * h, 2 * w},
		{"pool", pool, 0.5, 8, 4, h / 2, w / 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, _, _, _ := tc.fn(in, h, w)
			got, oh, ow, err := Scale(ctx, in, c, h, w, tc.tile, tc.tile+4, tc.overl, tc.scale, c, tc.fn)
			if err != nil {
				t.Fatal(err)
			}
			if oh != tc.wantH || ow != tc.wantW {
				t.Fatalf("%dx%d, want %dx%d", ow, oh, tc.wantW, tc.wantH)
			}
			for i := range want {
				if d := math.Abs(float64(got[i] - want[i])); d > 1e-5 {
					t.Fatalf("[%d] = %v, want %v", i, got[i], want[i])
				}
			}
		})
	}
}

func TestSteps(t *testing.T) {
	// get_tiled_scale_steps: ceil((n − overlap) / (tile − overlap)) per dimension above
	// one tile, and exactly the tiles Scale runs.
	for _, tc := range []struct{ w, h, tile, overlap, want int }{
		{512, 512, 512, 32, 1},
		{513, 512, 512, 32, 2},
		{1000, 600, 512, 32, 6},
		{2048, 100, 256, 32, 9},
		{2049, 100, 256, 32, 10},
	} {
		if got := Steps(tc.w, tc.h, tc.tile, tc.tile, tc.overlap); got != tc.want {
			t.Errorf("Steps(%d, %d, %d, %d) = %d, want %d", tc.w, tc.h, tc.tile, tc.overlap, got, tc.want)
		}
		calls := 0
		fn := func(x []float32, th, tw int) ([]float32, int, int, error) {
			calls++
			return x, th, tw, nil
		}
		if _, _, _, err := Scale(context.Background(), make([]float32, tc.w*tc.h), 1, tc.h, tc.w, tc.tile, tc.tile, tc.overlap, 1, 1, fn); err != nil {
			t.Fatal(err)
		}
		if calls != tc.want {
			t.Errorf("%dx%d: Scale ran %d tiles, Steps says %d", tc.w, tc.h, calls, tc.want)
		}
	}
}

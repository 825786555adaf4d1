package sd

import (
	"context"
	"strings"
	"testing"
)

// TestResolveRegion checks resolve_areas_and_cond_masks' rules: percentages rounded
// half to even with a size of at least 1, a latent-sized mask kept as it is, "mask
// bounds" over the whole batch grown to 8×8, an empty mask's 8×8 at the origin, and
// the errors.
func TestResolveRegion(t *testing.T) {
	plane := func(h, w int, set ...[2]int) []float32 {
		m := make([]float32, h*w)
		for _, p := range set {
			m[p[0]*w+p[1]] = 0.5
		}
		return m
	}
	two := append(plane(16, 12, [2]int{3, 4}), plane(16, 12, [2]int{12, 10})...)
	cases := []struct {
		name string
		c    Cond
		want *Area
		err  string
	}{
		{name: "none", c: Cond{}},
		{name: "percent", c: Cond{AreaPercent: &AreaPercent{Height: 0.5, Width: 0.125, Y: 0.25, X: 0.625}},
			// 8, 1.5→2, 4, 7.5→8
			want: &Area{Height: 8, Width: 2, Y: 4, X: 8}},
		{name: "percent half to even", c: Cond{AreaPercent: &AreaPercent{Height: 0.15625, Width: 0.0, Y: 0.03125, X: 0.375}},
			// 2.5→2, 0→1 (at least 1), 0.5→0, 4.5→4
			want: &Area{Height: 2, Width: 1, Y: 0, X: 4}},
		{name: "mask bounds over the batch", c: Cond{Mask: &CondMask{Data: two, N: 2, H: 16, W: 12}, SetAreaToBounds: true},
			want: &Area{Height: 10, Width: 8, Y: 3, X: 4}},
		{name: "mask bounds at least 8", c: Cond{Mask: &CondMask{Data: plane(16, 12, [2]int{5, 6}), N: 1, H: 16, W: 12}, SetAreaToBounds: true},
			want: &Area{Height: 8, Width: 8, Y: 5, X: 6}},
		{name: "empty mask bounds", c: Cond{Mask: &CondMask{Data: plane(16, 12), N: 1, H: 16, W: 12}, SetAreaToBounds: true},
			want: &Area{Height: 8, Width: 8}},
		{name: "mask default keeps the area", c: Cond{Area: &Area{Height: 2, Width: 3, Y: 1, X: 1}, Mask: &CondMask{Data: plane(16, 12), N: 1, H: 16, W: 12}},
			want: &Area{Height: 2, Width: 3, Y: 1, X: 1}},
		{name: "both areas", c: Cond{Area: &Area{Height: 1, Width: 1}, AreaPercent: &AreaPercent{}}, err: "both"},
		{name: "percent out of range", c: Cond{AreaPercent: &AreaPercent{Height: 1.5}}, err: "within 0..1"},
		{name: "bad mask", c: Cond{Mask: &CondMask{Data: make([]float32, 5), N: 1, H: 2, W: 2}}, err: "not a non-empty"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			area, mask, n, err := resolveRegion(tc.c, 16, 12)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (area == nil) != (tc.want == nil) || (area != nil && *area != *tc.want) {
				t.Fatalf("area %+v, want %+v", area, tc.want)
			}
			if tc.c.Mask != nil && (n != tc.c.Mask.N || len(mask) != n*16*12 || &mask[0] != &tc.c.Mask.Data[0]) {
				t.Fatalf("a latent-sized mask should be used as it is (%d planes, %d values)", n, len(mask))
			}
		})
	}
}

// TestMaskMultAndBatch checks a masked entry's weight (mask·mask_strength·strength,
// no feathering inside an area) and that a mask batch that does not divide the latent
// batch is an error, as in ComfyUI.
func TestMaskMultAndBatch(t *testing.T) {
	mask := make([]float32, 2*4*4)
	for i := range mask {
		mask[i] = float32(i) / 32
	}
	c := &modelCond{area: &Area{Height: 2, Width: 2, Y: 1, X: 2}, strength: 2, mask: mask, maskN: 2, maskStrength: 0.5,
		sigmaStart: 1e9}
	e, err := areaAndMult(0, c, 4, 4, 1)
	if err != nil {
		t.Fatal(err)
	}
	if e.multN != 2 || len(e.mult) != 8 {
		t.Fatalf("mult %d planes, %d values", e.multN, len(e.mult))
	}
	for b := 0; b < 2; b++ {
		for y := 0; y < 2; y++ {
			for x := 0; x < 2; x++ {
				want := mask[(b*4+1+y)*4+2+x] * 0.5 * 2
				if got := e.mult[(b*2+y)*2+x]; got != want {
					t.Fatalf("mult[%d,%d,%d] = %v, want %v", b, y, x, got, want)
				}
			}
		}
	}
	d := &denoiser{g: &Guider{}, shape: [4]int{3, 1, 4, 4}}
	_, err = d.calcCondBatch(context.Background(), [][]modelCond{{*c}}, make([]float32, 48), 1, skipNone)
	if err == nil || !strings.Contains(err.Error(), "does not fit a batch of 3") {
		t.Fatalf("error %v", err)
	}
}

package builtin

import (
	"context"
	"math"
	"strings"
	"testing"
)

// The reference kit has no kornia, so Canny is checked on cases worked by hand from
// kornia's documented steps (canny.go).

// lineImage is an h×w RGB image, black but for vertical lines: column x at colour c.
func lineImage(h, w int, lines map[int][3]float32) *Image {
	im, _ := NewImage(1, h, w, 3)
	for y := 0; y < h; y++ {
		for x, c := range lines {
			copy(im.Pix[(y*w+x)*3:], c[:])
		}
	}
	return im
}

func cannyOf(t *testing.T, im *Image, low, high float64) *Image {
	t.Helper()
	res, err := (&Canny{Image: im, LowThreshold: low, HighThreshold: high}).Run(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return res.Outputs[0].(*Image)
}

// edgeColumns returns, for row y, the columns holding an edge, checking that all three
// output channels agree.
func edgeColumns(t *testing.T, im *Image, y int) []int {
	t.Helper()
	var cols []int
	for x := 0; x < im.Width; x++ {
		p := im.Pix[(y*im.Width+x)*3:]
		if p[0] != p[1] || p[1] != p[2] || (p[0] != 0 && p[0] != 1) {
			t.Fatalf("pixel (%d, %d) = %v: not a grey 0/1 edge", x, y, p[:3])
		}
		if p[0] == 1 {
			cols = append(cols, x)
		}
	}
	return cols
}

func TestCannyThinLine(t *testing.T) {
	// A white line at column 4 of a 9-wide image. The 5-tap Gaussian (σ 1) spreads it
	// to g = (0.0545, 0.2442, 0.4026, 0.2442, 0.0545) over columns 2…6; rows are alike,
	// so Sobel's gx is 4·(b[x+1] − b[x−1]) and gy 0. Magnitudes: column 3 and 5:
	// 4·(0.4026 − 0.0545) = 1.392; columns 2 and 6: 4·0.2442 = 0.977; column 4 ≈ 0.001;
	// column 1 and 7: 4·0.0545 = 0.218. Along x only columns 3 and 5 beat both
	// neighbours, and 1.392 > 0.8: the two edges flank the line.
	out := cannyOf(t, lineImage(5, 9, map[int][3]float32{4: {1, 1, 1}}), 0.4, 0.8)
	if out.Channels != 3 || out.Height != 5 || out.Width != 9 {
		t.Fatalf("output %v", out.Shape())
	}
	for y := 0; y < 5; y++ {
		if got := edgeColumns(t, out, y); len(got) != 2 || got[0] != 3 || got[1] != 5 {
			t.Errorf("row %d: edges at %v, want [3 5]", y, got)
		}
	}
	// At 0.6 grey the flanks' magnitude is 0.835: below thresholds of 0.95/0.99, nothing.
	out = cannyOf(t, lineImage(5, 9, map[int][3]float32{4: {0.6, 0.6, 0.6}}), 0.95, 0.99)
	for y := 0; y < 5; y++ {
		if got := edgeColumns(t, out, y); len(got) != 0 {
			t.Errorf("thresholds 0.95/0.99: row %d edges at %v", y, got)
		}
	}
}

func TestCannyGreyWeightsAndHysteresis(t *testing.T) {
	// A pure red line is grey 0.299: magnitude 0.299·1.392 = 0.416. Strong only when
	// high < 0.416; weak (between 0.4 and 0.8) and alone it is dropped.
	red := lineImage(5, 9, map[int][3]float32{4: {1, 0, 0}})
	for _, tc := range []struct {
		low, high float64
		want      int
	}{{0.4, 0.8, 0}, {0.3, 0.41, 2}, {0.3, 0.42, 0}} {
		out := cannyOf(t, red, tc.low, tc.high)
		if got := edgeColumns(t, out, 2); len(got) != tc.want {
			t.Errorf("red line, thresholds %v/%v: edges at %v, want %d", tc.low, tc.high, got, tc.want)
		}
	}
	// A line bright (1) in rows 0–5 and dim (0.5: magnitude 0.696, weak) in rows 6–13:
	// the dim part's edges stay, connected to the bright part's; a separate dim line
	// at column 14 has no strong pixel and goes.
	im, _ := NewImage(1, 14, 20, 3)
	for y := 0; y < 14; y++ {
		v := float32(1)
		if y >= 6 {
			v = 0.5
		}
		for c := 0; c < 3; c++ {
			im.Pix[(y*20+4)*3+c] = v
			im.Pix[(y*20+14)*3+c] = 0.5
		}
	}
	out := cannyOf(t, im, 0.4, 0.8)
	for _, y := range []int{0, 1, 2, 3, 9, 10, 11, 12, 13} {
		got := edgeColumns(t, out, y)
		if len(got) != 2 || got[0] != 3 || got[1] != 5 {
			t.Errorf("row %d: edges at %v, want [3 5]", y, got)
		}
	}
}

func TestCannyErrors(t *testing.T) {
	im := lineImage(5, 9, map[int][3]float32{4: {1, 1, 1}})
	if _, err := (&Canny{Image: im, LowThreshold: 0.8, HighThreshold: 0.4}).Run(context.Background(), nil); err == nil ||
		!strings.Contains(err.Error(), "low_threshold should be smaller than the high_threshold") {
		t.Errorf("low > high: %v", err)
	}
	tiny, _ := NewImage(1, 2, 9, 3)
	if _, err := (&Canny{Image: tiny, LowThreshold: 0.4, HighThreshold: 0.8}).Run(context.Background(), nil); err == nil {
		t.Error("a 2-pixel-high image passes the 5×5 reflect blur")
	}
}

func TestGaussian5Taps(t *testing.T) {
	// An impulse in the middle of a 9×9 plane blurs to the outer product of the taps.
	src := make([]float32, 81)
	src[40] = 1
	b := gaussian5(src, 9, 9)
	taps := []float64{0.054488685, 0.24420135, 0.40261996, 0.24420135, 0.054488685}
	for dy := -2; dy <= 2; dy++ {
		for dx := -2; dx <= 2; dx++ {
			want := taps[dy+2] * taps[dx+2]
			if got := float64(b[(4+dy)*9+4+dx]); math.Abs(got-want) > 1e-7 {
				t.Errorf("(%d, %d) = %.9f, want %.9f", dx, dy, got, want)
			}
		}
	}
}

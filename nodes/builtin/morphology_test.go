package builtin

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/forgeflow/forgeflow/nodes"
)

// kornia081 is kornia 0.8.1's unfold engine transcribed literally for a k×k kernel of
// ones: F.pad with ±max_val (k/2 before, k − k/2 − 1 after, on both axes), then the
// maximum (dilation) or minimum (erosion) over every k×k window, on an H×W×C frame.
func kornia081(src []float32, h, w, c, k int, dilate bool) []float32 {
	pad := float32(1e4)
	if dilate {
		pad = -1e4
	}
	lo := k / 2
	at := func(y, x, ch int) float32 {
		if y < 0 || y >= h || x < 0 || x >= w {
			return pad
		}
		return src[(y*w+x)*c+ch]
	}
	out := make([]float32, len(src))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			for ch := 0; ch < c; ch++ {
				best := at(y-lo, x-lo, ch)
				for i := 0; i < k; i++ {
					for j := 0; j < k; j++ {
						v := at(y-lo+i, x-lo+j, ch)
						if (dilate && v > best) || (!dilate && v < best) {
							best = v
						}
					}
				}
				out[(y*w+x)*c+ch] = best
			}
		}
	}
	return out
}

// kornia081Op composes the reference as kornia's opening, closing, gradient, top_hat
// and bottom_hat do.
func kornia081Op(op string, src []float32, h, w, c, k int) []float32 {
	dil := func(x []float32) []float32 { return kornia081(x, h, w, c, k, true) }
	ero := func(x []float32) []float32 { return kornia081(x, h, w, c, k, false) }
	sub := func(a, b []float32) []float32 {
		out := make([]float32, len(a))
		for i := range a {
			out[i] = a[i] - b[i]
		}
		return out
	}
	switch op {
	case "erode":
		return ero(src)
	case "dilate":
		return dil(src)
	case "open":
		return dil(ero(src))
	case "close":
		return ero(dil(src))
	case "gradient":
		return sub(dil(src), ero(src))
	case "top_hat":
		return sub(src, dil(ero(src)))
	case "bottom_hat":
		return sub(ero(dil(src)), src)
	}
	panic(op)
}

// TestMorphologyMatchesKornia compares every operation, odd and even kernels and
// kernels larger than the image with the literal transcription, bit for bit.
func TestMorphologyMatchesKornia(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, shape := range [][4]int{{2, 7, 9, 3}, {1, 5, 4, 1}, {1, 3, 11, 4}} {
		im := filled(shape[0], shape[1], shape[2], shape[3], 0)
		for i := range im.Pix {
			im.Pix[i] = float32(r.IntN(7)) / 6 // ties, as in real masks
		}
		for _, k := range []int{3, 4, 5, 6, 8, 13} {
			for _, op := range morphologyOps {
				res, err := run(t, Options{}, nil, "Morphology", nodes.Inputs{"image": im, "operation": op, "kernel_size": k})
				if err != nil {
					t.Fatal(err)
				}
				got := res.Outputs[0].(*Image)
				for b := 0; b < im.Batch; b++ {
					want := kornia081Op(op, im.Frame(b), im.Height, im.Width, im.Channels, k)
					for i, v := range got.Frame(b) {
						if v != want[i] {
							t.Fatalf("%v k=%d %s: [%d][%d] = %v, want %v", shape, k, op, b, i, v, want[i])
						}
					}
				}
			}
		}
	}
}

// TestMorphologyWindow pins the window's placement by hand: kornia 0.8.1 anchors a k×k
// kernel at (k/2, k/2), so an even kernel reaches two pixels up/left and one
// down/right, and dilating one white pixel at (2, 2) with k = 4 whitens rows and
// columns 1…4 (a reflected kernel, as later kornia releases use, would give 0…3).
func TestMorphologyWindow(t *testing.T) {
	im := filled(1, 6, 6, 1, 0)
	im.Pix[2*6+2] = 1
	res := mustRun(t, "Morphology", nodes.Inputs{"image": im, "operation": "dilate", "kernel_size": 4})
	got := res.Outputs[0].(*Image)
	for y := 0; y < 6; y++ {
		for x := 0; x < 6; x++ {
			want := float32(0)
			if y >= 1 && y <= 4 && x >= 1 && x <= 4 {
				want = 1
			}
			if v := got.Pix[y*6+x]; v != want {
				t.Fatalf("(%d, %d) = %v, want %v", x, y, v, want)
			}
		}
	}
	// The geodesic border ignores the outside: eroding a white image keeps it white.
	res = mustRun(t, "Morphology", nodes.Inputs{"image": filled(1, 4, 5, 3, 1), "operation": "erode", "kernel_size": 3})
	checkPix(t, res.Outputs[0].(*Image).Pix, filled(1, 4, 5, 3, 1).Pix, 0)
}

// TestYUV checks the conversions on primaries worked out from kornia 0.8.1's formulas,
// the broadcast of each plane over three channels, the channel mean of the inverse, a
// round trip (the coefficients are rounded, so within 2e-3) and the shape errors.
func TestYUV(t *testing.T) {
	im := img(1, 1, 3, 3, 1, 0, 0, 0, 1, 0, 0.25, 0.5, 0.75)
	res := mustRun(t, "ImageRGBToYUV", nodes.Inputs{"image": im})
	want := [3][]float32{
		{0.299, 0.587, 0.299*0.25 + 0.587*0.5 + 0.114*0.75},
		{-0.299*0.564 + 0.5, -0.587*0.564 + 0.5, (0.75-(0.299*0.25+0.587*0.5+0.114*0.75))*0.564 + 0.5},
		{0.701*0.713 + 0.5, -0.587*0.713 + 0.5, (0.25-(0.299*0.25+0.587*0.5+0.114*0.75))*0.713 + 0.5},
	}
	for p := 0; p < 3; p++ {
		plane := res.Outputs[p].(*Image)
		if plane.Channels != 3 || plane.Width != 3 || plane.Height != 1 {
			t.Fatalf("plane %d is %dx%dx%d", p, plane.Width, plane.Height, plane.Channels)
		}
		for i, w := range want[p] {
			for c := 0; c < 3; c++ {
				if v := plane.Pix[3*i+c]; math.Abs(float64(v-w)) > 1e-6 {
					t.Errorf("plane %d pixel %d channel %d = %v, want %v", p, i, c, v, w)
				}
			}
		}
	}
	back := mustRun(t, "ImageYUVToRGB", nodes.Inputs{"Y": res.Outputs[0], "U": res.Outputs[1], "V": res.Outputs[2]})
	checkPix(t, back.Outputs[0].(*Image).Pix, im.Pix, 2e-3)

	// One-channel planes and a plane whose channels differ (their mean counts); the
	// result is clamped: Y = 1 with Cr = 1 would give R = 1.7015.
	y := img(1, 1, 2, 1, 1, 0.5)
	u := img(1, 1, 2, 3, 0.5, 0.5, 0.5, 0.2, 0.5, 0.8)
	v := img(1, 1, 2, 1, 1, 0.5)
	got := mustRun(t, "ImageYUVToRGB", nodes.Inputs{"Y": y, "U": u, "V": v}).Outputs[0].(*Image)
	checkPix(t, got.Pix, []float32{1, float32(1 - 0.714*0.5), 1, 0.5, 0.5, 0.5}, 1e-6)

	_, err := run(t, Options{}, nil, "ImageRGBToYUV", nodes.Inputs{"image": filled(1, 2, 2, 4, 0)})
	wantErr(t, err, "want 3")
	_, err = run(t, Options{}, nil, "ImageYUVToRGB", nodes.Inputs{"Y": y, "U": filled(1, 2, 2, 3, 0), "V": v})
	wantErr(t, err, "must match")
}

package builtin

import (
	"testing"

	"github.com/forgeflow/forgeflow/nodes"
)

// abcdef is the 3x2 one-channel picture
//
//	A B C
//	D E F
func abcdef() *Image { return img(1, 2, 3, 1, 1, 2, 3, 4, 5, 6) }

const a, b, c, d, e, f = 1, 2, 3, 4, 5, 6

func TestImageFlip(t *testing.T) {
	tests := []struct {
		method string
		want   []float32
	}{
		{"x-axis: vertically", []float32{d, e, f, a, b, c}},
		{"y-axis: horizontally", []float32{c, b, a, f, e, d}},
	}
	for _, tc := range tests {
		t.Run(tc.method, func(t *testing.T) {
			im := mustRun(t, "ImageFlip", nodes.Inputs{"image": abcdef(), "flip_method": tc.method}).Outputs[0].(*Image)
			checkShape(t, im.Shape(), []int{1, 2, 3, 1})
			checkPix(t, im.Pix, tc.want, 0)
		})
	}
}

func TestImageRotate(t *testing.T) {
	tests := []struct {
		rotation string
		shape    []int
		want     []float32
	}{
		{"none", []int{1, 2, 3, 1}, []float32{a, b, c, d, e, f}},
		{"90 degrees", []int{1, 3, 2, 1}, []float32{d, a, e, b, f, c}}, // clockwise
		{"180 degrees", []int{1, 2, 3, 1}, []float32{f, e, d, c, b, a}},
		{"270 degrees", []int{1, 3, 2, 1}, []float32{c, f, b, e, a, d}},
	}
	for _, tc := range tests {
		t.Run(tc.rotation, func(t *testing.T) {
			im := mustRun(t, "ImageRotate", nodes.Inputs{"image": abcdef(), "rotation": tc.rotation}).Outputs[0].(*Image)
			checkShape(t, im.Shape(), tc.shape)
			checkPix(t, im.Pix, tc.want, 0)
		})
	}
}

func TestGetImageSize(t *testing.T) {
	res := mustRun(t, "GetImageSize", nodes.Inputs{"image": filled(4, 2, 3, 3, 0)})
	if res.Outputs[0] != int64(3) || res.Outputs[1] != int64(2) || res.Outputs[2] != int64(4) {
		t.Fatalf("outputs %v, want width 3, height 2, batch 4", res.Outputs)
	}
}

func TestImageScaleToTotalPixels(t *testing.T) {
	// total = int(0.01·1024²) = 10485; s = sqrt(10485/2) = 72.40...; 2s = 144.8 → 145.
	im := mustRun(t, "ImageScaleToTotalPixels", nodes.Inputs{"image": filled(1, 1, 2, 3, 0.5), "upscale_method": "nearest-exact", "megapixels": 0.01}).Outputs[0].(*Image)
	checkShape(t, im.Shape(), []int{1, 72, 145, 3})
	checkPix(t, im.Pix, filled(1, 72, 145, 3, 0.5).Pix, 0)
}

func TestImageScaleToMaxDimension(t *testing.T) {
	tests := []struct {
		name  string
		w, h  int
		shape []int
	}{
		{"landscape", 4, 2, []int{1, 4, 8, 3}},
		{"portrait", 2, 4, []int{1, 8, 4, 3}},
		{"square", 3, 3, []int{1, 8, 8, 3}},
		{"rounded", 3, 1, []int{1, 3, 8, 3}}, // round(1/3·8) = round(2.67) = 3
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			im := mustRun(t, "ImageScaleToMaxDimension", nodes.Inputs{"image": filled(1, tc.h, tc.w, 3, 0.5), "upscale_method": "bilinear", "largest_size": int64(8)}).Outputs[0].(*Image)
			checkShape(t, im.Shape(), tc.shape)
		})
	}
}

func TestResizeAndPadImage(t *testing.T) {
	src := filled(1, 1, 2, 1, 0.25)
	tests := []struct {
		colour string
		pad    float32
	}{{"white", 1}, {"black", 0}}
	for _, tc := range tests {
		t.Run(tc.colour, func(t *testing.T) {
			im := mustRun(t, "ResizeAndPadImage", nodes.Inputs{"image": src, "target_width": int64(4), "target_height": int64(4),
				"padding_color": tc.colour, "interpolation": "nearest-exact"}).Outputs[0].(*Image)
			checkShape(t, im.Shape(), []int{1, 4, 4, 1})
			p := tc.pad
			checkPix(t, im.Pix, []float32{p, p, p, p, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, p, p, p, p}, 0)
		})
	}
	t.Run("centred horizontally with truncated size", func(t *testing.T) {
		// s = min(5/1, 3/1) = 3: a 3x3 image centred on 5 columns at x = 1.
		im := mustRun(t, "ResizeAndPadImage", nodes.Inputs{"image": filled(1, 1, 1, 1, 0), "target_width": int64(5), "target_height": int64(3),
			"padding_color": "white", "interpolation": "area"}).Outputs[0].(*Image)
		checkPix(t, im.Pix, []float32{1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1}, 0)
	})
}

func TestSplitImageWithAlpha(t *testing.T) {
	res := mustRun(t, "SplitImageWithAlpha", nodes.Inputs{"image": img(1, 1, 1, 4, 0.1, 0.2, 0.3, 0.75)})
	checkPix(t, res.Outputs[0].(*Image).Pix, []float32{0.1, 0.2, 0.3}, 0)
	checkPix(t, res.Outputs[1].(*Mask).Pix, []float32{0.25}, 0)
	res = mustRun(t, "SplitImageWithAlpha", nodes.Inputs{"image": img(1, 1, 1, 3, 0.1, 0.2, 0.3)})
	checkPix(t, res.Outputs[1].(*Mask).Pix, []float32{0}, 0)
}

func TestJoinImageWithAlpha(t *testing.T) {
	rgba := img(2, 1, 2, 4, 0.1, 0.2, 0.3, 0.9, 0.4, 0.5, 0.6, 0.9, 0, 0, 0, 0, 0, 0, 0, 0)
	im := mustRun(t, "JoinImageWithAlpha", nodes.Inputs{"image": rgba, "alpha": mask(1, 1, 1, 0.25)}).Outputs[0].(*Image)
	checkShape(t, im.Shape(), []int{1, 1, 2, 4}) // batch: the shorter; mask resized to 2x1
	checkPix(t, im.Pix, []float32{0.1, 0.2, 0.3, 0.75, 0.4, 0.5, 0.6, 0.75}, 0)
	// Split then join gives the image back.
	parts := mustRun(t, "SplitImageWithAlpha", nodes.Inputs{"image": rgba}).Outputs
	back := mustRun(t, "JoinImageWithAlpha", nodes.Inputs{"image": parts[0], "alpha": parts[1]}).Outputs[0].(*Image)
	checkPix(t, back.Pix, rgba.Pix, 1e-7)
}

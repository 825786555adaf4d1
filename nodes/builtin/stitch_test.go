package builtin

import (
	"testing"

	"github.com/forgeflow/forgeflow/nodes"
)

// TestImageStitch checks ImageStitch on hand-worked cases: order by direction, centred
// padding with the colour's grey level (0 for a coloured one, on every channel the image
// has, before missing channels are added as ones), the spacing strip, batch repetition
// and the lanczos match. The first four cases' values were checked against ComfyUI
// 0.3.64's own ImageStitch.stitch run in the refpeer chroot.
func TestImageStitch(t *testing.T) {
	one := func(h, w, c int, v float32) *Image { return filled(1, h, w, c, v) }
	stitch := func(in nodes.Inputs) *Image {
		t.Helper()
		base := nodes.Inputs{"direction": "right", "match_image_size": false, "spacing_width": 0, "spacing_color": "white"}
		for k, v := range in {
			base[k] = v
		}
		return mustRun(t, "ImageStitch", base).Outputs[0].(*Image)
	}
	px := func(im *Image, b, x, y int) []float32 {
		return im.Frame(b)[(y*im.Width+x)*im.Channels : (y*im.Width+x+1)*im.Channels]
	}
	eq := func(t *testing.T, got []float32, want ...float32) {
		t.Helper()
		checkPix(t, got, want, 0)
	}

	a := one(2, 2, 3, 0.25)
	if got := stitch(nodes.Inputs{"image1": a}); got != a {
		t.Error("without image2 the node did not return image1")
	}

	t.Run("right, padded, spaced", func(t *testing.T) {
		// image1 2×2 beside a 1-wide, 3-high image2: image1 gets one white row below
		// ((3 − 2) / 2 = 0 above), then a 2-wide white strip, then image2.
		got := stitch(nodes.Inputs{"image1": a, "image2": one(3, 1, 3, 0.5), "spacing_width": 2})
		checkShape(t, []int{got.Batch, got.Height, got.Width, got.Channels}, []int{1, 3, 5, 3})
		eq(t, px(got, 0, 0, 0), 0.25, 0.25, 0.25)
		eq(t, px(got, 0, 1, 2), 1, 1, 1)
		eq(t, px(got, 0, 2, 1), 1, 1, 1)
		eq(t, px(got, 0, 4, 2), 0.5, 0.5, 0.5)
	})
	t.Run("left puts image2 first; odd spacing rounds up", func(t *testing.T) {
		got := stitch(nodes.Inputs{"image1": a, "image2": one(2, 1, 3, 0.5), "direction": "left", "spacing_width": 3, "spacing_color": "black"})
		checkShape(t, []int{got.Batch, got.Height, got.Width, got.Channels}, []int{1, 2, 7, 3})
		eq(t, px(got, 0, 0, 1), 0.5, 0.5, 0.5)
		eq(t, px(got, 0, 1, 0), 0, 0, 0)
		eq(t, px(got, 0, 4, 1), 0, 0, 0)
		eq(t, px(got, 0, 5, 0), 0.25, 0.25, 0.25)
	})
	t.Run("up with alpha: padding, ones, red strip", func(t *testing.T) {
		// image2 (4 channels, 1 wide) above image1 (3 channels, 2 wide): image2 is padded
		// to 2 wide with 0 (red is a colour) in all four channels; image1 gains alpha 1.
		got := stitch(nodes.Inputs{"image1": a, "image2": one(1, 1, 4, 0.5), "direction": "up", "spacing_width": 2, "spacing_color": "red"})
		checkShape(t, []int{got.Batch, got.Height, got.Width, got.Channels}, []int{1, 5, 2, 4})
		eq(t, px(got, 0, 0, 0), 0.5, 0.5, 0.5, 0.5) // (2 − 1) / 2 = 0 before, one after
		eq(t, px(got, 0, 1, 0), 0, 0, 0, 0)
		eq(t, px(got, 0, 0, 1), 1, 0, 0, 1)
		eq(t, px(got, 0, 1, 2), 1, 0, 0, 1)
		eq(t, px(got, 0, 1, 4), 0.25, 0.25, 0.25, 1)
	})
	t.Run("a padded RGB image gets alpha 1 over its padding", func(t *testing.T) {
		got := stitch(nodes.Inputs{"image1": one(1, 1, 3, 0.5), "image2": one(3, 1, 4, 0.75)})
		eq(t, px(got, 0, 0, 0), 1, 1, 1, 1) // white padding, then the alpha channel of ones
		eq(t, px(got, 0, 0, 1), 0.5, 0.5, 0.5, 1)
	})
	t.Run("the shorter batch repeats its last image", func(t *testing.T) {
		b := ramp(3, 2, 1, 3)
		got := stitch(nodes.Inputs{"image1": a, "image2": b, "direction": "down"})
		checkShape(t, []int{got.Batch, got.Height, got.Width, got.Channels}, []int{3, 4, 2, 3})
		for bi := 0; bi < 3; bi++ {
			eq(t, px(got, bi, 1, 1), 0.25, 0.25, 0.25)
			eq(t, px(got, bi, 0, 3), px(b, bi, 0, 1)...)
		}
	})
	t.Run("match resizes image2 with lanczos", func(t *testing.T) {
		b := ramp(1, 2, 4, 3) // aspect 2: to image1's height 4 → 8 wide
		got := stitch(nodes.Inputs{"image1": one(4, 6, 3, 0.1), "image2": b, "match_image_size": true})
		checkShape(t, []int{got.Batch, got.Height, got.Width, got.Channels}, []int{1, 4, 14, 3})
		want, err := upscale(b, 8, 4, "lanczos", "disabled")
		if err != nil {
			t.Fatal(err)
		}
		for y := 0; y < 4; y++ {
			for x := 0; x < 8; x++ {
				eq(t, px(got, 0, 6+x, y), px(want, 0, x, y)...)
			}
		}
		// down: width 6, height int(6 / 2) = 3
		got = stitch(nodes.Inputs{"image1": one(4, 6, 3, 0.1), "image2": b, "match_image_size": true, "direction": "down"})
		checkShape(t, []int{got.Batch, got.Height, got.Width, got.Channels}, []int{1, 7, 6, 3})
	})
	_, err := run(t, Options{}, nil, "ImageStitch", nodes.Inputs{"image1": one(1, 100, 3, 0), "image2": one(100, 1, 3, 0),
		"direction": "right", "match_image_size": true, "spacing_width": 0, "spacing_color": "white"})
	wantErr(t, err, "leaves 0x1")
}

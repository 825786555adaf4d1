package builtin

import (
	"context"
	"errors"
	"math"
	"testing"

	"github.com/forgeflow/forgeflow/nodes"
)

func TestEmptyImage(t *testing.T) {
	tests := []struct {
		name  string
		color int64
		rgb   [3]float32
	}{
		{"black", 0, [3]float32{0, 0, 0}},
		{"orange", 0xFF8000, [3]float32{1, float32(128.0 / 255), 0}},
		{"blue-ish", 0x0102FF, [3]float32{float32(1.0 / 255), float32(2.0 / 255), 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := mustRun(t, "EmptyImage", nodes.Inputs{"width": int64(3), "height": int64(2), "batch_size": int64(2), "color": tc.color})
			im := res.Outputs[0].(*Image)
			checkShape(t, im.Shape(), []int{2, 2, 3, 3})
			want := make([]float32, 0, len(im.Pix))
			for i := 0; i < 2*2*3; i++ {
				want = append(want, tc.rgb[:]...)
			}
			checkPix(t, im.Pix, want, 0)
		})
	}
	_, err := run(t, Options{}, nil, "EmptyImage", nodes.Inputs{"width": int64(0), "height": int64(2), "batch_size": int64(1), "color": int64(0)})
	wantErr(t, err, "outside")
}

func TestImageInvert(t *testing.T) {
	res := mustRun(t, "ImageInvert", nodes.Inputs{"image": img(1, 1, 2, 3, 0, 0.25, 1, 0.5, 0.75, 0.1)})
	checkPix(t, res.Outputs[0].(*Image).Pix, []float32{1, 0.75, 0, 0.5, 0.25, 0.9}, 1e-7)
}

func TestImageCrop(t *testing.T) {
	// A 4x3 single-channel-per-pixel image (C=1 keeps indices readable): value = 10*y + x.
	src := img(1, 3, 4, 1,
		0, 1, 2, 3,
		10, 11, 12, 13,
		20, 21, 22, 23)
	tests := []struct {
		name       string
		w, h, x, y int64
		shape      []int
		want       []float32
	}{
		{"inside", 2, 2, 1, 1, []int{1, 2, 2, 1}, []float32{11, 12, 21, 22}},
		{"clipped at the edge", 5, 5, 2, 1, []int{1, 2, 2, 1}, []float32{12, 13, 22, 23}},
		{"origin clamped to the last pixel", 2, 2, 100, 100, []int{1, 1, 1, 1}, []float32{23}},
		{"whole", 512, 512, 0, 0, []int{1, 3, 4, 1}, src.Pix},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := mustRun(t, "ImageCrop", nodes.Inputs{"image": src, "width": tc.w, "height": tc.h, "x": tc.x, "y": tc.y})
			im := res.Outputs[0].(*Image)
			checkShape(t, im.Shape(), tc.shape)
			checkPix(t, im.Pix, tc.want, 0)
		})
	}
}

func TestImagePadForOutpaint(t *testing.T) {
	t.Run("left pad without feathering", func(t *testing.T) {
		src := img(1, 1, 2, 3, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
		res := mustRun(t, "ImagePadForOutpaint", nodes.Inputs{"image": src, "left": int64(1), "top": int64(0),
			"right": int64(0), "bottom": int64(1), "feathering": int64(0)})
		im, m := res.Outputs[0].(*Image), res.Outputs[1].(*Mask)
		checkShape(t, im.Shape(), []int{1, 2, 3, 3})
		checkPix(t, im.Pix, []float32{
			0.5, 0.5, 0.5, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6,
			0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5,
		}, 0)
		checkShape(t, m.Shape(), []int{1, 2, 3})
		checkPix(t, m.Pix, []float32{1, 0, 0, 1, 1, 1}, 0)
	})
	t.Run("feathered on all sides", func(t *testing.T) {
		src := filled(1, 5, 5, 3, 1)
		res := mustRun(t, "ImagePadForOutpaint", nodes.Inputs{"image": src, "left": int64(1), "top": int64(1),
			"right": int64(1), "bottom": int64(1), "feathering": int64(2)})
		m := res.Outputs[1].(*Mask)
		checkShape(t, m.Shape(), []int{1, 7, 7})
		// Inside the original 5x5: d = distance to the nearest edge, v = ((2-d)/2)^2 for d < 2.
		// bottom/right distances are d2 - i, so the last row/column get d = 1, not 0.
		inner := []float32{
			1, 1, 1, 1, 1,
			1, 0.25, 0.25, 0.25, 0.25,
			1, 0.25, 0, 0, 0.25,
			1, 0.25, 0, 0, 0.25,
			1, 0.25, 0.25, 0.25, 0.25,
		}
		for y := 0; y < 7; y++ {
			for x := 0; x < 7; x++ {
				want := float32(1)
				if y >= 1 && y < 6 && x >= 1 && x < 6 {
					want = inner[(y-1)*5+x-1]
				}
				if got := m.Pix[y*7+x]; got != want {
					t.Errorf("mask(%d,%d) = %v, want %v", x, y, got, want)
				}
			}
		}
	})
	t.Run("feathering too wide is skipped", func(t *testing.T) {
		res := mustRun(t, "ImagePadForOutpaint", nodes.Inputs{"image": filled(1, 4, 4, 3, 1), "left": int64(8), "top": int64(0),
			"right": int64(0), "bottom": int64(0), "feathering": int64(2)})
		m := res.Outputs[1].(*Mask)
		for y := 0; y < 4; y++ {
			for x := 8; x < 12; x++ {
				if m.Pix[y*12+x] != 0 {
					t.Fatalf("mask(%d,%d) = %v, want 0 (2*feathering is not below the size)", x, y, m.Pix[y*12+x])
				}
			}
		}
	})
}

func TestImageScale(t *testing.T) {
	src := img(1, 2, 2, 1, 0, 1, 2, 3)
	tests := []struct {
		name  string
		in    nodes.Inputs
		shape []int
		want  []float32
	}{
		{"nearest-exact 2x", nodes.Inputs{"upscale_method": "nearest-exact", "width": int64(4), "height": int64(4), "crop": "disabled"},
			[]int{1, 4, 4, 1}, []float32{0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3}},
		{"width 0 keeps the aspect ratio", nodes.Inputs{"upscale_method": "nearest-exact", "width": int64(0), "height": int64(4), "crop": "disabled"},
			[]int{1, 4, 4, 1}, []float32{0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3}},
		{"area down to 1x1", nodes.Inputs{"upscale_method": "area", "width": int64(1), "height": int64(1), "crop": "disabled"},
			[]int{1, 1, 1, 1}, []float32{1.5}},
		{"both 0 is a no-op", nodes.Inputs{"upscale_method": "bilinear", "width": int64(0), "height": int64(0), "crop": "center"},
			[]int{1, 2, 2, 1}, []float32{0, 1, 2, 3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.in["image"] = src
			res := mustRun(t, "ImageScale", tc.in)
			im := res.Outputs[0].(*Image)
			checkShape(t, im.Shape(), tc.shape)
			checkPix(t, im.Pix, tc.want, 1e-6)
		})
	}
	t.Run("height 0 rounds half to even", func(t *testing.T) {
		// 5 wide, 1 high, asked width 2: height = round(1*2/5) = round(0.4) = 0 -> max(1, 0) = 1.
		res := mustRun(t, "ImageScale", nodes.Inputs{"image": filled(1, 1, 5, 3, 0.5), "upscale_method": "bilinear",
			"width": int64(2), "height": int64(0), "crop": "disabled"})
		checkShape(t, res.Outputs[0].(*Image).Shape(), []int{1, 1, 2, 3})
	})
}

func TestImageScaleBy(t *testing.T) {
	src := img(1, 1, 2, 3, 0, 0.5, 1, 1, 0.5, 0)
	res := mustRun(t, "ImageScaleBy", nodes.Inputs{"image": src, "upscale_method": "nearest-exact", "scale_by": 1.5})
	im := res.Outputs[0].(*Image)
	// round(2*1.5) = 3, round(1*1.5) = round(1.5) = 2 (half to even).
	checkShape(t, im.Shape(), []int{1, 2, 3, 3})
	// nearest-exact picks source column floor((x + 0.5) * 2/3): 0, 1, 1.
	row := []float32{0, 0.5, 1, 1, 0.5, 0, 1, 0.5, 0}
	checkPix(t, im.Pix, append(append([]float32{}, row...), row...), 0)
}

func TestImageBatch(t *testing.T) {
	a := filled(1, 2, 2, 3, 0.25)
	t.Run("same size concatenates", func(t *testing.T) {
		b := filled(2, 2, 2, 3, 0.75)
		im := mustRun(t, "ImageBatch", nodes.Inputs{"image1": a, "image2": b}).Outputs[0].(*Image)
		checkShape(t, im.Shape(), []int{3, 2, 2, 3})
		want := append(append([]float32{}, a.Pix...), b.Pix...)
		checkPix(t, im.Pix, want, 0)
	})
	t.Run("image2 resized to image1", func(t *testing.T) {
		b := filled(1, 4, 6, 3, 0.75)
		im := mustRun(t, "ImageBatch", nodes.Inputs{"image1": a, "image2": b}).Outputs[0].(*Image)
		checkShape(t, im.Shape(), []int{2, 2, 2, 3})
		checkPix(t, im.Frame(1), filled(1, 2, 2, 3, 0.75).Pix, 1e-6)
	})
	t.Run("channel mismatch", func(t *testing.T) {
		_, err := run(t, Options{}, nil, "ImageBatch", nodes.Inputs{"image1": a, "image2": filled(1, 2, 2, 4, 1)})
		wantErr(t, err, "channels")
	})
}

func TestImageBlend(t *testing.T) {
	a, b := filled(1, 2, 2, 3, 0.25), filled(1, 2, 2, 3, 0.75)
	tests := []struct {
		mode   string
		factor float64
		want   float32
	}{
		{"normal", 1, 0.75},
		{"normal", 0.5, 0.5},
		{"multiply", 1, 0.1875},
		{"screen", 1, 0.8125},
		{"overlay", 1, 0.375},    // a <= 0.5: 2ab
		{"soft_light", 1, 0.375}, // b > 0.5: a + (2b-1)(g(a)-a), g(0.25) = 0.5
		{"difference", 1, 0},     // a - b = -0.5, clamped
		{"difference", 0, 0.25},
	}
	for _, tc := range tests {
		t.Run(tc.mode, func(t *testing.T) {
			res := mustRun(t, "ImageBlend", nodes.Inputs{"image1": a, "image2": b, "blend_factor": tc.factor, "blend_mode": tc.mode})
			checkPix(t, res.Outputs[0].(*Image).Pix, filled(1, 2, 2, 3, tc.want).Pix, 1e-6)
		})
	}
	t.Run("overlay and soft_light other branch", func(t *testing.T) {
		x, y := filled(1, 1, 1, 3, 0.75), filled(1, 1, 1, 3, 0.25)
		res := mustRun(t, "ImageBlend", nodes.Inputs{"image1": x, "image2": y, "blend_factor": 1.0, "blend_mode": "overlay"})
		checkPix(t, res.Outputs[0].(*Image).Pix, filled(1, 1, 1, 3, 1-2*0.25*0.75).Pix, 1e-6)
		res = mustRun(t, "ImageBlend", nodes.Inputs{"image1": x, "image2": y, "blend_factor": 1.0, "blend_mode": "soft_light"})
		checkPix(t, res.Outputs[0].(*Image).Pix, filled(1, 1, 1, 3, 0.75-0.5*0.75*0.25).Pix, 1e-6)
	})
	t.Run("image2 alpha dropped, resized and broadcast", func(t *testing.T) {
		x := filled(2, 2, 2, 3, 0.5)
		y := filled(1, 3, 3, 4, 1)
		res := mustRun(t, "ImageBlend", nodes.Inputs{"image1": x, "image2": y, "blend_factor": 0.5, "blend_mode": "multiply"})
		im := res.Outputs[0].(*Image)
		checkShape(t, im.Shape(), []int{2, 2, 2, 3})
		checkPix(t, im.Pix, filled(2, 2, 2, 3, 0.5).Pix, 1e-6)
	})
	t.Run("unknown mode", func(t *testing.T) {
		_, err := run(t, Options{}, nil, "ImageBlend", nodes.Inputs{"image1": a, "image2": b, "blend_factor": 0.5, "blend_mode": "dodge"})
		wantErr(t, err, "unsupported blend mode")
	})
}

func TestGaussianKernel(t *testing.T) {
	k := gaussianKernel(3, 1)
	s := 1 + 4*math.Exp(-0.5) + 4*math.Exp(-1)
	want := []float64{math.Exp(-1) / s, math.Exp(-0.5) / s, 1 / s}
	for i, idx := range []int{0, 1, 4} {
		if !near(float64(k[idx]), want[i], 1e-7) {
			t.Errorf("k[%d] = %v, want %v", idx, k[idx], want[i])
		}
	}
	var sum float64
	for _, v := range k {
		sum += float64(v)
	}
	if !near(sum, 1, 1e-6) {
		t.Errorf("kernel sums to %v", sum)
	}
}

func TestImageBlur(t *testing.T) {
	s := 1 + 4*math.Exp(-0.5) + 4*math.Exp(-1)
	side := (math.Exp(-0.5) + 2*math.Exp(-1)) / s // marginal weight of one neighbour column
	t.Run("impulse gives the kernel", func(t *testing.T) {
		im := filled(1, 5, 5, 3, 0)
		im.Pix[(2*5+2)*3] = 1 // red channel only
		out := mustRun(t, "ImageBlur", nodes.Inputs{"image": im, "blur_radius": int64(1), "sigma": 1.0}).Outputs[0].(*Image)
		if got := out.Pix[(2*5+2)*3]; !near(float64(got), 1/s, 1e-6) {
			t.Errorf("centre = %v, want %v", got, 1/s)
		}
		if got := out.Pix[(1*5+1)*3]; !near(float64(got), math.Exp(-1)/s, 1e-6) {
			t.Errorf("diagonal = %v, want %v", got, math.Exp(-1)/s)
		}
		if got := out.Pix[(2*5+2)*3+1]; got != 0 {
			t.Errorf("green channel picked up %v", got)
		}
	})
	t.Run("reflect padding at the border", func(t *testing.T) {
		// v(x) = x on 3 columns: at x = 0 the reflected neighbour is x = 1 on both sides.
		im := img(1, 3, 3, 1, 0, 1, 2, 0, 1, 2, 0, 1, 2)
		out := mustRun(t, "ImageBlur", nodes.Inputs{"image": im, "blur_radius": int64(1), "sigma": 1.0}).Outputs[0].(*Image)
		for y := 0; y < 3; y++ {
			if got := out.Pix[y*3]; !near(float64(got), 2*side, 1e-6) {
				t.Errorf("row %d x=0: %v, want %v", y, got, 2*side)
			}
			if got := out.Pix[y*3+1]; !near(float64(got), 1, 1e-6) {
				t.Errorf("row %d x=1: %v, want 1", y, got)
			}
		}
	})
	t.Run("constant stays constant", func(t *testing.T) {
		out := mustRun(t, "ImageBlur", nodes.Inputs{"image": filled(2, 6, 7, 4, 0.3), "blur_radius": int64(3), "sigma": 2.5}).Outputs[0].(*Image)
		checkPix(t, out.Pix, filled(2, 6, 7, 4, 0.3).Pix, 1e-6)
	})
	t.Run("radius not below the size", func(t *testing.T) {
		_, err := run(t, Options{}, nil, "ImageBlur", nodes.Inputs{"image": filled(1, 2, 2, 3, 0), "blur_radius": int64(2), "sigma": 1.0})
		wantErr(t, err, "reflect padding")
	})
}

func TestImageSharpen(t *testing.T) {
	s := 1 + 4*math.Exp(-0.5) + 4*math.Exp(-1)
	gc, gn := 1/s, math.Exp(-0.5)/s
	const alpha = 0.05
	im := filled(1, 5, 5, 3, 0.5)
	im.Pix[(2*5+2)*3] = 0.6
	out := mustRun(t, "ImageSharpen", nodes.Inputs{"image": im, "sharpen_radius": int64(1), "sigma": 1.0, "alpha": alpha}).Outputs[0].(*Image)
	// The kernel sums to 1, so the flat 0.5 stays; the 0.1 bump is scaled by the kernel:
	// centre weight 1 + 10a(1 - g_c), neighbours -10a g_n.
	if got, want := out.Pix[(2*5+2)*3], 0.5+0.1*(1+10*alpha*(1-gc)); !near(float64(got), want, 1e-6) {
		t.Errorf("centre = %v, want %v", got, want)
	}
	if got, want := out.Pix[(2*5+1)*3], 0.5-0.1*10*alpha*gn; !near(float64(got), want, 1e-6) {
		t.Errorf("left neighbour = %v, want %v", got, want)
	}
	if got := out.Pix[(0*5+0)*3]; !near(float64(got), 0.5, 1e-6) {
		t.Errorf("far corner = %v, want 0.5", got)
	}
	t.Run("clamped", func(t *testing.T) {
		im := filled(1, 3, 3, 3, 0)
		im.Pix[(1*3+1)*3] = 1
		out := mustRun(t, "ImageSharpen", nodes.Inputs{"image": im, "sharpen_radius": int64(1), "sigma": 1.0, "alpha": 5.0}).Outputs[0].(*Image)
		for i, v := range out.Pix {
			if v < 0 || v > 1 {
				t.Fatalf("value %d = %v outside [0, 1]", i, v)
			}
		}
		if out.Pix[(1*3+1)*3] != 1 || out.Pix[0] != 0 {
			t.Errorf("centre %v / corner %v, want 1 / 0", out.Pix[(1*3+1)*3], out.Pix[0])
		}
	})
}

func TestBadInputs(t *testing.T) {
	tests := []struct {
		name  string
		class string
		in    nodes.Inputs
		sub   string
	}{
		{"missing image", "ImageInvert", nodes.Inputs{}, "missing"},
		{"wrong type", "ImageInvert", nodes.Inputs{"image": "x.png"}, "want IMAGE"},
		{"inconsistent image", "ImageInvert", nodes.Inputs{"image": &Image{Batch: 1, Height: 2, Width: 2, Channels: 3, Pix: make([]float32, 5)}}, "holds 5 values"},
		{"NaN factor", "ImageBlend", nodes.Inputs{"image1": filled(1, 1, 1, 3, 0), "image2": filled(1, 1, 1, 3, 0), "blend_factor": math.NaN(), "blend_mode": "normal"}, "outside"},
		{"huge empty image", "EmptyImage", nodes.Inputs{"width": int64(16384), "height": int64(16384), "batch_size": int64(4096), "color": int64(0)}, "too large"},
		{"mask as image", "MaskToImage", nodes.Inputs{"mask": filled(1, 1, 1, 3, 0)}, "want MASK"},
		{"alpha of RGB", "ImageToMask", nodes.Inputs{"image": filled(1, 1, 1, 3, 0), "channel": "alpha"}, "needs 4 channels"},
		{"scale to zero", "ImageScaleBy", nodes.Inputs{"image": filled(1, 1, 1, 3, 0), "upscale_method": "bilinear", "scale_by": 0.01}, "positive"},
		{"bad method", "ImageScale", nodes.Inputs{"image": filled(1, 1, 1, 3, 0), "upscale_method": "magic", "width": int64(2), "height": int64(2), "crop": "disabled"}, "upscale_method"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := run(t, Options{}, nil, tc.class, tc.in)
			wantErr(t, err, tc.sub)
		})
	}
}

func TestRunHonoursCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := newTestRegistry(t, Options{})
	n, _ := r.Lookup("ImageBlur")
	_, err := n.Run(ctx, &nodes.Env{}, nodes.Inputs{"image": filled(1, 8, 8, 3, 0.5), "blur_radius": int64(1), "sigma": 1.0})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

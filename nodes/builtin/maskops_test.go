package builtin

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/forgeflow/forgeflow/nodes"
)

func mask(b, h, w int, pix ...float32) *Mask {
	if len(pix) != b*h*w {
		panic("mask: wrong value count")
	}
	return &Mask{Batch: b, Height: h, Width: w, Pix: pix}
}

func TestImageColorToMask(t *testing.T) {
	// 0.5*255 = 127.5 rounds half to even: 128.
	src := img(1, 1, 3, 3, 1, 0.5, 0, 1, 0.498, 0, 1, 0.5, 0.001)
	m := mustRun(t, "ImageColorToMask", nodes.Inputs{"image": src, "color": int64(0xFF8000)}).Outputs[0].(*Mask)
	checkPix(t, m.Pix, []float32{1, 0, 1}, 0)
	m = mustRun(t, "ImageColorToMask", nodes.Inputs{"image": src, "color": int64(0xFF7F00)}).Outputs[0].(*Mask)
	checkPix(t, m.Pix, []float32{0, 1, 0}, 0)
}

func TestThresholdMask(t *testing.T) {
	m := mustRun(t, "ThresholdMask", nodes.Inputs{"mask": mask(1, 1, 4, 0.2, 0.5, 0.50001, 1), "value": 0.5}).Outputs[0].(*Mask)
	checkPix(t, m.Pix, []float32{0, 0, 1, 1}, 0)
}

func TestCropMask(t *testing.T) {
	src := mask(1, 3, 4,
		0, 1, 2, 3,
		10, 11, 12, 13,
		20, 21, 22, 23)
	tests := []struct {
		name       string
		x, y, w, h int64
		shape      []int
		want       []float32
	}{
		{"inside", 1, 1, 2, 1, []int{1, 1, 2}, []float32{11, 12}},
		{"clipped", 2, 1, 5, 5, []int{1, 2, 2}, []float32{12, 13, 22, 23}},
		{"past the edge is empty", 10, 0, 2, 2, []int{1, 2, 0}, []float32{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := mustRun(t, "CropMask", nodes.Inputs{"mask": src, "x": tc.x, "y": tc.y, "width": tc.w, "height": tc.h}).Outputs[0].(*Mask)
			checkShape(t, m.Shape(), tc.shape)
			checkPix(t, m.Pix, tc.want, 0)
		})
	}
}

func TestMaskComposite(t *testing.T) {
	dst := mask(1, 3, 3, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 1.5)
	src := mask(1, 2, 2, 1, 1, 1, 1)
	tests := []struct {
		op   string
		want float32 // value of the covered cells (2,1) and (2,2)
	}{
		{"multiply", 0.5}, {"add", 1}, {"subtract", 0},
		{"and", 0}, // round(0.5) = 0 (half to even): false
		{"or", 1}, {"xor", 1},
	}
	for _, tc := range tests {
		t.Run(tc.op, func(t *testing.T) {
			m := mustRun(t, "MaskComposite", nodes.Inputs{"destination": dst, "source": src, "x": int64(2), "y": int64(1), "operation": tc.op}).Outputs[0].(*Mask)
			want := []float32{0.5, 0.5, 0.5, 0.5, 0.5, tc.want, 0.5, 0.5, tc.want}
			if tc.op == "multiply" || tc.op == "subtract" || tc.op == "add" {
				// (2,2) holds 1.5 in the destination.
				want[8] = clamp01(map[string]float32{"multiply": 1.5, "add": 2.5, "subtract": 0.5}[tc.op])
			}
			if tc.op == "and" {
				want[8] = 1 // round(1.5) = 2: true
			}
			if tc.op == "xor" {
				want[8] = 0
			}
			checkPix(t, m.Pix, want, 0)
		})
	}
	t.Run("uncovered cells are clamped too", func(t *testing.T) {
		m := mustRun(t, "MaskComposite", nodes.Inputs{"destination": dst, "source": src, "x": int64(0), "y": int64(0), "operation": "multiply"}).Outputs[0].(*Mask)
		if m.Pix[8] != 1 {
			t.Fatalf("cell (2,2) = %v, want 1.5 clamped to 1", m.Pix[8])
		}
	})
	t.Run("batch mismatch", func(t *testing.T) {
		_, err := run(t, Options{}, nil, "MaskComposite", nodes.Inputs{"destination": dst, "source": mask(2, 1, 1, 1, 1), "x": int64(0), "y": int64(0), "operation": "add"})
		wantErr(t, err, "batch")
	})
}

func TestFeatherMask(t *testing.T) {
	ones := mask(1, 1, 4, 1, 1, 1, 1)
	tests := []struct {
		name                     string
		left, top, right, bottom int64
		want                     []float32
	}{
		{"left", 2, 0, 0, 0, []float32{0.5, 1, 1, 1}},
		// ComfyUI's output[:, :, -x] hits column 0 for x = 0.
		{"right 2", 0, 0, 2, 0, []float32{0.5, 1, 1, 1}},
		{"right 3", 0, 0, 3, 0, []float32{float32(1.0 / 3), 1, 1, float32(2.0 / 3)}},
		{"left clamped to the width", 8, 0, 0, 0, []float32{0.25, 0.5, 0.75, 1}},
		{"top clamped to one row: rate 1/1", 0, 2, 0, 0, []float32{1, 1, 1, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := mustRun(t, "FeatherMask", nodes.Inputs{"mask": ones, "left": tc.left, "top": tc.top, "right": tc.right, "bottom": tc.bottom}).Outputs[0].(*Mask)
			checkPix(t, m.Pix, tc.want, 1e-7)
		})
	}
}

func TestGrowMask(t *testing.T) {
	dot := make([]float32, 25)
	dot[12] = 1
	hole := make([]float32, 25)
	for i := range hole {
		hole[i] = 1
	}
	hole[12] = 0
	b := func(s string) []float32 { // a 5x5 picture: '#' = 1, '.' = 0
		out := make([]float32, 0, 25)
		for _, c := range s {
			switch c {
			case '#':
				out = append(out, 1)
			case '.':
				out = append(out, 0)
			}
		}
		return out
	}
	tests := []struct {
		name    string
		src     []float32
		expand  int64
		tapered bool
		want    []float32
	}{
		{"cross", dot, 1, true, b(`..... ..#.. .###. ..#.. .....`)},
		{"square", dot, 1, false, b(`..... .###. .###. .###. .....`)},
		{"diamond", dot, 2, true, b(`..#.. .###. ##### .###. ..#..`)},
		{"erode", hole, -1, true, b(`##### ##.## #...# ##.## #####`)},
		{"zero is identity", dot, 0, true, dot},
		{"huge expand fills", dot, 16384, true, b(`##### ##### ##### ##### #####`)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := mustRun(t, "GrowMask", nodes.Inputs{"mask": &Mask{Batch: 1, Height: 5, Width: 5, Pix: tc.src}, "expand": tc.expand, "tapered_corners": tc.tapered}).Outputs[0].(*Mask)
			checkPix(t, m.Pix, tc.want, 0)
		})
	}
}

func TestMaskPreview(t *testing.T) {
	opts, dirs := saveOpts(t)
	res, err := run(t, opts, nil, "MaskPreview", nodes.Inputs{"mask": mask(1, 1, 2, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	imgs := uiImages(t, res)
	if len(imgs) != 1 || imgs[0]["type"] != "temp" || !regexp.MustCompile(`^ComfyUI_temp_[a-z]{5}_00001_\.png$`).MatchString(imgs[0]["filename"].(string)) {
		t.Fatalf("UI %v", imgs)
	}
	opts2 := opts
	opts2.Dirs.Input = dirs.Temp
	im, _ := loadImage(t, opts2, imgs[0]["filename"].(string))
	checkPix(t, im.Pix, []float32{0, 0, 0, 1, 1, 1}, 0)
	if _, err := os.Stat(filepath.Join(dirs.Temp, imgs[0]["filename"].(string))); err != nil {
		t.Fatal(err)
	}
}

func TestImageCompositeMasked(t *testing.T) {
	zeros := filled(1, 4, 4, 3, 0)
	ones2 := filled(1, 2, 2, 3, 1)
	// red channel of a 4x4 result, row by row
	red := func(im *Image) []float32 {
		out := make([]float32, 0, im.Height*im.Width)
		for i := 0; i < im.Height*im.Width; i++ {
			out = append(out, im.Pix[i*im.Channels])
		}
		return out
	}
	tests := []struct {
		name string
		in   nodes.Inputs
		want []float32
	}{
		{"clipped at the edge", nodes.Inputs{"destination": zeros, "source": ones2, "x": int64(3), "y": int64(1), "resize_source": false},
			[]float32{0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0}},
		{"through a mask", nodes.Inputs{"destination": zeros, "source": ones2, "x": int64(0), "y": int64(0), "resize_source": false,
			"mask": mask(1, 2, 2, 0.5, 0, 1, 0.25)},
			[]float32{0.5, 0, 0, 0, 1, 0.25, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		{"mask resized to the source", nodes.Inputs{"destination": zeros, "source": ones2, "x": int64(1), "y": int64(1), "resize_source": false,
			"mask": mask(1, 1, 1, 0.5)},
			[]float32{0, 0, 0, 0, 0, 0.5, 0.5, 0, 0, 0.5, 0.5, 0, 0, 0, 0, 0}},
		{"source resized to the destination", nodes.Inputs{"destination": zeros, "source": filled(1, 1, 1, 3, 1), "x": int64(0), "y": int64(0), "resize_source": true},
			filled(1, 4, 4, 1, 1).Pix},
		{"source alpha dropped", nodes.Inputs{"destination": zeros, "source": filled(1, 1, 1, 4, 1), "x": int64(0), "y": int64(0), "resize_source": false},
			[]float32{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			im := mustRun(t, "ImageCompositeMasked", tc.in).Outputs[0].(*Image)
			checkShape(t, im.Shape(), []int{1, 4, 4, 3})
			checkPix(t, red(im), tc.want, 1e-6)
		})
	}
	t.Run("source batch repeated", func(t *testing.T) {
		im := mustRun(t, "ImageCompositeMasked", nodes.Inputs{"destination": filled(3, 2, 2, 3, 0), "source": filled(1, 2, 2, 3, 1), "x": int64(0), "y": int64(0), "resize_source": false}).Outputs[0].(*Image)
		checkPix(t, im.Pix, filled(3, 2, 2, 3, 1).Pix, 0)
	})
	t.Run("RGBA destination, RGB source", func(t *testing.T) {
		_, err := run(t, Options{}, nil, "ImageCompositeMasked", nodes.Inputs{"destination": filled(1, 2, 2, 4, 0), "source": ones2, "x": int64(0), "y": int64(0), "resize_source": false})
		wantErr(t, err, "channels")
	})
}

func TestRepeatImageBatch(t *testing.T) {
	src := img(2, 1, 1, 1, 0.25, 0.75)
	im := mustRun(t, "RepeatImageBatch", nodes.Inputs{"image": src, "amount": int64(3)}).Outputs[0].(*Image)
	checkShape(t, im.Shape(), []int{6, 1, 1, 1})
	checkPix(t, im.Pix, []float32{0.25, 0.75, 0.25, 0.75, 0.25, 0.75}, 0)
}

func TestImageFromBatch(t *testing.T) {
	src := img(3, 1, 1, 1, 0, 1, 2)
	tests := []struct {
		idx, length int64
		want        []float32
	}{
		{0, 1, []float32{0}},
		{1, 5, []float32{1, 2}},
		{7, 2, []float32{2}},
	}
	for _, tc := range tests {
		im := mustRun(t, "ImageFromBatch", nodes.Inputs{"image": src, "batch_index": tc.idx, "length": tc.length}).Outputs[0].(*Image)
		checkShape(t, im.Shape(), []int{len(tc.want), 1, 1, 1})
		checkPix(t, im.Pix, tc.want, 0)
	}
}

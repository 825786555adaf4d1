package builtin

import (
	"testing"

	"github.com/forgeflow/forgeflow/nodes"
)

func TestImageToMask(t *testing.T) {
	src := img(1, 1, 2, 4, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
	tests := []struct {
		channel string
		want    []float32
	}{
		{"red", []float32{0.1, 0.5}},
		{"green", []float32{0.2, 0.6}},
		{"blue", []float32{0.3, 0.7}},
		{"alpha", []float32{0.4, 0.8}},
	}
	for _, tc := range tests {
		t.Run(tc.channel, func(t *testing.T) {
			m := mustRun(t, "ImageToMask", nodes.Inputs{"image": src, "channel": tc.channel}).Outputs[0].(*Mask)
			checkShape(t, m.Shape(), []int{1, 1, 2})
			checkPix(t, m.Pix, tc.want, 0)
		})
	}
}

func TestMaskToImage(t *testing.T) {
	m := &Mask{Batch: 2, Height: 1, Width: 1, Pix: []float32{0.25, 1}}
	im := mustRun(t, "MaskToImage", nodes.Inputs{"mask": m}).Outputs[0].(*Image)
	checkShape(t, im.Shape(), []int{2, 1, 1, 3})
	checkPix(t, im.Pix, []float32{0.25, 0.25, 0.25, 1, 1, 1}, 0)
}

func TestSolidMask(t *testing.T) {
	m := mustRun(t, "SolidMask", nodes.Inputs{"value": 0.3, "width": int64(3), "height": int64(2)}).Outputs[0].(*Mask)
	checkShape(t, m.Shape(), []int{1, 2, 3})
	checkPix(t, m.Pix, []float32{0.3, 0.3, 0.3, 0.3, 0.3, 0.3}, 0)
}

func TestInvertMask(t *testing.T) {
	m := &Mask{Batch: 1, Height: 1, Width: 3, Pix: []float32{0, 0.25, 1}}
	out := mustRun(t, "InvertMask", nodes.Inputs{"mask": m}).Outputs[0].(*Mask)
	checkPix(t, out.Pix, []float32{1, 0.75, 0}, 0)
	if m.Pix[0] != 0 {
		t.Fatal("InvertMask changed its input")
	}
}

func TestPrimitives(t *testing.T) {
	tests := []struct {
		class string
		value any
		want  any
	}{
		{"PrimitiveInt", int64(-9007199254740993), int64(-9007199254740993)},
		{"PrimitiveFloat", 2.5, 2.5},
		{"PrimitiveFloat", int64(3), 3.0},
		{"PrimitiveString", "a cat", "a cat"},
		{"PrimitiveStringMultiline", "line 1\nline 2", "line 1\nline 2"},
		{"PrimitiveBoolean", true, true},
	}
	for _, tc := range tests {
		t.Run(tc.class, func(t *testing.T) {
			res := mustRun(t, tc.class, nodes.Inputs{"value": tc.value})
			if res.Outputs[0] != tc.want {
				t.Fatalf("output %#v, want %#v", res.Outputs[0], tc.want)
			}
		})
	}
	t.Run("wrong type", func(t *testing.T) {
		_, err := run(t, Options{}, nil, "PrimitiveBoolean", nodes.Inputs{"value": "yes"})
		wantErr(t, err, "want BOOLEAN")
	})
}

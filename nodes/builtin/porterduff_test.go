package builtin

import (
	"testing"

	"github.com/forgeflow/forgeflow/nodes"
)

func TestPorterDuffImageComposite(t *testing.T) {
	red := img(1, 1, 1, 3, 1, 0, 0)
	blue := img(1, 1, 1, 3, 0, 0, 1)
	opaque, clear, half := mask(1, 1, 1, 0), mask(1, 1, 1, 1), mask(1, 1, 1, 0.5)
	tests := []struct {
		name             string
		srcMask, dstMask *Mask
		mode             string
		rgb              []float32
		mask             float32
	}{
		{"src over, opaque source", opaque, opaque, "SRC_OVER", []float32{1, 0, 0}, 0},
		{"src over, clear source", clear, opaque, "SRC_OVER", []float32{0, 0, 1}, 0},
		{"src over, half source", half, opaque, "SRC_OVER", []float32{0.5, 0, 0.5}, 0},
		{"dst over", opaque, opaque, "DST_OVER", []float32{0, 0, 1}, 0},
		{"dst in", half, opaque, "DST_IN", []float32{0, 0, 1}, 0.5},
		{"src out of an opaque destination", opaque, opaque, "SRC_OUT", []float32{0, 0, 0}, 1},
		{"xor of opaques is empty", opaque, opaque, "XOR", []float32{0, 0, 0}, 1},
		{"clear", opaque, opaque, "CLEAR", []float32{0, 0, 0}, 1},
		{"add clamps", opaque, opaque, "ADD", []float32{1, 0, 1}, 0},
		{"multiply", opaque, opaque, "MULTIPLY", []float32{0, 0, 0}, 0},
		{"screen", opaque, opaque, "SCREEN", []float32{1, 0, 1}, 0},
		// DARKEN as ComfyUI writes it: (1-da)s + (1-sa)d + min(s, d), here min only.
		{"darken", opaque, opaque, "DARKEN", []float32{0, 0, 0}, 0},
		{"lighten", opaque, opaque, "LIGHTEN", []float32{1, 0, 1}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := mustRun(t, "PorterDuffImageComposite", nodes.Inputs{"source": red, "source_alpha": tc.srcMask,
				"destination": blue, "destination_alpha": tc.dstMask, "mode": tc.mode})
			checkPix(t, res.Outputs[0].(*Image).Pix, tc.rgb, 1e-6)
			checkPix(t, res.Outputs[1].(*Mask).Pix, []float32{tc.mask}, 1e-6)
		})
	}
	t.Run("source and alphas resized to the destination", func(t *testing.T) {
		res := mustRun(t, "PorterDuffImageComposite", nodes.Inputs{"source": red, "source_alpha": opaque,
			"destination": filled(2, 2, 3, 3, 0), "destination_alpha": mask(1, 1, 1, 0), "mode": "SRC_OVER"})
		im := res.Outputs[0].(*Image)
		checkShape(t, im.Shape(), []int{1, 2, 3, 3}) // the smallest batch
		checkPix(t, im.Pix, []float32{1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0}, 1e-6)
	})
	t.Run("channel mismatch", func(t *testing.T) {
		_, err := run(t, Options{}, nil, "PorterDuffImageComposite", nodes.Inputs{"source": filled(1, 1, 1, 4, 1), "source_alpha": opaque,
			"destination": blue, "destination_alpha": opaque, "mode": "SRC"})
		wantErr(t, err, "channels")
	})
}

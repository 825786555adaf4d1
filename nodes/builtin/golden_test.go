package builtin

import (
	"slices"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/nodes"
)

// TestImageScaleGolden runs the ImageScale node on ComfyUI's common_upscale fixtures
// (the golden upscale family): each case's input NCHW tensor becomes an IMAGE, the
// node's output is compared with ComfyUI's for every target size and crop the case
// lists, so the NHWC/NCHW layout, the width/height order and the method wiring are
// checked end to end. Cases of a method ImageScale does not offer are skipped.
func TestImageScaleGolden(t *testing.T) {
	for _, c := range testenv.GoldenUpscales(t) {
		t.Run(c.Name, func(t *testing.T) {
			if !slices.Contains(upscaleMethods, c.Method) {
				t.Skipf("ImageScale offers no %s (it offers %v)", c.Method, upscaleMethods)
			}
			ts, _, err := testenv.ReadSafetensors(c.Path())
			if err != nil {
				t.Fatal(err)
			}
			x, err := ts[c.Input].Float32()
			if err != nil {
				t.Fatal(err)
			}
			s := ts[c.Input].Shape
			src, err := ImageFromNCHW(x, s[0], s[1], s[2], s[3])
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range c.Outputs {
				want, err := ts[o.Name].Float32()
				if err != nil {
					t.Fatalf("%s: %v", o.Name, err)
				}
				res := mustRun(t, "ImageScale", nodes.Inputs{"image": src, "upscale_method": c.Method,
					"width": int64(o.Width), "height": int64(o.Height), "crop": o.Crop})
				got := res.Outputs[0].(*Image)
				checkShape(t, got.Shape(), []int{s[0], o.Height, o.Width, s[1]})
				testenv.Close(t, o.Name, got.NCHW(), want, c.Tolerance)
			}
		})
	}
}

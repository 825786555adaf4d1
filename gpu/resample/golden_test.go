package resample

import (
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
)

// TestGoldenUpscale checks every case of the golden "upscale" family (ComfyUI's
// common_upscale outputs) element-wise within the case's {abs, rel} tolerance, for every
// target size and crop its config lists.
func TestGoldenUpscale(t *testing.T) {
	for _, c := range testenv.GoldenUpscales(t) {
		t.Run(c.Name, func(t *testing.T) {
			ts, _, err := testenv.ReadSafetensors(c.Path())
			if err != nil {
				t.Fatal(err)
			}
			in := ts[c.Input]
			x, err := in.Float32()
			if err != nil {
				t.Fatal(err)
			}
			s := in.Shape
			for _, o := range c.Outputs {
				want, err := ts[o.Name].Float32()
				if err != nil {
					t.Fatalf("%s: %v", o.Name, err)
				}
				got, err := Upscale(x, s[0], s[1], s[2], s[3], o.Width, o.Height, c.Method, o.Crop)
				if err != nil {
					t.Errorf("%s: %v", o.Name, err)
					continue
				}
				testenv.Close(t, o.Name, got, want, c.Tolerance)
			}
		})
	}
}

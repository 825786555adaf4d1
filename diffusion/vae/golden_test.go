package vae

import (
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// TestGoldenVAE decodes and encodes with every case of golden/vae and compares the raw
// decoder output, the ComfyUI-style image, the moments and the posterior mean.
func TestGoldenVAE(t *testing.T) {
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range testenv.GoldenVAEs(t) {
		t.Run(c.Name, func(t *testing.T) {
			f, err := tensorfile.Open(c.Path())
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var m Model
			rep, err := statedict.Bind(rt, statedict.NewFileSource(rt, f), c.Prefix, &m)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Unused) > 0 {
				t.Fatalf("unused keys: %v", rep.Unused)
			}
			if err := m.Validate(); err != nil {
				t.Fatal(err)
			}
			load := func(name string) ([]float32, []int) {
				t.Helper()
				if _, err := c.Tensor(name); err != nil {
					t.Fatal(err)
				}
				tn, err := f.Tensor(name)
				if err != nil {
					t.Fatal(err)
				}
				v, err := tn.Float32()
				if err != nil {
					t.Fatal(err)
				}
				shape := make([]int, len(tn.Shape))
				for i, d := range tn.Shape {
					shape[i] = int(d)
				}
				return v, shape
			}
			check := func(name string, got []float32) {
				t.Helper()
				want, _ := load(name)
				testenv.Close(t, name, got, want, c.Tolerance)
			}
			lat, shape := load("in.latent")
			z, err := rt.FromFloat32(lat, shape...)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := m.Decode(rt, z)
			if err != nil {
				t.Fatal(err)
			}
			rv, _ := raw.Float32()
			check("out.decoded_raw", rv)
			img, err := ToImage(rt, raw)
			if err != nil {
				t.Fatal(err)
			}
			check("out.image", img.Pix)

			// in.image is NHWC (family README).
			pix, ishape := load("in.image")
			if len(ishape) != 4 {
				t.Fatal(c.FieldError("io_tensors", "in.image has shape %v, want NHWC", ishape))
			}
			x, err := FromImage(rt, &Image{Batch: ishape[0], Height: ishape[1], Width: ishape[2], Channels: ishape[3], Pix: pix})
			if err != nil {
				t.Fatal(err)
			}
			mo, err := m.Moments(rt, x)
			if err != nil {
				t.Fatal(err)
			}
			mv, _ := mo.Float32()
			check("out.moments", mv)
			mean, err := m.Encode(rt, x)
			if err != nil {
				t.Fatal(err)
			}
			ev, _ := mean.Float32()
			check("out.latent", ev)
		})
	}
}

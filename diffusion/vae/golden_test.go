package vae

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// vaeCase is the part of a golden/vae manifest entry the test reads.
type vaeCase struct {
	Case, File string
	Tolerance  struct{ Abs, Rel float64 }
}

// TestGoldenVAE decodes and encodes with every case of golden/vae and compares the raw
// decoder output, the ComfyUI-style image, the moments and the posterior mean.
func TestGoldenVAE(t *testing.T) {
	dir, cases := testenv.GoldenCases[vaeCase](t, "vae")
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.Case, func(t *testing.T) {
			f, err := tensorfile.Open(filepath.Join(dir, c.File))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var m Model
			rep, err := statedict.Bind(rt, statedict.NewFileSource(rt, f), "first_stage_model.", &m)
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
				if len(got) != len(want) {
					t.Fatalf("%s: %d values, want %d", name, len(got), len(want))
				}
				for i := range want {
					if d := math.Abs(float64(got[i] - want[i])); d > c.Tolerance.Abs+c.Tolerance.Rel*math.Abs(float64(want[i])) {
						t.Fatalf("%s[%d] = %v, want %v", name, i, got[i], want[i])
					}
				}
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

			pix, ishape := load("in.image")
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

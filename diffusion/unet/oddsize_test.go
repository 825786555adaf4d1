package unet_test

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/detect"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// ComfyUI takes every latent size (every multiple of 8 pixels): an output block's
// upsampler resizes to the size of the skip it is concatenated with next, so a side
// that was rounded up on the way down (33 → 17 → 9 → 5) comes back to it. The tiny
// models keep the real layouts with SD1.x's four levels (three downsamplings, a total
// factor of 8) and SDXL's three (factor 4).
func TestOddLatentSizes(t *testing.T) {
	sd1 := sd.TinyRandomSpec(detect.FamilySD1)
	sd1.UNet.Mult, sd1.UNet.Depth = []int{1, 1, 2, 2}, []int{1, 1, 1, 0}
	sdxl := sd.TinyRandomSpec(detect.FamilySDXL)
	sdxl.UNet.Mult, sdxl.UNet.Depth = []int{1, 2, 2}, []int{0, 1, 1}
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Pixel sizes: 264² and 520×392 (the reported ones), odd multiples of 8 at every
	// level, sides that differ, and 256² (a multiple of 64) as the control.
	sizes := [][2]int{{264, 264}, {520, 392}, {136, 200}, {72, 56}, {8, 24}, {256, 256}}
	if testing.Short() {
		sizes = sizes[:2]
	}
	for _, tc := range []struct {
		name  string
		spec  sd.RandomSpec
		heads unet.Heads
	}{
		{"sd1", sd1, unet.Heads{Count: 8}},
		{"sdxl", sdxl, unet.Heads{Dim: 16}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.spec.DType = weights.F32
			var buf bytes.Buffer
			if err := sd.WriteRandomCheckpoint(&buf, tc.spec); err != nil {
				t.Fatal(err)
			}
			f, err := tensorfile.OpenBytes("tiny.safetensors", buf.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			m, err := unet.Load(rt, statedict.NewFileSource(rt, f), "model.diffusion_model.", tc.heads)
			if err != nil {
				t.Fatal(err)
			}
			for _, sz := range sizes {
				w, h := sz[0]/8, sz[1]/8
				t.Run(fmt.Sprintf("%dx%d", sz[0], sz[1]), func(t *testing.T) {
					r := rand.New(rand.NewPCG(uint64(w), uint64(h)))
					tensor := func(shape ...int) *gpu.Tensor {
						n := 1
						for _, d := range shape {
							n *= d
						}
						v := make([]float32, n)
						for i := range v {
							v[i] = float32(r.NormFloat64())
						}
						x, err := rt.FromFloat32(v, shape...)
						if err != nil {
							t.Fatal(err)
						}
						return x
					}
					in := unet.Inputs{X: tensor(2, 4, h, w), Timesteps: tensor(2), Context: tensor(2, 7, tc.spec.UNet.Context)}
					if tc.spec.UNet.ADM > 0 {
						in.Y = tensor(2, tc.spec.UNet.ADM)
					}
					out, err := m.Forward(context.Background(), rt, in)
					if err != nil {
						t.Fatalf("latent %dx%d: %v", w, h, err)
					}
					defer out.Release()
					if got := out.Shape(); len(got) != 4 || got[0] != 2 || got[1] != 4 || got[2] != h || got[3] != w {
						t.Fatalf("output shape %v, want [2 4 %d %d]", got, h, w)
					}
					v, err := out.Float32()
					if err != nil {
						t.Fatal(err)
					}
					for i, x := range v {
						if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
							t.Fatalf("value %d is %v", i, x)
						}
					}
				})
			}
		})
	}
}

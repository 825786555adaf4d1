package sd

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/detect"
)

// TestSDXLInpaintCheckpoint loads a tiny SDXL checkpoint whose UNet takes 9 input
// channels (the layout of SDXL inpainting checkpoints) as an inpainting model, and
// samples it with the size conditioning's y and a concat from the conditioning: the
// concat image must reach the UNet (another concat image, another result), and a
// 4-channel SDXL UNet must not be taken for an inpainting one.
func TestSDXLInpaintCheckpoint(t *testing.T) {
	if testing.Short() {
		t.Skip("writes and samples two SDXL-layout checkpoints")
	}
	dir := t.TempDir()
	rt := newRT(t)
	load := func(in int) *Model {
		t.Helper()
		spec := TinyRandomSpec(detect.FamilySDXL)
		spec.UNet.InChannels = in
		path := filepath.Join(dir, "sdxl.safetensors")
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := WriteRandomCheckpoint(f, spec); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		ck, err := LoadCheckpoint(rt, path, LoadOptions{SkipCLIP: true, SkipVAE: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ck.Close() })
		return ck.Model
	}
	if load(4).isInpaintModel() {
		t.Fatal("a 4-channel SDXL UNet taken for an inpainting model")
	}
	m := load(9)
	if !m.isInpaintModel() || !m.ADM {
		t.Fatalf("9-channel SDXL: inpainting %v, ADM %v", m.isInpaintModel(), m.ADM)
	}
	tensor := func(k int, shape ...int) *gpu.Tensor {
		n := 1
		for _, d := range shape {
			n *= d
		}
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(math.Sin(0.37*float64(i*k) + float64(k)))
		}
		x, err := rt.FromFloat32(v, shape...)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	emb, pooled := tensor(1, 1, 77, 128), tensor(2, 1, 64)
	latent := tensor(3, 1, 4, 8, 8)
	// A noise mask in [0, 1]: a left-to-right ramp over the 64×64 pixels.
	mv := make([]float32, 64*64)
	for i := range mv {
		mv[i] = float32(i%64) / 63
	}
	mask, err := rt.FromFloat32(mv, 1, 1, 64, 64)
	if err != nil {
		t.Fatal(err)
	}
	run := func(concat *gpu.Tensor) []float32 {
		t.Helper()
		p, n := NewCond(emb, pooled), NewCond(emb, pooled)
		p.ConcatLatent, p.ConcatMask = concat, mask
		n.ConcatLatent, n.ConcatMask = concat, mask
		params := KSamplerParams{Seed: 3, Steps: 2, CFG: 3, Sampler: "euler", Scheduler: "normal", Denoise: 1, StartStep: -1, LastStep: -1}
		out, err := KSample(context.Background(), m, Conditioning{p}, Conditioning{n}, &Latent{Samples: latent, NoiseMask: mask}, params, nil)
		if err != nil {
			t.Fatal(err)
		}
		v, err := out.Samples.Float32()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	a, b := run(tensor(5, 1, 4, 8, 8)), run(tensor(6, 1, 4, 8, 8))
	var d float64
	for i := range a {
		if math.IsNaN(float64(a[i])) {
			t.Fatalf("value %d is NaN", i)
		}
		d += math.Abs(float64(a[i] - b[i]))
	}
	if d == 0 {
		t.Error("the concat image does not change the result")
	}
}

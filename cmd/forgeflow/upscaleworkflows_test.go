//go:build integration

package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	upmodel "github.com/forgeflow/forgeflow/diffusion/upscale"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/torch/torchtest"
)

// TestUpscaleWorkflows runs workflows/upscale with forgeflow run: a tiny Real-ESRGAN 4×
// (BasicSR key layout, saved as Real-ESRGAN's .pth files are, under "params_ema") under
// the file name the workflow uses, and an input image. The saved PNG must be the input
// upscaled by the model run directly (to one 8-bit level).
func TestUpscaleWorkflows(t *testing.T) {
	testenv.EndToEnd(t)
	base := t.TempDir()
	models := filepath.Join(base, "models", "upscale_models")
	in := filepath.Join(base, "input")
	for _, d := range []string{models, in} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	spec := upmodel.RandomSpec{Arch: "ESRGAN", In: 3, Out: 3, Features: 8, Growth: 4, Blocks: 2, Scale: 4}
	ts, err := spec.Tensors()
	if err != nil {
		t.Fatal(err)
	}
	var tt []torchtest.Tensor
	for _, r := range ts {
		data, err := upmodel.EncodeValues(r.Values(11), weights.F32)
		if err != nil {
			t.Fatal(err)
		}
		shape := make([]int64, len(r.Shape))
		for i, d := range r.Shape {
			shape[i] = int64(d)
		}
		tt = append(tt, torchtest.Tensor{Name: r.Name, DType: weights.F32, Shape: shape, Data: data})
	}
	pth, err := torchtest.Zip(tt, "params_ema")
	if err != nil {
		t.Fatal(err)
	}
	modelPath := filepath.Join(models, "RealESRGAN_x4plus.pth")
	if err := os.WriteFile(modelPath, pth, 0o644); err != nil {
		t.Fatal(err)
	}
	const w, h = 40, 30
	writePNG(t, filepath.Join(in, "example.png"), w, h)

	code, stdout, stderr := runCLI(t, context.Background(), "run", "--plain", "--base-directory", base, filepath.Join(workflowsDir, "upscale"))
	if code != exitOK || !strings.Contains(stdout, "upscale/esrgan_x4_00001_.png") {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	got := decodePNG(t, filepath.Join(base, "output", "upscale", "esrgan_x4_00001_.png"))
	if b := got.Bounds(); b.Dx() != 4*w || b.Dy() != 4*h {
		t.Fatalf("saved %v, want %dx%d", b, 4*w, 4*h)
	}

	// The same model run directly on the image LoadImage makes (RGB bytes / 255).
	src := decodePNG(t, filepath.Join(in, "example.png"))
	px := make([]float32, 3*w*h)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			r, g, b, a := src.At(x, y).RGBA()
			// LoadImage keeps the stored colour of a translucent pixel (PIL's convert("RGB")).
			un := func(c uint32) float32 {
				if a == 0 {
					return 0
				}
				return float32(uint8((c*0xffff/a)>>8)) / 255
			}
			px[(0*h+y)*w+x], px[(1*h+y)*w+x], px[(2*h+y)*w+x] = un(r), un(g), un(b)
		}
	}
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := upmodel.Load(rt, modelPath)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	want, err := m.Upscale(context.Background(), rt, upmodel.Image{N: 1, C: 3, H: h, W: w, Pix: px}, upmodel.TileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	oh, ow := 4*h, 4*w
	worst := 0
	for y := 0; y < oh; y++ {
		for x := 0; x < ow; x++ {
			r, g, b, _ := got.At(x, y).RGBA()
			for c, v := range []uint32{r >> 8, g >> 8, b >> 8} {
				exp := int(min(255, max(0, 255*want.Pix[(c*oh+y)*ow+x])))
				worst = max(worst, abs(int(v)-exp))
			}
		}
	}
	if worst > 1 {
		t.Errorf("saved image differs from the model's output by %d levels", worst)
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

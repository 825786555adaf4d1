package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/forgeflow/forgeflow/diffusion/upscale"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
)

// benchUpscale times ImageUpscaleWithModel's run (512-pixel tiles, overlap 32) of an
// upscale model on a random width×height image batch, with the model's GFLOP/s.
func benchUpscale(ctx context.Context, rt *gpu.Runtime, tm *timer, path string, width, height, batch int) (*benchResult, error) {
	start := time.Now()
	m, err := upscale.Load(rt, path)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	load := time.Since(start).Seconds()
	r := rand.New(rand.NewPCG(1, 2))
	px := make([]float32, batch*m.InChannels*width*height)
	for i := range px {
		px[i] = r.Float32()
	}
	img := upscale.Image{N: batch, C: m.InChannels, H: height, W: width, Pix: px}
	res := &benchResult{What: "upscale " + m.String(), Checkpoint: path, Width: width, Height: height, Batch: batch,
		Threads: gpuThreads(), WeightDType: string(m.WeightDType()), LoadS: load}
	err = tm.run(res, func() error {
		_, err := m.Upscale(ctx, rt, img, upscale.TileOptions{})
		return err
	})
	if err != nil {
		return nil, err
	}
	res.setFLOPs(upscaleFLOPs(m, width, height) * float64(batch))
	return res, nil
}

// upscaleFLOPs counts the model's operations over the tiles Upscale runs.
func upscaleFLOPs(m *upscale.Model, width, height int) float64 {
	const tile, overlap = 512, 32
	if width <= tile && height <= tile {
		return m.FLOPs(height, width)
	}
	var f float64
	for _, y := range tileStarts(height, tile, overlap) {
		for _, x := range tileStarts(width, tile, overlap) {
			f += m.FLOPs(min(tile, height-y), min(tile, width-x))
		}
	}
	return f
}

func tileStarts(n, tile, overlap int) []int {
	if n <= tile {
		return []int{0}
	}
	var s []int
	for p := 0; p < n-overlap; p += tile - overlap {
		s = append(s, max(0, min(n-overlap, p)))
	}
	return s
}

// upscaleSynth returns the writer of a full-size upscale model with random weights and
// the architecture's real key names: esrgan-x4 (RealESRGAN_x4plus / 4x-UltraSharp
// shape: 64 features, 23 RRDB blocks), realesrgan-x2 (the same behind a 2× pixel
// unshuffle), compact-x4 (realesr-general-x4v3: 64 features, 32 convs), span-x4 (48
// features); ok is false for other families.
func upscaleSynth(family string, dtype weights.DType, seed uint64) (write func(io.Writer) error, ok bool) {
	specs := map[string]upscale.RandomSpec{
		"esrgan-x4":     upscale.ESRGANx4(),
		"realesrgan-x2": {Arch: "ESRGAN", In: 12, Out: 3, Features: 64, Growth: 32, Blocks: 23, Scale: 4},
		"compact-x4":    {Arch: "Compact", In: 3, Out: 3, Features: 64, Blocks: 32, Scale: 4},
		"span-x4":       {Arch: "SPAN", In: 3, Out: 3, Features: 48, Scale: 4},
	}
	spec, ok := specs[family]
	if !ok {
		return nil, false
	}
	return func(w io.Writer) error {
		if err := upscale.WriteRandom(w, spec, seed, dtype); err != nil {
			return fmt.Errorf("%s: %w", family, err)
		}
		return nil
	}, true
}

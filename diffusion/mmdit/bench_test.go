package mmdit_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/mmdit"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// BenchmarkMMDiTBlock runs one SD3-medium-wide joint block (hidden 1536, 24 heads, F16
// weights as the released files store them) inside a one-block model, at the token
// counts of a 512² and a 1024² image with SD3's 154 text tokens (CLIP 77 + T5 77).
// GFLOP/s counts the block's matrix products and attention.
func BenchmarkMMDiTBlock(b *testing.B) {
	spec := mmdit.RandomSpec{Depth: 24, Blocks: 1, InChannels: 16, PatchSize: 2, ADMInChannels: 2048, ContextInDim: 4096, PosEmbedMaxSize: 64}
	ts, err := spec.Tensors("")
	if err != nil {
		b.Fatal(err)
	}
	rs := make([]sd.RandomTensor, len(ts))
	for i, x := range ts {
		rs[i] = sd.RandomTensor{Name: x.Name, Shape: x.Shape, Scale: x.Scale, Offset: x.Offset}
	}
	var buf bytes.Buffer
	if err := sd.WriteRandomTensors(&buf, rs, 1, weights.F16); err != nil {
		b.Fatal(err)
	}
	f, err := tensorfile.OpenBytes("block.safetensors", buf.Bytes())
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		b.Fatal(err)
	}
	m, _, err := mmdit.Load(rt, statedict.NewFileSource(rt, f), "")
	if err != nil {
		b.Fatal(err)
	}
	const text = 154
	h := float64(m.Config.Hidden)
	for _, side := range []int{64, 128} { // latent side: 512², 1024² images
		img := side * side / 4
		b.Run(fmt.Sprintf("f16/%dtok", img), func(b *testing.B) {
			x, _ := rt.FromFloat32(make([]float32, 16*side*side), 1, 16, side, side)
			t, _ := rt.FromFloat32([]float32{500}, 1)
			c, _ := rt.FromFloat32(make([]float32, text*4096), 1, text, 4096)
			y, _ := rt.FromFloat32(make([]float32, 2048), 1, 2048)
			// Per token 24·h² for q/k/v, proj and the 4h MLP (×2 multiply-add), the pre-only
			// context block of a last block skipping proj and MLP; attention 4·L²·h.
			l := float64(img + text)
			flop := 24*h*h*float64(img) + 6*h*h*float64(text) + 4*l*l*h
			b.ResetTimer()
			for range b.N {
				out, err := m.Forward(context.Background(), rt, mmdit.Inputs{X: x, Timesteps: t, Context: c, Y: y})
				if err != nil {
					b.Fatal(err)
				}
				out.Release()
			}
			b.ReportMetric(flop*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

package flux

import (
	"fmt"
	"testing"
	"time"

	"github.com/forgeflow/forgeflow/diffusion/rng"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/gguf"
)

// BenchmarkFluxBlock times one full-width flux1-dev double-stream block and one
// single-stream block (hidden 3072, 24 heads, MLP 12288) with random weights stored as
// bf16 or Q4_0 (as ComfyUI-GGUF files hold them), at 4096 tokens (256 text + 3840
// image, about a 1024² image) and at 512 (256 + 256: a 256² image), reporting GFLOP/s
// of the matrix products and attention (DoubleBlockFLOPs, SingleBlockFLOPs).
func BenchmarkFluxBlock(b *testing.B) {
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		b.Fatal(err)
	}
	spec := DevRandomSpec()
	spec.Depth, spec.DepthSingle, spec.Seed = 1, 1, 1
	d, heads, mlp := spec.Hidden, spec.Heads, spec.MLPHidden
	for _, q := range []struct {
		name string
		typ  gguf.Type
	}{{"bf16", gguf.TypeBF16}, {"q4_0", gguf.TypeQ4_0}} {
		var dbl DoubleBlock
		var sgl SingleBlock
		loaded := false
		load := func(b *testing.B) {
			if loaded {
				return
			}
			src, err := NewRandomSource(rt, spec, q.typ)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := statedict.Bind(rt, src, "double_blocks.0.", &dbl); err != nil {
				b.Fatal(err)
			}
			if _, err := statedict.Bind(rt, src, "single_blocks.0.", &sgl); err != nil {
				b.Fatal(err)
			}
			loaded = true
		}
		for _, tok := range []struct{ txt, img int }{{256, 3840}, {256, 256}} {
			size := fmt.Sprintf("%dtok", tok.txt+tok.img)
			b.Run(q.name+"/double/"+size, func(b *testing.B) {
				load(b)
				in := blockInputs(b, rt, tok.txt, tok.img, d)
				defer in.release()
				runBlock(b, DoubleBlockFLOPs(tok.img, tok.txt, d, mlp), func() error {
					img, txt, err := dbl.forward(rt, in.img, in.txt, in.vec, in.pe, nil, in.one, heads)
					img.Release()
					txt.Release()
					return err
				})
			})
			b.Run(q.name+"/single/"+size, func(b *testing.B) {
				load(b)
				in := blockInputs(b, rt, tok.txt, tok.img, d)
				defer in.release()
				joint, err := gpu.Concat(rt, 1, in.txt, in.img)
				if err != nil {
					b.Fatal(err)
				}
				defer joint.Release()
				runBlock(b, SingleBlockFLOPs(tok.txt+tok.img, d, mlp), func() error {
					out, err := sgl.forward(rt, joint, in.vec, in.pe, nil, in.one, heads)
					out.Release()
					return err
				})
			})
		}
	}
}

type blockIn struct{ img, txt, vec, pe, one *gpu.Tensor }

func (in blockIn) release() {
	for _, t := range []*gpu.Tensor{in.img, in.txt, in.vec, in.pe, in.one} {
		t.Release()
	}
}

// blockInputs makes N(0, 1) tokens, a pooled vector and the rotary table of a square-ish
// image of img tokens after txt text tokens.
func blockInputs(b *testing.B, rt *gpu.Runtime, txt, img, d int) blockIn {
	b.Helper()
	g := rng.New(5)
	randn := func(shape ...int) *gpu.Tensor {
		n := 1
		for _, s := range shape {
			n *= s
		}
		v := make([]float32, n)
		g.Randn(v)
		t, err := rt.FromFloat32(v, shape...)
		if err != nil {
			b.Fatal(err)
		}
		return t
	}
	w := 1
	for w*w < img {
		w++
	}
	for img%w != 0 {
		w++
	}
	ids := append(make([]float32, 3*txt), positionIDs(2*(img/w), 2*w, 2, 0, 0, 0)...)
	idT, err := rt.FromFloat32(ids, 1, txt+img, 3)
	if err != nil {
		b.Fatal(err)
	}
	defer idT.Release()
	pe, err := gpu.RoPEFreqs(rt, idT, defaultAxesDim, 10000)
	if err != nil {
		b.Fatal(err)
	}
	one, _ := rt.FromFloat32([]float32{1}, 1)
	return blockIn{img: randn(1, img, d), txt: randn(1, txt, d), vec: randn(1, d), pe: pe, one: one}
}

// runBlock runs f b.N times (after one untimed run) and reports GFLOP/s.
func runBlock(b *testing.B, flops float64, f func() error) {
	b.Helper()
	if err := f(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if err := f(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(flops*float64(b.N)/time.Since(start).Seconds()/1e9, "GFLOP/s")
}

package lora_test

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/lora"
	"github.com/forgeflow/forgeflow/diffusion/lora/loratest"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

var (
	benchOnce sync.Once
	benchPath string
	benchErr  error
)

// benchSD15 returns a full-size SD1.5 checkpoint: $FORGEFLOW_BENCH_SD15, or a random
// one (fp16, 2.1 GB) written once into the temporary folder under the name diffusion/sd's
// benchmarks use, and reused while its tensor list is the spec's.
func benchSD15(b *testing.B) string {
	b.Helper()
	if p := os.Getenv("FORGEFLOW_BENCH_SD15"); p != "" {
		return p
	}
	benchOnce.Do(func() {
		s := sd.SD15RandomSpec()
		s.Seed = 1
		benchPath = filepath.Join(os.TempDir(), "forgeflow-bench-sd15-random-fp16-seed1.safetensors")
		ts, err := s.Tensors()
		if err != nil {
			benchErr = err
			return
		}
		if f, err := safetensors.Open(benchPath); err == nil {
			n := len(f.Tensors())
			f.Close()
			if n == len(ts) {
				return
			}
		}
		tmp := benchPath + ".tmp"
		f, err := os.Create(tmp)
		if err != nil {
			benchErr = err
			return
		}
		if benchErr = sd.WriteRandomCheckpoint(f, s); benchErr == nil {
			benchErr = f.Close()
		}
		if benchErr == nil {
			benchErr = os.Rename(tmp, benchPath)
		}
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchPath
}

// benchLoRA writes a kohya LoRA of rank 32 (alpha 16, F16) for every transformer linear
// and 1×1 projection of the model's UNet and every CLIP layer: what sd-scripts trains
// by default for SD1.5 (about 72 MB for SD1.5).
func benchLoRA(b *testing.B, m *sd.Model, c *sd.CLIP) string {
	b.Helper()
	km, err := sd.LoRAKeyMap(m, c)
	if err != nil {
		b.Fatal(err)
	}
	mp, tp, err := sd.LoRAParams(m, c)
	if err != nil {
		b.Fatal(err)
	}
	shapes := map[string][]int{}
	for _, p := range append(mp, tp...) {
		shapes[p.Key] = p.Shape
	}
	f := loratest.New(42).DType(weights.F16)
	for mod, t := range km {
		kohyaUNet := strings.HasPrefix(mod, "lora_unet_") && strings.Contains(mod, "_attentions_") &&
			(strings.Contains(mod, "transformer_blocks") || strings.HasSuffix(mod, "proj_in") || strings.HasSuffix(mod, "proj_out"))
		kohyaTE := strings.HasPrefix(mod, "lora_te_")
		s := shapes[t.Key]
		if (!kohyaUNet && !kohyaTE) || len(s) < 2 || strings.Contains(mod, "norm") {
			continue
		}
		f.LoRA(mod, loratest.Kohya, s[0], 32, 16, s[1:]...)
	}
	path := filepath.Join(b.TempDir(), "bench_lora.safetensors")
	data, err := f.Bytes()
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Fatal(err)
	}
	return path
}

// BenchmarkLoRAStep measures what LoraLoader adds to the first sampling step of SD1.5
// at 512² (one UNet evaluation of the cond/uncond batch of 2), in each apply mode. Every
// iteration runs the plain model's step, then opens the LoRA file, resolves it, applies
// it to UNet and CLIP and runs the patched model's step, so that the pair shares the
// machine's conditions. Metrics: CPU seconds of the plain step, the load and the patched
// step (the measure that holds on a shared machine; wall time per op includes both
// steps), and x-plain = (load + patched step) / plain step, the "within 5 %"
// read as CPU time.
func BenchmarkLoRAStep(b *testing.B) {
	path := benchSD15(b)
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ck, err := sd.LoadCheckpoint(rt, path, sd.LoadOptions{SkipVAE: true})
	if err != nil {
		b.Fatal(err)
	}
	defer ck.Close()
	lpath := benchLoRA(b, ck.Model, ck.CLIP)
	r := rand.New(rand.NewPCG(1, 2))
	randT := func(shape ...int) *gpu.Tensor {
		n := 1
		for _, d := range shape {
			n *= d
		}
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		t, err := rt.FromFloat32(v, shape...)
		if err != nil {
			b.Fatal(err)
		}
		return t
	}
	in := unet.Inputs{X: randT(2, 4, 64, 64), Context: randT(2, 77, 768)}
	if in.Timesteps, err = rt.FromFloat32([]float32{999, 999}, 2); err != nil {
		b.Fatal(err)
	}
	step := func(m *sd.Model) {
		out, err := m.UNet.Forward(context.Background(), rt, in)
		if err != nil {
			b.Fatal(err)
		}
		out.Release()
	}
	step(ck.Model) // touch the mapped weights once, so no variant pays the page faults
	for _, mode := range []lora.Mode{lora.Merge, lora.Runtime} {
		b.Run(mode.String()+"/f16/512", func(b *testing.B) {
			var plain, load, patched float64
			for b.Loop() {
				c0 := cpuSeconds()
				step(ck.Model)
				c1 := cpuSeconds()
				f, err := lora.Open(rt, lpath)
				if err != nil {
					b.Fatal(err)
				}
				m, _, err := sd.LoadLoRA(ck.Model, ck.CLIP, f, 0.8, 0.8, sd.LoRAOptions{Mode: mode})
				if err != nil {
					b.Fatal(err)
				}
				c2 := cpuSeconds()
				step(m)
				c3 := cpuSeconds()
				plain, load, patched = plain+c1-c0, load+c2-c1, patched+c3-c2
			}
			n := float64(b.N)
			b.ReportMetric(plain/n, "plain-cpu-s")
			b.ReportMetric(load/n, "load-cpu-s")
			b.ReportMetric(patched/n, "step-cpu-s")
			b.ReportMetric((load+patched)/plain, "x-plain")
		})
	}
}

// BenchmarkLoRALoad is the load part alone: open, resolve and apply the SD1.5 LoRA of
// BenchmarkLoRAStep to UNet and CLIP in each mode.
func BenchmarkLoRALoad(b *testing.B) {
	path := benchSD15(b)
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ck, err := sd.LoadCheckpoint(rt, path, sd.LoadOptions{SkipVAE: true})
	if err != nil {
		b.Fatal(err)
	}
	defer ck.Close()
	lpath := benchLoRA(b, ck.Model, ck.CLIP)
	for _, mode := range []lora.Mode{lora.Merge, lora.Runtime} {
		b.Run(mode.String()+"/f16", func(b *testing.B) {
			for b.Loop() {
				f, err := lora.Open(rt, lpath)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := sd.LoadLoRA(ck.Model, ck.CLIP, f, 0.8, 0.8, sd.LoRAOptions{Mode: mode}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

package gpu

import (
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user+system CPU time. On this shared, loaded machine the
// wall-clock rate depends on how much CPU the scheduler gives us, so the benchmarks also
// report GFLOP per CPU-second ("GFLOP/cpu-s"): divide by the thread count for a
// per-core figure comparable with the per-core FMA peak.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportFlops reports wall-clock GFLOP/s and GFLOP per CPU-second.
func reportFlops(b *testing.B, flopsPerOp float64, cpu0 time.Duration) {
	total := flopsPerOp * float64(b.N)
	b.ReportMetric(total/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	if c := (cpuTime() - cpu0).Seconds(); c > 0 {
		b.ReportMetric(total/c/1e9, "GFLOP/cpu-s")
	}
}

// Benchmarks report GFLOP/s (2 flops per multiply-add). Run, for example:
//
//	go test ./gpu -run '^$' -bench 'Conv2D|Attention' -benchtime 3x
//
// The shapes are SD1.5's: conv 3×3 at 64×64×320 and 32×32×640, attention at 4096 tokens
// × 8 heads × 40, and Flux's 4608 tokens × 24 heads × 128.

func BenchmarkConv2D(b *testing.B) {
	cases := []struct {
		hw, c int
		wd    DType
	}{
		{64, 320, F32}, {32, 640, F32}, {64, 320, F16}, {256, 128, F32},
		{32, 640, F16}, {8, 1280, F16}, // SD1.5 at 256²: level 2 and the deepest level
	}
	// "auto" is the default runtime (packed weights, Winograd where it pays); "direct"
	// packs no weight and never takes the Winograd form (the state before issue 13).
	modes := []struct {
		name string
		opts Options
	}{{"auto", Options{Threads: 2}}, {"direct", Options{Threads: 2, PackBudget: -1}}}
	for _, cs := range cases {
		for _, md := range modes {
			b.Run(fmt.Sprintf("%s/%dx%dx%d/%s", cs.wd, cs.hw, cs.hw, cs.c, md.name), func(b *testing.B) {
				rt, err := New(md.opts)
				if err != nil {
					b.Fatal(err)
				}
				r := rand.New(rand.NewPCG(1, 2))
				x := ok(b)(rt.FromFloat32(randData(r, cs.c*cs.hw*cs.hw), 1, cs.c, cs.hw, cs.hw))
				wv := randData(r, cs.c*cs.c*9)
				nb, _ := cs.wd.StorageBytes(len(wv))
				raw := make([]byte, nb)
				_ = EncodeFloat32(cs.wd, raw, wv)
				w := ok(b)(rt.FromBytes(cs.wd, raw, cs.c, cs.c, 3, 3))
				bias := ok(b)(rt.Zeros(F32, cs.c))
				flops := 2.0 * float64(cs.c*cs.c*9) * float64(cs.hw*cs.hw)
				// one call first: the steady state of a sampling loop, with the weight's
				// panels packed (pack.go), is what is measured
				if y, err := Conv2D(rt, x, w, bias, 1, 1); err == nil {
					y.Release()
				}
				b.ResetTimer()
				cpu0 := cpuTime()
				for b.Loop() {
					y, err := Conv2D(rt, x, w, bias, 1, 1)
					if err != nil {
						b.Fatal(err)
					}
					y.Release()
				}
				reportFlops(b, flops, cpu0)
			})
		}
	}
}

func BenchmarkAttention(b *testing.B) {
	cases := []struct{ l, h, d int }{{4096, 8, 40}, {4608, 24, 128}, {1024, 8, 80}}
	for _, cs := range cases {
		b.Run(fmt.Sprintf("f32/%dx%dx%d", cs.l, cs.h, cs.d), func(b *testing.B) {
			rt := newRT(b)
			r := rand.New(rand.NewPCG(3, 4))
			n := cs.l * cs.h * cs.d
			// (B, L, H, D) projections viewed as (B, H, L, D), as the models produce them
			mk := func() *Tensor {
				t := ok(b)(rt.FromFloat32(randData(r, n), 1, cs.l, cs.h, cs.d))
				return ok(b)(Permute(t, 0, 2, 1, 3))
			}
			q, k, v := mk(), mk(), mk()
			flops := 4.0 * float64(cs.l) * float64(cs.l) * float64(cs.d) * float64(cs.h)
			b.ResetTimer()
			cpu0 := cpuTime()
			for b.Loop() {
				y, err := Attention(rt, q, k, v, nil, AttentionParams{})
				if err != nil {
					b.Fatal(err)
				}
				y.Release()
			}
			reportFlops(b, flops, cpu0)
		})
	}
}

func BenchmarkGroupNorm(b *testing.B) {
	rt := newRT(b)
	r := rand.New(rand.NewPCG(5, 6))
	x := ok(b)(rt.FromFloat32(randData(r, 320*64*64), 1, 320, 64, 64))
	w := ok(b)(rt.FromFloat32(randData(r, 320), 320))
	b.SetBytes(int64(4 * 320 * 64 * 64 * 2))
	for b.Loop() {
		y := ok(b)(GroupNorm(rt, x, 32, w, w, 1e-5))
		y.Release()
	}
}

func BenchmarkActivation(b *testing.B) {
	for _, op := range []struct {
		name string
		f    func(*Runtime, *Tensor) (*Tensor, error)
	}{{"gelu", GELU}, {"silu", SiLU}, {"gelu_tanh", GELUTanh}} {
		b.Run("f32/"+op.name+"/4096x1280", func(b *testing.B) {
			rt := newRT(b)
			r := rand.New(rand.NewPCG(7, 8))
			x := ok(b)(rt.FromFloat32(randData(r, 4096*1280), 4096, 1280))
			b.SetBytes(4 * 4096 * 1280 * 2)
			for b.Loop() {
				y := ok(b)(op.f(rt, x))
				y.Release()
			}
		})
	}
}

// BenchmarkFMAPeak measures the AVX-512 FMA ceiling in the same units as the kernels
// (GFLOP/s on both threads, and GFLOP per CPU-second = per core).
func BenchmarkFMAPeak(b *testing.B) {
	if !haveAVX512() {
		b.Skip("no AVX-512")
	}
	const iters = 1 << 22
	rt := newRT(b)
	threads := rt.cpu.threads
	cpu0 := cpuTime()
	for b.Loop() {
		_ = forEach(rt.cpu, threads, 1, struct{}{}, func(_ *struct{}, _, lo, hi int) error {
			for i := lo; i < hi; i++ {
				fmaLoopAVX512(iters)
			}
			return nil
		})
	}
	reportFlops(b, 384*float64(iters)*float64(threads), cpu0)
}

// BenchmarkLinear goes through gpu.Linear (weight kept in its stored dtype) at SD shapes,
// to show the runtime adds nothing measurable over the GEMM package.
func BenchmarkLinear(b *testing.B) {
	for _, cs := range []struct {
		m, n, k int
		wd      DType
	}{{4096, 1280, 320, F32}, {4096, 1280, 320, F16}, {4096, 320, 1280, BF16}} {
		b.Run(fmt.Sprintf("%s/%dx%dx%d", cs.wd, cs.m, cs.n, cs.k), func(b *testing.B) {
			rt := newRT(b)
			r := rand.New(rand.NewPCG(9, 10))
			x := ok(b)(rt.FromFloat32(randData(r, cs.m*cs.k), cs.m, cs.k))
			nb, _ := cs.wd.StorageBytes(cs.n * cs.k)
			raw := make([]byte, nb)
			_ = EncodeFloat32(cs.wd, raw, randData(r, cs.n*cs.k))
			w := ok(b)(rt.FromBytes(cs.wd, raw, cs.n, cs.k))
			bias := ok(b)(rt.Zeros(F32, cs.n))
			ok(b)(Linear(rt, x, w, bias)).Release() // packs the weight (pack.go)
			b.ResetTimer()
			cpu0 := cpuTime()
			for b.Loop() {
				y := ok(b)(Linear(rt, x, w, bias))
				y.Release()
			}
			reportFlops(b, 2*float64(cs.m*cs.n*cs.k), cpu0)
		})
	}
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/forgeflow/forgeflow/diffusion/clip"
	"github.com/forgeflow/forgeflow/diffusion/flux"
	"github.com/forgeflow/forgeflow/diffusion/rng"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/diffusion/vae"
	"github.com/forgeflow/forgeflow/gpu"
)

// benchResult is what `forgeflow bench --json` prints.
type benchResult struct {
	What          string    `json:"what"`
	Checkpoint    string    `json:"checkpoint"`
	Width         int       `json:"width"`
	Height        int       `json:"height"`
	Batch         int       `json:"batch"`
	Steps         int       `json:"steps,omitempty"`
	Runs          []float64 `json:"runs_s"`
	MedianS       float64   `json:"median_s"`
	MinS          float64   `json:"min_s"`
	FirstS        float64   `json:"first_s"`     // the warm-up run: weights packed, pool filled, pages faulted in
	FirstCPUS     float64   `json:"first_cpu_s"` // its CPU seconds
	CPUS          []float64 `json:"cpu_s"`       // CPU seconds of all threads per timed run, where the OS reports them
	GFLOP         float64   `json:"gflop,omitempty"`
	GFLOPSPerS    float64   `json:"gflops_per_s,omitempty"`
	GFLOPPerCPUS  float64   `json:"gflop_per_cpu_s,omitempty"` // GFLOP over the median run's CPU seconds: one core's rate, less sensitive to neighbours
	Tile          int       `json:"tile_px,omitempty"`
	Overlap       int       `json:"overlap_px,omitempty"`
	PeakRSSBytes  int64     `json:"peak_rss_bytes"`
	Threads       int       `json:"threads"`
	WeightDType   string    `json:"weight_dtype"`
	LoadS         float64   `json:"load_s"`
	ContextTokens int       `json:"context_tokens"`
	// GEMM and BF16 are the runtime's kernel family and whether it computes Linear and
	// Conv2D in bfloat16 (--gemm, --bf16).
	GEMM string `json:"gemm"`
	BF16 bool   `json:"bf16"`
	// Blocking is the GEMM's cache blocking, KC, MC and NC (--gemm-blocking).
	Blocking [3]int `json:"gemm_blocking"`
	// CPUSPerRun is the process's CPU time (user + system) per timed run, the mean of
	// CPUS, where the platform reports it.
	CPUSPerRun float64 `json:"cpu_s_per_run,omitempty"`
	// Device names where it ran (cpu, or cuda:N with the device's name).
	Device string `json:"device"`
}

// benchRuntime returns the runtime a bench measures: the CPU's, or the CUDA device's
// (an error when none opens: a bench must not quietly measure the CPU instead).
func benchRuntime(base gpu.Options, o deviceOptions, useCUDA bool, stderr io.Writer) (*gpu.Runtime, func() error, error) {
	if !useCUDA {
		rt, err := gpu.New(base)
		return rt, func() error { return nil }, err
	}
	dev, err := openCUDA(o, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return nil, nil, err
	}
	base.Backend = dev.backend
	rt, err := gpu.New(base)
	if err != nil {
		dev.close()
		return nil, nil, err
	}
	return rt, dev.close, nil
}

// cmdBench measures one part of the pipeline on a checkpoint.
func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, "usage: forgeflow bench unet|vae|txt2img|flux|upscale --ckpt FILE [--device cpu|cuda] [--width 256] [--height 256] [--batch 2] [--steps 20] [--vocab DIR] [--tokens 256] [--weight-dtype default] [--tile PX] [--overlap PX] [--runs 3] [--cpuprofile FILE] [--json] [--conv auto] [--pack on] [--bf16 off] [--gemm auto]")
		return exitUsage
	}
	what, rest := args[0], args[1:]
	fs := flag.NewFlagSet("bench "+what, flag.ContinueOnError)
	fs.SetOutput(stderr)
	ckpt := fs.String("ckpt", "", "single-file SD1.x/SD2.x checkpoint (flux: a Flux diffusion model, safetensors or GGUF; vae: any file holding a VAE; upscale: an upscale model); `forgeflow synth` writes them")
	width := fs.Int("width", 256, "image width in pixels")
	height := fs.Int("height", 256, "image height in pixels")
	batch := fs.Int("batch", 2, "batch size (2 = one CFG evaluation; flux: 1 unless given)")
	runs := fs.Int("runs", 3, "timed runs after one warm-up")
	steps := fs.Int("steps", 20, "txt2img: sampling steps")
	vocab := fs.String("vocab", "", "txt2img: folder with the CLIP vocabulary (vocab.json + merges.txt)")
	tokens := fs.Int("tokens", 256, "flux: T5 context tokens (ComfyUI pads Flux prompts to 256)")
	weightDType := fs.String("weight-dtype", "default", "flux: UNETLoader's weight_dtype (default, fp8_e4m3fn, fp8_e5m2)")
	tile := fs.Int("tile", 0, "vae: decode in tiles of this many pixels (ComfyUI's VAEDecodeTiled; 0 decodes whole)")
	overlap := fs.Int("overlap", 64, "vae: tile overlap in pixels (with --tile)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the timed runs (not the warm-up) to this file, its samples labelled with the op (go tool pprof -tags)")
	var compute computeFlags
	compute.register(fs, os.Getenv)
	device := fs.String("device", "cpu", "where to run: cpu, or cuda (the device of --cuda-device, with --lowvram etc.)")
	var df deviceFlags
	df.register(fs)
	if code, ok := parseFlags(fs, rest); !ok {
		return code
	}
	devOpts, err := df.options()
	if err != nil || (*device != "cpu" && *device != "cuda") {
		fmt.Fprintf(stderr, "forgeflow bench: --device %s: %v\n", *device, err)
		return exitUsage
	}
	if *ckpt == "" || *width%8 != 0 || *height%8 != 0 || *width <= 0 || *height <= 0 || *batch < 1 || *runs < 1 || *tokens < 1 || *tile < 0 || *overlap < 0 {
		fmt.Fprintln(stderr, "forgeflow bench: --ckpt is required; width and height must be positive multiples of 8; batch, runs and tokens positive; tile and overlap not negative")
		return exitUsage
	}
	batchSet := false
	fs.Visit(func(f *flag.Flag) { batchSet = batchSet || f.Name == "batch" })
	tm := &timer{runs: *runs}
	if *cpuProfile != "" {
		pf, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "forgeflow bench: %v\n", err)
			return exitFailed
		}
		defer pf.Close()
		tm.profile = pf
		defer tm.stopProfile()
	}
	base, err := compute.options(slog.New(slog.NewTextHandler(stderr, nil)))
	base.OpLabels = *cpuProfile != ""
	if err != nil {
		fmt.Fprintf(stderr, "forgeflow bench: %v\n", err)
		return exitFailed
	}
	rt, closeDevice, err := benchRuntime(base, devOpts, *device == "cuda", stderr)
	if err != nil {
		fmt.Fprintf(stderr, "forgeflow bench: %v\n", err)
		return exitFailed
	}
	defer closeDevice()
	var res *benchResult
	switch what {
	case "unet":
		res, err = benchUNet(ctx, rt, tm, *ckpt, *width, *height, *batch)
	case "vae":
		res, err = benchVAE(ctx, rt, tm, *ckpt, *width, *height, *tile, *overlap)
	case "txt2img":
		res, err = benchTxt2Img(ctx, rt, tm, *ckpt, *vocab, *width, *height, *steps)
	case "flux":
		b := 1
		if batchSet {
			b = *batch
		}
		res, err = benchFlux(ctx, rt, tm, *ckpt, *width, *height, b, *tokens, *weightDType)
	case "upscale":
		b := 1
		if batchSet {
			b = *batch
		}
		res, err = benchUpscale(ctx, rt, tm, *ckpt, *width, *height, b)
	default:
		fmt.Fprintf(stderr, "forgeflow bench: unknown target %q (have: unet, vae, txt2img, flux, upscale)\n", what)
		return exitUsage
	}
	if err != nil {
		fmt.Fprintf(stderr, "forgeflow bench: %v\n", err)
		return exitFailed
	}
	res.PeakRSSBytes = peakRSS()
	res.GEMM, res.BF16 = rt.GEMM(), rt.BF16()
	res.Blocking[0], res.Blocking[1], res.Blocking[2] = rt.GEMMBlocking()
	res.Device = rt.Backend().Name()
	if d, ok := rt.Backend().(interface{ Describe() string }); ok {
		res.Device = d.Describe()
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(res)
		return exitOK
	}
	flops := "" // txt2img counts no operations
	if res.GFLOP > 0 {
		flops = fmt.Sprintf(", %.1f GFLOP, %.1f GFLOP/s", res.GFLOP, res.GFLOPSPerS)
		if res.GFLOPPerCPUS > 0 {
			flops += fmt.Sprintf(" (%.1f GFLOP/cpu-s)", res.GFLOPPerCPUS)
		}
	}
	if res.CPUSPerRun > 0 {
		flops += fmt.Sprintf(", %.1f CPU-s per run", res.CPUSPerRun)
	}
	fmt.Fprintf(stdout, "%s %dx%d batch %d: median %.3f s (min %.3f, warm-up %.3f s, %.1f CPU-s) over %d runs%s, peak RSS %.2f GiB (load %.2f s, weights %s, gemm %s, bf16 %v, %d threads)\n",
		res.What, res.Width, res.Height, res.Batch, res.MedianS, res.MinS, res.FirstS, res.FirstCPUS, len(res.Runs), flops, float64(res.PeakRSSBytes)/(1<<30), res.LoadS, res.WeightDType, res.GEMM, res.BF16, res.Threads)
	return exitOK
}

// benchUNet times UNet evaluations of an SD1.x checkpoint on random latents and context.
func benchUNet(ctx context.Context, rt *gpu.Runtime, tm *timer, path string, width, height, batch int) (*benchResult, error) {
	start := time.Now()
	ck, err := sd.LoadCheckpoint(rt, path, sd.LoadOptions{SkipVAE: true, SkipCLIP: true})
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	if ck.Model == nil {
		return nil, fmt.Errorf("%s: bench unet needs an SD1.x/SD2.x/SDXL checkpoint", path)
	}
	m := ck.Model.UNet
	load := time.Since(start).Seconds()
	const ctxLen = 77
	ctxDim := 768
	for _, b := range m.Input {
		for _, mod := range b {
			if mod.Transformer != nil {
				ctxDim = mod.Transformer.Blocks[0].Attn2.K.Weight.Dim(1)
			}
		}
	}
	h, w := height/8, width/8
	g := rng.New(1)
	randT := func(shape ...int) (*gpu.Tensor, error) {
		n := 1
		for _, d := range shape {
			n *= d
		}
		v := make([]float32, n)
		g.Randn(v)
		return rt.FromFloat32(v, shape...)
	}
	x, err := randT(batch, 4, h, w)
	if err != nil {
		return nil, err
	}
	c, err := randT(batch, ctxLen, ctxDim)
	if err != nil {
		return nil, err
	}
	ts := make([]float32, batch)
	for i := range ts {
		ts[i] = 500
	}
	t, err := rt.FromFloat32(ts, batch)
	if err != nil {
		return nil, err
	}
	var y *gpu.Tensor
	if ck.Model.ADM { // SDXL: a random label vector in place of the pooled text and sizes
		if y, err = randT(batch, m.LabelEmbed.L1.Weight.Dim(1)); err != nil {
			return nil, err
		}
	}
	res := &benchResult{What: "unet", Checkpoint: path, Width: width, Height: height, Batch: batch,
		Threads: gpuThreads(), WeightDType: m.TimeEmbed1.Weight.DType().String(), LoadS: load, ContextTokens: ctxLen}
	err = tm.run(res, func() error {
		out, err := m.Forward(ctx, rt, unet.Inputs{X: x, Timesteps: t, Context: c, Y: y})
		out.Release()
		if err != nil {
			return err
		}
		return rt.Backend().Synchronize() // a device queues work: time it done
	})
	if err != nil {
		return nil, err
	}
	res.setFLOPs(m.FLOPs(batch, h, w, ctxLen))
	return res, nil
}

func gpuThreads() int { return runtime.GOMAXPROCS(0) }

// peakRSS reads the process's peak resident set (VmHWM) from /proc; 0 where unavailable.
func peakRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			fields := strings.Fields(v)
			if len(fields) > 0 {
				kb, _ := strconv.ParseInt(fields[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// timer runs a benchmark body once to warm up (weights packed, buffer pool filled,
// memory-mapped weights faulted in), then runs times; the CPU profile, when asked for,
// covers the timed runs only.
type timer struct {
	runs    int
	profile *os.File
	started bool
}

func (tm *timer) stopProfile() {
	if tm.started {
		pprof.StopCPUProfile()
		tm.started = false
	}
}

// run times f and fills res's timing fields.
func (tm *timer) run(res *benchResult, f func() error) error {
	for i := 0; i <= tm.runs; i++ {
		if i == 1 && tm.profile != nil {
			if err := pprof.StartCPUProfile(tm.profile); err != nil {
				return err
			}
			tm.started = true
		}
		c0 := processCPUSeconds()
		s := time.Now()
		if err := f(); err != nil {
			return err
		}
		d := time.Since(s).Seconds()
		if i == 0 {
			res.FirstS, res.FirstCPUS = d, max(0, processCPUSeconds()-c0)
			continue
		}
		res.Runs = append(res.Runs, d)
		if c := processCPUSeconds() - c0; c > 0 {
			res.CPUS = append(res.CPUS, c)
		}
	}
	tm.stopProfile()
	sorted := append([]float64(nil), res.Runs...)
	sort.Float64s(sorted)
	res.MedianS, res.MinS = sorted[len(sorted)/2], sorted[0]
	if len(res.CPUS) == len(res.Runs) {
		sum := 0.0
		for _, c := range res.CPUS {
			sum += c
		}
		res.CPUSPerRun = sum / float64(len(res.CPUS))
	}
	return nil
}

// setFLOPs records a run's operation count and the rates it gives: per wall second of
// the median run, and per CPU second of the median of the runs' CPU times.
func (res *benchResult) setFLOPs(flops float64) {
	res.GFLOP = flops / 1e9
	res.GFLOPSPerS = res.GFLOP / res.MedianS
	if len(res.CPUS) == len(res.Runs) && len(res.CPUS) > 0 {
		c := append([]float64(nil), res.CPUS...)
		sort.Float64s(c)
		res.GFLOPPerCPUS = res.GFLOP / c[len(c)/2]
	}
}

// benchVAE times decoding one random latent into a width×height image, whole or (tile >
// 0) with ComfyUI's tiled decode: tiles of tile pixels overlapping by overlap pixels.
func benchVAE(ctx context.Context, rt *gpu.Runtime, tm *timer, path string, width, height, tile, overlap int) (*benchResult, error) {
	start := time.Now()
	ck, err := sd.LoadVAE(rt, path)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	if ck.VAE == nil || ck.VAE.Model == nil {
		return nil, fmt.Errorf("%s holds no VAE", path)
	}
	load := time.Since(start).Seconds()
	f := ck.VAE.Model.Downscale()
	c := ck.VAE.Model.LatentChannels()
	v := make([]float32, c*(height/f)*(width/f))
	rng.New(1).Randn(v)
	z, err := rt.FromFloat32(v, 1, c, height/f, width/f)
	if err != nil {
		return nil, err
	}
	res := &benchResult{What: "vae-decode", Checkpoint: path, Width: width, Height: height, Batch: 1,
		Threads: gpuThreads(), WeightDType: ck.VAE.Model.Decoder.ConvIn.Weight.DType().String(), LoadS: load}
	decode := func() error {
		_, err := ck.VAE.Decode(ctx, z)
		return err
	}
	flops := ck.VAE.Model.DecodeFLOPs(height/f, width/f)
	if tile > 0 {
		res.What, res.Tile, res.Overlap = "vae-decode-tiled", tile, overlap
		tl, ov := max(2, tile/f), overlap/f
		decode = func() error {
			_, err := ck.VAE.DecodeTiled(ctx, z, tl, tl, ov)
			return err
		}
		flops = tiledDecodeFLOPs(ck.VAE.Model, height/f, width/f, tl, ov)
	}
	if err := tm.run(res, decode); err != nil {
		return nil, err
	}
	res.setFLOPs(flops)
	return res, nil
}

// benchTxt2Img times ComfyUI's default graph end to end: encode two prompts, sample
// (euler, normal, cfg 8), decode.
func benchTxt2Img(ctx context.Context, rt *gpu.Runtime, tm *timer, path, vocabDir string, width, height, steps int) (*benchResult, error) {
	if vocabDir == "" {
		return nil, fmt.Errorf("txt2img needs --vocab DIR (a folder with vocab.json and merges.txt)")
	}
	bpe, err := clip.LoadBPE(vocabDir)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	ck, err := sd.LoadCheckpoint(rt, path, sd.LoadOptions{Vocab: bpe})
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	load := time.Since(start).Seconds()
	if ck.Model == nil || ck.CLIP == nil || ck.VAE == nil {
		return nil, fmt.Errorf("%s lacks a model, text encoder or VAE", path)
	}
	res := &benchResult{What: "txt2img", Checkpoint: path, Width: width, Height: height, Batch: 1, Steps: steps,
		Threads: gpuThreads(), WeightDType: ck.Model.UNet.TimeEmbed1.Weight.DType().String(), LoadS: load}
	err = tm.run(res, func() error {
		pos, err := sd.EncodePrompt(ctx, ck.CLIP, "beautiful scenery nature glass bottle landscape, purple galaxy bottle,")
		if err != nil {
			return err
		}
		neg, err := sd.EncodePrompt(ctx, ck.CLIP, "text, watermark")
		if err != nil {
			return err
		}
		z, err := rt.Zeros(gpu.F32, 1, ck.Model.Latent.Channels, height/8, width/8)
		if err != nil {
			return err
		}
		out, err := sd.KSample(ctx, ck.Model, pos, neg, &sd.Latent{Samples: z}, sd.KSamplerParams{Seed: 42, Steps: steps, CFG: 8,
			Sampler: "euler", Scheduler: "normal", Denoise: 1, StartStep: -1, LastStep: -1}, nil)
		if err != nil {
			return err
		}
		_, err = ck.VAE.Decode(ctx, out.Samples)
		return err
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// benchFlux times one Flux transformer evaluation (one sampling step without CFG, as
// ComfyUI's Flux graphs run) on a random latent of width×height pixels, tokens of
// random T5 context, a random pooled vector and guidance 3.5.
func benchFlux(ctx context.Context, rt *gpu.Runtime, tm *timer, path string, width, height, batch, tokens int, weightDType string) (*benchResult, error) {
	start := time.Now()
	m, err := flux.LoadFile(rt, path, flux.Options{WeightDType: weightDType})
	if err != nil {
		return nil, err
	}
	defer m.Close()
	load := time.Since(start).Seconds()
	c := m.Config
	g := rng.New(1)
	randT := func(shape ...int) (*gpu.Tensor, error) {
		n := 1
		for _, d := range shape {
			n *= d
		}
		v := make([]float32, n)
		g.Randn(v)
		return rt.FromFloat32(v, shape...)
	}
	h, w := height/8, width/8
	x, err := randT(batch, c.InChannels, h, w)
	if err != nil {
		return nil, err
	}
	cond, err := randT(batch, tokens, c.ContextInDim)
	if err != nil {
		return nil, err
	}
	y, err := randT(batch, c.VecInDim)
	if err != nil {
		return nil, err
	}
	t, err := rt.FromFloat32([]float32{1}, 1)
	if err != nil {
		return nil, err
	}
	guidance, err := rt.FromFloat32([]float32{3.5}, 1)
	if err != nil {
		return nil, err
	}
	in := flux.Inputs{X: x, Timesteps: t, Context: cond, Y: y, Guidance: guidance}
	res := &benchResult{What: "flux", Checkpoint: path, Width: width, Height: height, Batch: batch, Threads: gpuThreads(),
		WeightDType: m.DoubleBlocks[0].ImgAttn.QKV.Weight.DType().String(), LoadS: load, ContextTokens: tokens}
	err = tm.run(res, func() error {
		out, err := m.Forward(ctx, rt, in)
		out.Release()
		if err != nil {
			return err
		}
		return rt.Backend().Synchronize() // a device queues work: time it done
	})
	if err != nil {
		return nil, err
	}
	p := c.PatchSize
	img := ((h + p - 1) / p) * ((w + p - 1) / p)
	res.setFLOPs(float64(batch) * m.FLOPs(img, tokens))
	return res, nil
}

// tiledDecodeFLOPs adds up the decoder operations of ComfyUI's tiled decode of an h×w
// latent with tl×tl tiles overlapping by ov cells: three passes, with (2·tl, tl/2),
// (tl/2, 2·tl) and (tl, tl) tiles, each tile placed as sd.VAE.DecodeTiled places it.
func tiledDecodeFLOPs(m *vae.Model, h, w, tl, ov int) float64 {
	starts := func(n, tile int) []int {
		if n <= tile || tile <= ov {
			return []int{0}
		}
		var s []int
		for p := 0; p < n-ov; p += tile - ov {
			s = append(s, p)
		}
		return s
	}
	f := 0.0
	for _, t := range [][2]int{{2 * tl, tl / 2}, {tl / 2, 2 * tl}, {tl, tl}} {
		if h <= t[0] && w <= t[1] {
			f += m.DecodeFLOPs(h, w)
			continue
		}
		for _, py := range starts(h, t[0]) {
			for _, px := range starts(w, t[1]) {
				y0, x0 := max(0, min(h-ov, py)), max(0, min(w-ov, px))
				f += m.DecodeFLOPs(min(t[0], h-y0), min(t[1], w-x0))
			}
		}
	}
	return f
}

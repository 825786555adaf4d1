package cudacheck

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/forgeflow/forgeflow/diffusion/clip"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/gpu/cuda"
	"github.com/forgeflow/forgeflow/weights/detect"
)

// minPSNR is the bar: GPU and CPU images of one seed within 40 dB (summation
// order differs, the noise does not).
const minPSNR = 40

// e2eCase is one image: a checkpoint (written by the test, or a full-size one named by
// an environment variable that `make test-cuda` sets), a size and a sampler setting.
type e2eCase struct {
	name          string
	family        detect.Family
	env           string // variable naming a full-size checkpoint; "" for the tiny one
	width, height int
	steps         int
}

var cases = []e2eCase{
	{"sd15-tiny", detect.FamilySD1, "", 32, 32, 4},
	{"sdxl-tiny", detect.FamilySDXL, "", 32, 32, 4},
	{"sd15-full", detect.FamilySD1, "FORGEFLOW_CUDA_SD15", 512, 512, 8},
	{"sdxl-full", detect.FamilySDXL, "FORGEFLOW_CUDA_SDXL", 512, 512, 4},
}

func cudaRuntime(t *testing.T) *gpu.Runtime {
	t.Helper()
	be, err := cuda.Open(cuda.Options{CacheDir: os.Getenv("FORGEFLOW_CUDA_CACHE")})
	if err != nil {
		if os.Getenv("FORGEFLOW_REQUIRE_CUDA") == "1" {
			t.Fatalf("no CUDA device: %v", err)
		}
		t.Skipf("no CUDA device: %v", err)
	}
	rt, err := gpu.New(gpu.Options{Backend: be, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

// vocab writes a small OpenAI-format merges file whose token ids fit every text model,
// tiny or full-size.
func vocab(t *testing.T) *clip.BPE {
	dir := t.TempDir()
	merges := "#version: 0.2\nc a\nca t</w>\np h\no t\no </w>\nph ot\nphot o</w>\n"
	if err := os.WriteFile(filepath.Join(dir, "bpe_simple_vocab_16e6.txt"), []byte(merges), 0o644); err != nil {
		t.Fatal(err)
	}
	bpe, err := clip.LoadBPE(dir)
	if err != nil {
		t.Fatal(err)
	}
	return bpe
}

// render encodes two prompts, samples with euler/normal/CFG 7 from seed 42 and decodes:
// the txt2img graph, all on rt.
func render(ctx context.Context, rt *gpu.Runtime, path string, bpe *clip.BPE, c e2eCase) (*sdImage, error) {
	ck, err := sd.LoadCheckpoint(rt, path, sd.LoadOptions{Vocab: bpe})
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	pos, err := sd.EncodePrompt(ctx, ck.CLIP, "cat photo")
	if err != nil {
		return nil, err
	}
	neg, err := sd.EncodePrompt(ctx, ck.CLIP, "photo")
	if err != nil {
		return nil, err
	}
	f := ck.VAE.Model.Downscale()
	z, err := rt.Zeros(gpu.F32, 1, ck.Model.Latent.Channels, c.height/f, c.width/f)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	out, err := sd.KSample(ctx, ck.Model, pos, neg, &sd.Latent{Samples: z}, sd.KSamplerParams{Seed: 42, Steps: c.steps, CFG: 7,
		Sampler: "euler", Scheduler: "normal", Denoise: 1, StartStep: -1, LastStep: -1}, nil)
	if err != nil {
		return nil, err
	}
	img, err := ck.VAE.Decode(ctx, out.Samples)
	if err != nil {
		return nil, err
	}
	return &sdImage{pix: img.Pix, seconds: time.Since(start).Seconds()}, nil
}

type sdImage struct {
	pix     []float32
	seconds float64
}

// psnr8 is the PSNR of two images in [0, 1] after rounding to 8 bits, as saved PNGs
// compare, and the largest difference in levels.
func psnr8(a, b []float32) (float64, int) {
	var se float64
	worst := 0
	for i := range a {
		x, y := math.Round(float64(a[i])*255), math.Round(float64(b[i])*255)
		d := x - y
		se += d * d
		worst = max(worst, int(math.Abs(d)))
	}
	if se == 0 {
		return math.Inf(1), 0
	}
	return 10 * math.Log10(255*255/(se/float64(len(a)))), worst
}

func TestGPUMatchesCPU(t *testing.T) {
	crt := cudaRuntime(t)
	prt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	bpe := vocab(t)
	ctx := context.Background()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := ""
			if c.env == "" {
				path = filepath.Join(t.TempDir(), c.name+".safetensors")
				f, err := os.Create(path)
				if err != nil {
					t.Fatal(err)
				}
				if err := sd.WriteRandomCheckpoint(f, sd.TinyRandomSpec(c.family)); err != nil {
					t.Fatal(err)
				}
				if err := f.Close(); err != nil {
					t.Fatal(err)
				}
			} else if path = os.Getenv(c.env); path == "" {
				t.Skipf("%s names no full-size checkpoint (make test-cuda writes one with forgeflow synth)", c.env)
			}
			gi, err := render(ctx, crt, path, bpe, c)
			if err != nil {
				t.Fatalf("cuda: %v", err)
			}
			ci, err := render(ctx, prt, path, bpe, c)
			if err != nil {
				t.Fatalf("cpu: %v", err)
			}
			if len(gi.pix) != len(ci.pix) || len(gi.pix) == 0 {
				t.Fatalf("images of %d and %d values", len(gi.pix), len(ci.pix))
			}
			for _, v := range gi.pix {
				if v != v {
					t.Fatal("NaN in the GPU image")
				}
			}
			db, worst := psnr8(gi.pix, ci.pix)
			t.Logf("%s %dx%d, %d steps: PSNR %.1f dB (max %d levels); gpu %.2f s, cpu %.2f s", c.name, c.width, c.height, c.steps, db, worst, gi.seconds, ci.seconds)
			report(t, map[string]any{"check": "e2e", "case": c.name, "width": c.width, "height": c.height, "steps": c.steps,
				"psnr_db": db, "max_levels": worst, "gpu_s": gi.seconds, "cpu_s": ci.seconds, "pass": db >= minPSNR})
			if db < minPSNR {
				t.Errorf("PSNR %.1f dB < %d dB", db, minPSNR)
			}
		})
	}
}

// report appends one JSON line to the file FORGEFLOW_CUDA_REPORT names, if any.
func report(t *testing.T, v map[string]any) {
	p := os.Getenv("FORGEFLOW_CUDA_REPORT")
	if p == "" {
		return
	}
	if math.IsInf(v["psnr_db"].(float64), 1) {
		v["psnr_db"] = "inf"
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintln(f, string(b))
}

// TestRenderHarness runs the tiny cases on two cpu runtimes (one and two threads: the
// same kernels, another work split), so that the harness itself is checked on machines
// without a GPU: loading, encoding, sampling, decoding and the PSNR.
func TestRenderHarness(t *testing.T) {
	bpe := vocab(t)
	ctx := context.Background()
	for _, c := range cases[:2] {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), c.name+".safetensors")
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := sd.WriteRandomCheckpoint(f, sd.TinyRandomSpec(c.family)); err != nil {
				t.Fatal(err)
			}
			f.Close()
			var imgs []*sdImage
			for _, th := range []int{1, 2} {
				rt, err := gpu.New(gpu.Options{Threads: th})
				if err != nil {
					t.Fatal(err)
				}
				img, err := render(ctx, rt, path, bpe, c)
				if err != nil {
					t.Fatal(err)
				}
				imgs = append(imgs, img)
			}
			if n := len(imgs[0].pix); n != 3*c.width*c.height {
				t.Fatalf("%d values for a %dx%d image", n, c.width, c.height)
			}
			if db, worst := psnr8(imgs[0].pix, imgs[1].pix); db < minPSNR {
				t.Errorf("one vs two threads: %.1f dB (max %d levels)", db, worst)
			}
			if db, _ := psnr8(imgs[0].pix, make([]float32, len(imgs[0].pix))); db > 30 {
				t.Errorf("the image is close to black (%.1f dB from zeros): nothing was rendered", db)
			}
		})
	}
}

package sd

import (
	"context"
	"math"
	"os"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// The reference runs used these golden fixtures (the public unet sd15_tiny and clip
// clip_sd15_tiny), found by their files' sha256 whatever they are called.
const (
	comfyRefUNetSHA = "c8f1088b7a93998072cf7a4d55470e5289870ce4f590fd6f68e0c06a0f37445c"
	comfyRefCLIPSHA = "8215bf0e2d8d96239d6eb3560fb0c64153569902f8eb2cde1521dab890d9c890"
)

// comfyRefTiny returns the pipeline of the reference runs' fixtures; a golden set
// without them skips the test (its values were computed from those weights).
func comfyRefTiny(t *testing.T) *tiny {
	t.Helper()
	fx := testenv.SD1{VocabDir: testenv.GoldenVocabDir(t)}
	for _, u := range testenv.GoldenUNets(t) {
		if u.SHA256 == comfyRefUNetSHA {
			fx.UNet = u
		}
	}
	for _, c := range testenv.GoldenCLIPs(t) {
		if c.SHA256 == comfyRefCLIPSHA {
			fx.CLIP = c
		}
	}
	if fx.UNet.File == "" || fx.CLIP.File == "" {
		t.Skipf("the golden set lacks the fixtures the ComfyUI reference values were computed from (unet sha256 %s, clip sha256 %s)", comfyRefUNetSHA, comfyRefCLIPSHA)
	}
	return tinyOf(t, fx)
}

// comfyDigest holds, per case of TestAgainstComfyUIRun, values of ComfyUI 0.3.64's own
// result (refpeer kit, CPU, torch 2.6): the mean |value| and five elements by index.
var comfyDigest = map[string]struct {
	meanAbs float64
	at      map[int]float64
}{
	"plain": {70.27486138860695, map[int]float64{0: 166.38653564453125, 37: -43.77687072753906, 101: 33.02149200439453, 200: 55.977779388427734, 255: 30.33160972595215}},
	"areas": {14.869824032830365, map[int]float64{0: -17.01654815673828, 37: -20.472814559936523, 101: -3.7750680446624756, 200: -46.04570770263672, 511: 18.01313018798828}},
	"mask":  {47.692922196991276, map[int]float64{0: 0, 37: 26.5727481842041, 101: -317.48773193359375, 200: -2.9554386138916016, 255: 180.74700927734375}},
	"cfgpp": {74.2800736965728, map[int]float64{0: 2.6156394481658936, 37: -11.732908248901367, 101: 218.3105010986328, 200: 48.24132537841797, 255: 85.86432647705078}},
	"adv1":  {100.72631219460163, map[int]float64{0: -74.12288665771484, 37: -133.03970336914062, 101: -95.10232543945312, 200: -77.96437072753906, 255: 91.71784210205078}},
}

// TestAgainstComfyUIRun compares whole KSampler runs with ComfyUI's comfy.sample.sample
// on the same tiny UNet (golden/unet sd15_tiny) and conditioning (golden/clip's encoded
// prompts): plain CFG; two latents at denoise 0.7 with an area entry, a 154-token entry
// limited to the second half (padded to one batch by repetition); an inpaint mask;
// euler_cfg_pp at cfg 1; a dpmpp_sde run stopped at step 3 with its leftover noise. Each
// result is checked against comfyDigest, and element by element against the whole
// reference when FORGEFLOW_SDSAMPLE_REF names the safetensors file the refpeer script
// wrote (each final latent under its case name).
func TestAgainstComfyUIRun(t *testing.T) {
	var rf *safetensors.File
	if ref := os.Getenv("FORGEFLOW_SDSAMPLE_REF"); ref != "" {
		var err error
		if rf, err = safetensors.Open(ref); err != nil {
			t.Fatal(err)
		}
		defer rf.Close()
	}
	tn := comfyRefTiny(t)
	cf, err := safetensors.Open(tn.fx.CLIP.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer cf.Close()
	width := tn.fx.CLIP.Hidden
	cond := func(name string, mod func(*Cond)) Cond {
		tt, err := cf.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		v, err := tt.Float32()
		if err != nil {
			t.Fatal(err)
		}
		c := NewCond(tensorOf(t, tn.rt, v, 1, len(v)/width, width), nil)
		if mod != nil {
			mod(&c)
		}
		return c
	}
	simple, weighted := cond("out.simple.cond", nil), cond("out.weighted.cond", nil)
	area := cond("out.weighted.cond", func(c *Cond) { c.Area, c.Strength = &Area{Height: 4, Width: 4, Y: 0, X: 4}, 0.8 })
	late := cond("out.long.cond", func(c *Cond) { c.StartPercent, c.EndPercent = 0.5, 1 })
	half := make([]float32, 64*64)
	for y := 0; y < 64; y++ {
		for x := 32; x < 64; x++ {
			half[y*64+x] = 1
		}
	}
	cases := []struct {
		name     string
		pos, neg Conditioning
		latent   *Latent
		p        KSamplerParams
	}{
		{"plain", Conditioning{simple}, Conditioning{weighted}, tn.latent(t, nil, 1, 4, 8, 8),
			KSamplerParams{Seed: 42, Steps: 4, CFG: 6.5, Sampler: "euler", Scheduler: "normal", Denoise: 1, StartStep: -1, LastStep: -1}},
		{"areas", Conditioning{simple, area, late}, Conditioning{weighted}, tn.latent(t, ramp(2*4*8*8), 2, 4, 8, 8),
			KSamplerParams{Seed: 7, Steps: 5, CFG: 5, Sampler: "dpmpp_2m", Scheduler: "karras", Denoise: 0.7, StartStep: -1, LastStep: -1}},
		{"mask", Conditioning{simple}, Conditioning{weighted}, func() *Latent {
			l := tn.latent(t, ramp(4*8*8), 1, 4, 8, 8)
			l.NoiseMask = tensorOf(t, tn.rt, half, 1, 1, 64, 64)
			return l
		}(), KSamplerParams{Seed: 9, Steps: 4, CFG: 5, Sampler: "euler_ancestral", Scheduler: "normal", Denoise: 1, StartStep: -1, LastStep: -1}},
		{"cfgpp", Conditioning{simple}, Conditioning{weighted}, tn.latent(t, nil, 1, 4, 8, 8),
			KSamplerParams{Seed: 3, Steps: 3, CFG: 1, Sampler: "euler_cfg_pp", Scheduler: "simple", Denoise: 1, StartStep: -1, LastStep: -1}},
		{"adv1", Conditioning{simple}, Conditioning{weighted}, tn.latent(t, nil, 1, 4, 8, 8),
			KSamplerParams{Seed: 11, Steps: 6, CFG: 4, Sampler: "dpmpp_sde", Scheduler: "karras", Denoise: 1, StartStep: 0, LastStep: 3}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := KSample(context.Background(), tn.model, c.pos, c.neg, c.latent, c.p, nil)
			if err != nil {
				t.Fatal(err)
			}
			got := values(t, out)
			d := comfyDigest[c.name]
			mean := 0.0
			for _, v := range got {
				mean += math.Abs(float64(v))
			}
			mean /= float64(len(got))
			if math.Abs(mean-d.meanAbs) > 1e-5*d.meanAbs {
				t.Errorf("mean |value| %v, ComfyUI %v", mean, d.meanAbs)
			}
			// float32 sums drift by a few 1e-6 of the value range; the range is about 4×
			// the mean |value| here.
			for i, w := range d.at {
				if i >= len(got) || math.Abs(float64(got[i])-w) > 4e-5*d.meanAbs {
					t.Errorf("value %d differs from ComfyUI's %v", i, w)
				}
			}
			if rf == nil {
				return
			}
			wt, err := rf.Tensor(c.name)
			if err != nil {
				t.Fatal(err)
			}
			want, err := wt.Float32()
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("%d values, want %d", len(got), len(want))
			}
			worst, scale := 0.0, 0.0
			for i := range want {
				worst = max(worst, math.Abs(float64(got[i]-want[i])))
				scale = max(scale, math.Abs(float64(want[i])))
			}
			t.Logf("max |diff| %.3g (max |value| %.3g)", worst, scale)
			if worst > 2e-5*scale {
				t.Fatalf("differs from ComfyUI by %g (values up to %g)", worst, scale)
			}
		})
	}
}

// TestGuidersAgainstComfyUI: SamplerCustomAdvanced-style runs with ComfyUI's
// Guider_DualCFG (regular and nested: cond1 "simple", cond2 the 154-token "long" prompt,
// negative "weighted", cfg 3 and 2) and Guider_Basic with euler_cfg_pp (whose uncond
// prediction is ComfyUI's zero tensor), euler/normal 4 steps, seed 5 on an empty latent;
// reference values from ComfyUI 0.3.64 (refpeer kit).
func TestGuidersAgainstComfyUI(t *testing.T) {
	tn := comfyRefTiny(t)
	cf, err := safetensors.Open(tn.fx.CLIP.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer cf.Close()
	width := tn.fx.CLIP.Hidden
	cond := func(name string) Conditioning {
		tt, err := cf.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		v, err := tt.Float32()
		if err != nil {
			t.Fatal(err)
		}
		return Conditioning{NewCond(tensorOf(t, tn.rt, v, 1, len(v)/width, width), nil)}
	}
	simple, weighted, long := cond("out.simple.cond"), cond("out.weighted.cond"), cond("out.long.cond")
	sched, err := sampling.LookupScheduler("normal")
	if err != nil {
		t.Fatal(err)
	}
	sigmas := sched(tn.model.Sampling, 4)
	cases := []struct {
		name    string
		g       *Guider
		sampler string
		meanAbs float64
		at      map[int]float64
	}{
		{"dual_regular", NewDualCFGGuider(tn.model, simple, long, weighted, 3, 2, false), "euler",
			72.73172806878574, map[int]float64{0: 146.1073455810547, 37: 21.807762145996094, 101: -96.4732437133789, 200: 199.813232421875, 255: 54.69993591308594}},
		{"dual_nested", NewDualCFGGuider(tn.model, simple, long, weighted, 3, 2, true), "euler",
			78.96140850428492, map[int]float64{0: 140.97259521484375, 37: 60.78859329223633, 101: -116.24698638916016, 200: 226.00624084472656, 255: 26.1046142578125}},
		{"basic_cfgpp", NewBasicGuider(tn.model, simple), "euler_cfg_pp",
			118.08929132367484, map[int]float64{0: 240.65318298339844, 37: 13.750222206115723, 101: -151.65032958984375, 200: 310.1671447753906, 255: 105.62769317626953}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, _, err := CustomSample(context.Background(), Noise{Seed: 5}, c.g, smp(t, c.sampler), sigmas, tn.latent(t, nil, 1, 4, 8, 8), nil)
			if err != nil {
				t.Fatal(err)
			}
			got := values(t, out)
			mean := 0.0
			for _, v := range got {
				mean += math.Abs(float64(v))
			}
			mean /= float64(len(got))
			if math.Abs(mean-c.meanAbs) > 1e-5*c.meanAbs {
				t.Errorf("mean |value| %v, ComfyUI %v", mean, c.meanAbs)
			}
			for i, w := range c.at {
				if math.Abs(float64(got[i])-w) > 4e-5*c.meanAbs {
					t.Errorf("value %d = %v, ComfyUI %v", i, got[i], w)
				}
			}
		})
	}
}

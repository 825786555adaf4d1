package sd

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/clip"
	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// tiny is the golden SD1.x-shaped test pipeline (testenv.GoldenSD1): a UNet case without
// ADM input and the CLIP case whose width is its context, with the real tokenizer
// vocabulary.
type tiny struct {
	rt    *gpu.Runtime
	fx    testenv.SD1
	model *Model
	clip  *CLIP
	// calls records the batch size of every UNet evaluation.
	mu    sync.Mutex
	calls []int
}

// tinies caches the loaded pipelines by their UNet and CLIP files' sha256.
var tinies = struct {
	sync.Mutex
	m map[[2]string]*tiny
}{m: map[[2]string]*tiny{}}

// loadTiny returns the golden set's SD1.x pipeline (testenv.GoldenSD1).
func loadTiny(t *testing.T) *tiny { return tinyOf(t, testenv.GoldenSD1(t)) }

// tinyOf loads (once) the pipeline fx describes and clears its call record.
func tinyOf(t *testing.T, fx testenv.SD1) *tiny {
	t.Helper()
	key := [2]string{fx.UNet.SHA256, fx.CLIP.SHA256}
	tinies.Lock()
	tn, ok := tinies.m[key]
	if !ok {
		var err error
		if tn, err = buildTiny(fx); err != nil {
			tinies.Unlock()
			t.Fatal(err)
		}
		tinies.m[key] = tn
	}
	tinies.Unlock()
	tn.mu.Lock()
	tn.calls = nil
	tn.mu.Unlock()
	return tn
}

// buildTiny loads the pipeline fx describes.
func buildTiny(fx testenv.SD1) (*tiny, error) {
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		return nil, err
	}
	uf, err := tensorfile.Open(fx.UNet.Path())
	if err != nil {
		return nil, err
	}
	heads := unet.Heads{Count: fx.UNet.Heads}
	if fx.UNet.HeadDim > 0 {
		heads = unet.Heads{Dim: fx.UNet.HeadDim}
	}
	u, err := unet.Load(rt, statedict.NewFileSource(rt, uf), fx.UNet.Prefix, heads)
	if err != nil {
		return nil, err
	}
	ms, err := sampling.New(sampling.Config(fx.UNet.Sampling))
	if err != nil {
		return nil, fx.UNet.FieldError("config.wrapper", "%v", err)
	}
	cf, err := tensorfile.Open(fx.CLIP.Path())
	if err != nil {
		return nil, err
	}
	tm := &clip.TextModel{Heads: fx.CLIP.Heads, Activation: fx.CLIP.Activation, EOS: fx.CLIP.EOS}
	if _, err := statedict.Bind(rt, statedict.NewFileSource(rt, cf), fx.CLIP.Prefix, tm); err != nil {
		return nil, err
	}
	bpe, err := clip.LoadBPE(fx.VocabDir)
	if err != nil {
		return nil, err
	}
	enc := &TextEncoder{Name: "l", Tokenizer: clip.NewSD1Tokenizer(bpe, nil),
		Encoder: &clip.Encoder{Model: tm, NormHidden: true, Start: fx.CLIP.Start, End: fx.CLIP.End, Pad: fx.CLIP.Pad}}
	return &tiny{
		rt:    rt,
		fx:    fx,
		model: &Model{Runtime: rt, UNet: u, Sampling: ms, Latent: SD15Latent, Name: fx.UNet.Name},
		clip:  &CLIP{Runtime: rt, Encoders: []*TextEncoder{enc}, Name: fx.CLIP.Name},
	}, nil
}

// guider returns g with the UNet call wrapped to record batch sizes.
func (tn *tiny) watch(g *Guider) *Guider {
	g.forward = func(ctx context.Context, in NetInputs) (*gpu.Tensor, error) {
		tn.mu.Lock()
		tn.calls = append(tn.calls, in.X.Dim(0))
		tn.mu.Unlock()
		return tn.model.network().Forward(ctx, tn.rt, in)
	}
	return g
}

func (tn *tiny) encode(t *testing.T, text string) Conditioning {
	t.Helper()
	c, err := EncodePrompt(context.Background(), tn.clip, text)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (tn *tiny) latent(t *testing.T, data []float32, shape ...int) *Latent {
	t.Helper()
	if data == nil {
		data = make([]float32, numel(shape))
	}
	s, err := tn.rt.FromFloat32(data, shape...)
	if err != nil {
		t.Fatal(err)
	}
	return &Latent{Samples: s}
}

func values(t *testing.T, l *Latent) []float32 {
	t.Helper()
	v, err := l.Samples.Float32()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func checkFinite(t *testing.T, v []float32) {
	t.Helper()
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			t.Fatalf("value %d is %v", i, x)
		}
	}
}

func maxDiff(a, b []float32) float64 {
	d := 0.0
	for i := range a {
		d = max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

// ramp is a deterministic non-zero latent (an "encoded image").
func ramp(n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(math.Sin(float64(i)*0.37)) * 3
	}
	return v
}

// TestKSampleCFGOneBatch: KSampler with cfg evaluates cond and uncond in one UNet batch
// per step, is deterministic for a seed and differs between seeds.
func TestKSampleCFGOneBatch(t *testing.T) {
	tn := loadTiny(t)
	pos, neg := tn.encode(t, "a photo of a cat"), tn.encode(t, "blurry")
	run := func(seed uint64) []float32 {
		tn.calls = nil
		lat := tn.latent(t, nil, 2, 4, 8, 8)
		p := KSamplerParams{Seed: seed, Steps: 4, CFG: 7.5, Sampler: "euler", Scheduler: "normal", Denoise: 1, StartStep: -1, LastStep: -1}
		out, err := ksampleWatched(context.Background(), tn, pos, neg, lat, p, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := out.Samples.Shape(); len(got) != 4 || got[0] != 2 || got[1] != 4 || got[2] != 8 || got[3] != 8 {
			t.Fatalf("shape %v", got)
		}
		return values(t, out)
	}
	a := run(42)
	if len(tn.calls) != 4 {
		t.Fatalf("%d UNet calls for 4 euler steps, want 4: %v", len(tn.calls), tn.calls)
	}
	for _, b := range tn.calls {
		if b != 4 { // 2 latents × (cond, uncond)
			t.Fatalf("UNet batch %d, want 4 (cond and uncond together): %v", b, tn.calls)
		}
	}
	checkFinite(t, a)
	if d := maxDiff(a, run(42)); d != 0 {
		t.Fatalf("same seed differs by %g", d)
	}
	if d := maxDiff(a, run(43)); d < 1e-3 {
		t.Fatalf("different seeds agree within %g", d)
	}
}

// ksampleWatched is KSample with the guider's UNet calls recorded.
func ksampleWatched(ctx context.Context, tn *tiny, pos, neg Conditioning, lat *Latent, p KSamplerParams, step StepFunc) (*Latent, error) {
	data, shape, err := LatentData(lat)
	if err != nil {
		return nil, err
	}
	noise, err := Noise{Seed: p.Seed, Disabled: p.DisableNoise}.Generate(shape[:], lat.BatchIndex)
	if err != nil {
		return nil, err
	}
	sigmas, err := sampling.KSamplerSigmas(tn.model.Sampling, p.Scheduler, p.Sampler, p.Steps, p.Denoise)
	if err != nil {
		return nil, err
	}
	if p.LastStep >= 0 && p.LastStep < len(sigmas)-1 {
		sigmas = append([]float32(nil), sigmas[:p.LastStep+1]...)
		if p.ForceFullDenoise {
			sigmas[len(sigmas)-1] = 0
		}
	}
	if p.StartStep >= 0 {
		sigmas = sigmas[p.StartStep:]
	}
	sampler, err := sampling.LookupSampler(p.Sampler)
	if err != nil {
		return nil, err
	}
	g := tn.watch(NewCFGGuider(tn.model, pos, neg, p.CFG))
	res, err := g.Sample(ctx, sampler, sigmas, noise, data, shape, lat.NoiseMask, p.Seed, step)
	if err != nil {
		return nil, err
	}
	return latentLike(tn.rt, lat, res.Samples, shape)
}

// TestKSampleMatchesWatched: the public KSample gives exactly what the recorded path
// gives (so the call counts above are about the real entry point).
func TestKSampleMatchesWatched(t *testing.T) {
	tn := loadTiny(t)
	pos, neg := tn.encode(t, "a cat"), tn.encode(t, "a dog")
	lat := tn.latent(t, ramp(1*4*8*8), 1, 4, 8, 8)
	p := KSamplerParams{Seed: 7, Steps: 3, CFG: 5, Sampler: "dpmpp_2m", Scheduler: "karras", Denoise: 0.6, StartStep: -1, LastStep: -1}
	a, err := KSample(context.Background(), tn.model, pos, neg, lat, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ksampleWatched(context.Background(), tn, pos, neg, lat, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := maxDiff(values(t, a), values(t, b)); d != 0 {
		t.Fatalf("differs by %g", d)
	}
	// denoise 0.6 keeps the input's structure: closer to it than a full denoise.
	full := p
	full.Denoise = 1
	c, err := KSample(context.Background(), tn.model, pos, neg, lat, full, nil)
	if err != nil {
		t.Fatal(err)
	}
	in := ramp(4 * 8 * 8)
	if maxDiff(values(t, a), in) >= maxDiff(values(t, c), in) {
		t.Fatalf("denoise 0.6 moved the latent as far as denoise 1")
	}
}

// TestCFGOneSkipsUncond: at cfg 1 only the positive is evaluated, except for the
// *_cfg_pp samplers, which need the unconditional prediction.
func TestCFGOneSkipsUncond(t *testing.T) {
	tn := loadTiny(t)
	pos, neg := tn.encode(t, "a cat"), tn.encode(t, "a dog")
	for _, c := range []struct {
		sampler string
		batch   int
	}{{"euler", 1}, {"euler_cfg_pp", 2}} {
		tn.calls = nil
		p := KSamplerParams{Seed: 1, Steps: 2, CFG: 1, Sampler: c.sampler, Scheduler: "normal", Denoise: 1, StartStep: -1, LastStep: -1}
		if _, err := ksampleWatched(context.Background(), tn, pos, neg, tn.latent(t, nil, 1, 4, 8, 8), p, nil); err != nil {
			t.Fatal(err)
		}
		for _, b := range tn.calls {
			if b != c.batch {
				t.Fatalf("%s: UNet batches %v, want %d each", c.sampler, tn.calls, c.batch)
			}
		}
	}
}

// TestAreaAndTimestepRange: an area entry runs as its own batch (with the negative's
// same-area counterpart), and an entry limited to the second half of the run joins only
// once sigma has fallen far enough.
func TestAreaAndTimestepRange(t *testing.T) {
	tn := loadTiny(t)
	pos := tn.encode(t, "a cat")
	area := tn.encode(t, "a red hat")
	area[0].Area = &Area{Height: 4, Width: 4, Y: 0, X: 4}
	area[0].Strength = 0.8
	late := tn.encode(t, "sharp details")
	late[0].StartPercent, late[0].EndPercent = 0.5, 1
	positive := append(append(append(Conditioning{}, pos...), area...), late...)
	neg := tn.encode(t, "blurry")
	p := KSamplerParams{Seed: 3, Steps: 4, CFG: 6, Sampler: "euler", Scheduler: "normal", Denoise: 1, StartStep: -1, LastStep: -1}
	out, err := ksampleWatched(context.Background(), tn, positive, neg, tn.latent(t, nil, 1, 4, 8, 8), p, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkFinite(t, values(t, out))
	sigmas, _ := sampling.KSamplerSigmas(tn.model.Sampling, "normal", "euler", 4, 1)
	half := tn.model.Sampling.PercentToSigma(0.5)
	var want []int
	for _, s := range sigmas[:4] {
		full := 2 // pos + neg
		if float64(s) <= half {
			full = 3 // + the late entry
		}
		want = append(want, full, 2) // full-size batch, then area + its negative twin
	}
	if len(tn.calls) != len(want) {
		t.Fatalf("UNet batches %v, want %v", tn.calls, want)
	}
	for i := range want {
		if tn.calls[i] != want[i] {
			t.Fatalf("UNet batches %v, want %v", tn.calls, want)
		}
	}
	// Without the area and late entries the result differs.
	plain, err := ksampleWatched(context.Background(), tn, pos, neg, tn.latent(t, nil, 1, 4, 8, 8), p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if maxDiff(values(t, plain), values(t, out)) < 1e-4 {
		t.Fatal("area and timestep entries changed nothing")
	}
}

// TestAdvancedSplitEqualsOnePass: KSamplerAdvanced steps 0-3 with leftover noise then
// 3-end without new noise gives what one 6-step run gives (euler is deterministic).
func TestAdvancedSplitEqualsOnePass(t *testing.T) {
	tn := loadTiny(t)
	pos, neg := tn.encode(t, "a cat"), tn.encode(t, "a dog")
	lat := tn.latent(t, nil, 1, 4, 8, 8)
	base := KSamplerParams{Seed: 11, Steps: 6, CFG: 4, Sampler: "euler", Scheduler: "karras", Denoise: 1}
	one := base
	one.StartStep, one.LastStep = 0, 10000
	whole, err := KSample(context.Background(), tn.model, pos, neg, lat, one, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := base
	first.StartStep, first.LastStep = 0, 3
	mid, err := KSample(context.Background(), tn.model, pos, neg, lat, first, nil)
	if err != nil {
		t.Fatal(err)
	}
	second := base
	second.StartStep, second.LastStep, second.DisableNoise, second.ForceFullDenoise = 3, 10000, true, true
	end, err := KSample(context.Background(), tn.model, pos, neg, mid, second, nil)
	if err != nil {
		t.Fatal(err)
	}
	w, e := values(t, whole), values(t, end)
	if d := maxDiff(w, e); d > 1e-4 {
		t.Fatalf("two passes differ from one by %g", d)
	}
	// The first pass alone still holds noise: it is far from the final latent.
	if d := maxDiff(values(t, mid), w); d < 1e-2 {
		t.Fatalf("leftover-noise latent is already final (diff %g)", d)
	}
	// force_full_denoise on the first pass ends at sigma 0: a different latent.
	forced := first
	forced.ForceFullDenoise = true
	f, err := KSample(context.Background(), tn.model, pos, neg, lat, forced, nil)
	if err != nil {
		t.Fatal(err)
	}
	if maxDiff(values(t, f), values(t, mid)) < 1e-3 {
		t.Fatal("force_full_denoise changed nothing")
	}
	// start_at_step past the end returns the latent unchanged.
	past := base
	past.StartStep, past.LastStep = 6, 10000
	same, err := KSample(context.Background(), tn.model, pos, neg, mid, past, nil)
	if err != nil {
		t.Fatal(err)
	}
	if maxDiff(values(t, same), values(t, mid)) != 0 {
		t.Fatal("start_at_step beyond the schedule changed the latent")
	}
}

// TestCustomSampleAndGuiders: SamplerCustomAdvanced with a CFG guider equals KSampler;
// DualCFG with cfg_cond2_negative 1 reduces to CFG between cond1 and cond2; BasicGuider
// evaluates the positive alone.
func TestCustomSampleAndGuiders(t *testing.T) {
	tn := loadTiny(t)
	pos, neg := tn.encode(t, "a cat"), tn.encode(t, "a dog")
	lat := tn.latent(t, nil, 1, 4, 8, 8)
	sigmas, err := sampling.KSamplerSigmas(tn.model.Sampling, "normal", "euler_ancestral", 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	var steps []int
	out, den, err := CustomSample(context.Background(), Noise{Seed: 5}, NewCFGGuider(tn.model, pos, neg, 6), smp(t, "euler_ancestral"), sigmas, lat,
		func(step, total int, x0 []float32, _ [4]int) { steps = append(steps, step, total) })
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 6 || steps[0] != 0 || steps[1] != 3 || steps[4] != 2 {
		t.Fatalf("callbacks %v", steps)
	}
	ks, err := KSample(context.Background(), tn.model, pos, neg, lat, KSamplerParams{Seed: 5, Steps: 3, CFG: 6,
		Sampler: "euler_ancestral", Scheduler: "normal", Denoise: 1, StartStep: -1, LastStep: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := maxDiff(values(t, out), values(t, ks)); d != 0 {
		t.Fatalf("SamplerCustomAdvanced differs from KSampler by %g", d)
	}
	// At the last step (sigma → 0) the denoised estimate is the output.
	if d := maxDiff(values(t, den), values(t, out)); d > 1e-5 {
		t.Fatalf("denoised_output differs from output by %g at sigma 0", d)
	}

	dual := NewDualCFGGuider(tn.model, pos, neg, tn.encode(t, "ignored"), 6, 1, false)
	tn.calls = nil
	d1, _, err := CustomSample(context.Background(), Noise{Seed: 5}, tn.watch(dual), smp(t, "euler_ancestral"), sigmas, lat, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := maxDiff(values(t, d1), values(t, out)); d > 1e-5 {
		t.Fatalf("DualCFG(cfg2=1) differs from CFG by %g", d)
	}
	for _, b := range tn.calls {
		if b != 2 {
			t.Fatalf("DualCFG with cfg2 1 ran batches %v, want 2 (negative skipped)", tn.calls)
		}
	}
	tn.calls = nil
	if _, _, err := CustomSample(context.Background(), Noise{Seed: 5}, tn.watch(NewDualCFGGuider(tn.model, pos, neg, neg, 6, 3, true)), smp(t, "euler"), sigmas, lat, nil); err != nil {
		t.Fatal(err)
	}
	for _, b := range tn.calls {
		if b != 3 {
			t.Fatalf("nested DualCFG ran batches %v, want 3", tn.calls)
		}
	}

	tn.calls = nil
	basic, _, err := CustomSample(context.Background(), Noise{Seed: 5}, tn.watch(NewBasicGuider(tn.model, pos)), smp(t, "euler_ancestral"), sigmas, lat, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg1, _, err := CustomSample(context.Background(), Noise{Seed: 5}, NewCFGGuider(tn.model, pos, neg, 1), smp(t, "euler_ancestral"), sigmas, lat, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := maxDiff(values(t, basic), values(t, cfg1)); d != 0 {
		t.Fatalf("BasicGuider differs from CFG 1 by %g", d)
	}
	for _, b := range tn.calls {
		if b != 1 {
			t.Fatalf("BasicGuider batches %v, want 1", tn.calls)
		}
	}
	// DisableNoise on an empty latent: nothing to denoise from, but still a valid run.
	z, _, err := CustomSample(context.Background(), Noise{Disabled: true}, NewBasicGuider(tn.model, pos), smp(t, "euler"), sigmas, lat, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkFinite(t, values(t, z))
}

// TestNoiseMask: a zero noise mask keeps the latent; a full one samples as without mask.
func TestNoiseMask(t *testing.T) {
	tn := loadTiny(t)
	pos, neg := tn.encode(t, "a cat"), tn.encode(t, "a dog")
	in := ramp(4 * 8 * 8)
	p := KSamplerParams{Seed: 9, Steps: 3, CFG: 5, Sampler: "euler", Scheduler: "normal", Denoise: 1, StartStep: -1, LastStep: -1}
	free, err := KSample(context.Background(), tn.model, pos, neg, tn.latent(t, in, 1, 4, 8, 8), p, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		fill float32
		want []float32
	}{{0, in}, {1, values(t, free)}} {
		lat := tn.latent(t, in, 1, 4, 8, 8)
		m := make([]float32, 64*64) // pixel-sized mask, resized to the latent
		for i := range m {
			m[i] = c.fill
		}
		var err error
		if lat.NoiseMask, err = tn.rt.FromFloat32(m, 1, 1, 64, 64); err != nil {
			t.Fatal(err)
		}
		out, err := KSample(context.Background(), tn.model, pos, neg, lat, p, nil)
		if err != nil {
			t.Fatal(err)
		}
		if d := maxDiff(values(t, out), c.want); d > 1e-5 {
			t.Fatalf("mask %v: differs by %g", c.fill, d)
		}
		if out.NoiseMask != lat.NoiseMask {
			t.Fatal("noise_mask not carried to the output")
		}
	}
}

// TestInpaintFreshNoise: a sampler marked InpaintFreshNoise (ddim, which is euler)
// samples an unmasked latent exactly as euler does, and with a half mask re-noises the
// kept half with other noise, so only the result with the mask differs.
func TestInpaintFreshNoise(t *testing.T) {
	tn := loadTiny(t)
	pos, neg := tn.encode(t, "a cat"), tn.encode(t, "a dog")
	in := ramp(4 * 8 * 8)
	half := make([]float32, 64*64)
	for i := range half[:len(half)/2] {
		half[i] = 1
	}
	mask, err := tn.rt.FromFloat32(half, 1, 1, 64, 64)
	if err != nil {
		t.Fatal(err)
	}
	run := func(sampler string, masked bool) []float32 {
		lat := tn.latent(t, in, 1, 4, 8, 8)
		if masked {
			lat.NoiseMask = mask
		}
		p := KSamplerParams{Seed: 9, Steps: 3, CFG: 5, Sampler: sampler, Scheduler: "normal", Denoise: 1, StartStep: -1, LastStep: -1}
		out, err := KSample(context.Background(), tn.model, pos, neg, lat, p, nil)
		if err != nil {
			t.Fatal(err)
		}
		return values(t, out)
	}
	if d := maxDiff(run("ddim", false), run("euler", false)); d != 0 {
		t.Errorf("without a mask ddim differs from euler by %g", d)
	}
	if d := maxDiff(run("ddim", true), run("euler", true)); d == 0 {
		t.Error("with a mask ddim re-noises like euler (same noise)")
	}
}

// TestSampleCancel: a cancelled context stops sampling with ctx.Err().
func TestSampleCancel(t *testing.T) {
	tn := loadTiny(t)
	pos, neg := tn.encode(t, "a cat"), tn.encode(t, "a dog")
	ctx, cancel := context.WithCancel(context.Background())
	steps := 0
	p := KSamplerParams{Seed: 1, Steps: 20, CFG: 5, Sampler: "euler", Scheduler: "normal", Denoise: 1, StartStep: -1, LastStep: -1}
	_, err := KSample(ctx, tn.model, pos, neg, tn.latent(t, nil, 1, 4, 8, 8), p, func(step, total int, _ []float32, _ [4]int) {
		steps++
		if step == 1 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if steps > 3 {
		t.Fatalf("%d steps ran after cancel", steps)
	}
}

// TestBatchIndexNoise: a sub-batch carrying batch_index gets the noise of those items of
// the full batch, so LatentFromBatch reproduces one image of a batch.
func TestBatchIndexNoise(t *testing.T) {
	tn := loadTiny(t)
	pos, neg := tn.encode(t, "a cat"), tn.encode(t, "a dog")
	p := KSamplerParams{Seed: 21, Steps: 2, CFG: 3, Sampler: "euler", Scheduler: "normal", Denoise: 1, StartStep: -1, LastStep: -1}
	all, err := KSample(context.Background(), tn.model, pos, neg, tn.latent(t, nil, 3, 4, 8, 8), p, nil)
	if err != nil {
		t.Fatal(err)
	}
	one := tn.latent(t, nil, 1, 4, 8, 8)
	one.BatchIndex = []int{2}
	sub, err := KSample(context.Background(), tn.model, pos, neg, one, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The noise is the same bit for bit; the UNet's float sums may differ by batch size.
	full, err := Noise{Seed: 21}.Generate([]int{3, 4, 8, 8}, nil)
	if err != nil {
		t.Fatal(err)
	}
	part, err := Noise{Seed: 21}.Generate([]int{1, 4, 8, 8}, []int{2})
	if err != nil {
		t.Fatal(err)
	}
	if d := maxDiff(part, full[2*256:]); d != 0 {
		t.Fatalf("batch_index noise differs by %g", d)
	}
	if d := maxDiff(values(t, sub), values(t, all)[2*256:]); d > 2e-3 {
		t.Fatalf("batch item 2 differs by %g", d)
	}
	if d := maxDiff(values(t, sub), values(t, all)[:256]); d < 0.1 {
		t.Fatalf("batch item 2 looks like item 0 (diff %g)", d)
	}
}

// TestGuiderErrors: bad conditioning is an error, not a panic.
func TestGuiderErrors(t *testing.T) {
	tn := loadTiny(t)
	pos := tn.encode(t, "a cat")
	lat := tn.latent(t, nil, 1, 4, 8, 8)
	sig := []float32{1, 0}
	cases := map[string]Conditioning{
		"no embedding": {NewCond(nil, nil)},
		"unset cond":   {{Embedding: pos[0].Embedding}},
		"area outside": {func() Cond { c := pos[0]; c.Area = &Area{Height: 2, Width: 2, Y: 20, X: 0}; return c }()},
	}
	for name, c := range cases {
		if _, _, err := CustomSample(context.Background(), Noise{Seed: 1}, NewBasicGuider(tn.model, c), smp(t, "euler"), sig, lat, nil); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, _, err := CustomSample(context.Background(), Noise{Seed: 1}, NewBasicGuider(tn.model, pos), sampling.Sampler{Name: "nope"}, sig, lat, nil); err == nil {
		t.Error("a sampler without a function: no error")
	}
	if _, _, err := CustomSample(context.Background(), Noise{Seed: 1}, NewBasicGuider(tn.model, pos), smp(t, "euler"), sig, tn.latent(t, ramp(3*64), 1, 3, 8, 8), nil); err == nil {
		t.Error("3-channel non-empty latent: no error")
	}
}

// smp returns the named sampler's descriptor.
func smp(t testing.TB, name string) sampling.Sampler {
	t.Helper()
	s, err := sampling.LookupSampler(name)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

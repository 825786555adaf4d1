package builtin

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"sync"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/clip"
	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/nodes"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// The tiny SD1.x-shaped pipeline of the golden fixtures (testenv.GoldenSD1): a UNet case
// without ADM input and the CLIP case whose width is its context, with the real
// vocabulary of the golden tokenizer family.
var (
	tinySDOnce  sync.Once
	tinySDModel *sd.Model
	tinySDClip  *sd.CLIP
	tinySDErr   error
)

func tinySD(t *testing.T) (*sd.Model, *sd.CLIP) {
	t.Helper()
	fx := testenv.GoldenSD1(t)
	tinySDOnce.Do(func() { tinySDModel, tinySDClip, tinySDErr = loadTinySD(fx) })
	if tinySDErr != nil {
		t.Fatal(tinySDErr)
	}
	return tinySDModel, tinySDClip
}

// loadTinySD loads the pipeline fx describes.
func loadTinySD(fx testenv.SD1) (*sd.Model, *sd.CLIP, error) {
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		return nil, nil, err
	}
	uf, err := tensorfile.Open(fx.UNet.Path())
	if err != nil {
		return nil, nil, err
	}
	heads := unet.Heads{Count: fx.UNet.Heads}
	if fx.UNet.HeadDim > 0 {
		heads = unet.Heads{Dim: fx.UNet.HeadDim}
	}
	u, err := unet.Load(rt, statedict.NewFileSource(rt, uf), fx.UNet.Prefix, heads)
	if err != nil {
		return nil, nil, err
	}
	ms, err := sampling.New(sampling.Config(fx.UNet.Sampling))
	if err != nil {
		return nil, nil, fx.UNet.FieldError("config.wrapper", "%v", err)
	}
	cf, err := tensorfile.Open(fx.CLIP.Path())
	if err != nil {
		return nil, nil, err
	}
	tm := &clip.TextModel{Heads: fx.CLIP.Heads, Activation: fx.CLIP.Activation, EOS: fx.CLIP.EOS}
	if _, err := statedict.Bind(rt, statedict.NewFileSource(rt, cf), fx.CLIP.Prefix, tm); err != nil {
		return nil, nil, err
	}
	bpe, err := clip.LoadBPE(fx.VocabDir)
	if err != nil {
		return nil, nil, err
	}
	model := &sd.Model{Runtime: rt, UNet: u, Sampling: ms, Latent: sd.SD15Latent, Name: fx.UNet.Name}
	c := &sd.CLIP{Runtime: rt, Name: fx.CLIP.Name, Encoders: []*sd.TextEncoder{{Name: "l",
		Tokenizer: clip.NewSD1Tokenizer(bpe, nil),
		Encoder:   &clip.Encoder{Model: tm, NormHidden: true, Start: fx.CLIP.Start, End: fx.CLIP.End, Pad: fx.CLIP.Pad}}}}
	return model, c, nil
}

// out0 runs a node and returns its first output.
func out0(t *testing.T, class string, in nodes.Inputs) any {
	t.Helper()
	return mustRun(t, class, in).Outputs[0]
}

func latentValues(t *testing.T, v any) ([]float32, []int) {
	t.Helper()
	l, ok := v.(*sd.Latent)
	if !ok {
		t.Fatalf("got %T, want *sd.Latent", v)
	}
	d, err := l.Samples.Float32()
	if err != nil {
		t.Fatal(err)
	}
	return d, l.Samples.Shape()
}

func diffMax(a, b []float32) float64 {
	d := 0.0
	for i := range a {
		d = max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

func encodeNode(t *testing.T, c *sd.CLIP, text string) sd.Conditioning {
	t.Helper()
	return out0(t, "CLIPTextEncode", nodes.Inputs{"clip": c, "text": text}).(sd.Conditioning)
}

// TestTxt2ImgGraph runs the txt2img graph through the nodes: prompts (one with an area,
// one limited to the end of the run, combined), an empty latent, KSampler; then a
// hires-style second pass (LatentUpscaleBy + KSampler at denoise 0.5). It checks shapes,
// finiteness, determinism per seed, progress events and previews.
func TestTxt2ImgGraph(t *testing.T) {
	model, c := tinySD(t)
	pos := encodeNode(t, c, "a (red:1.2) fox in the snow")
	hat := out0(t, "ConditioningSetArea", nodes.Inputs{"conditioning": encodeNode(t, c, "a hat"),
		"width": int64(64), "height": int64(64), "x": int64(0), "y": int64(0), "strength": 0.9})
	late := out0(t, "ConditioningSetTimestepRange", nodes.Inputs{"conditioning": encodeNode(t, c, "detailed"), "start": 0.6, "end": 1.0})
	both := out0(t, "ConditioningCombine", nodes.Inputs{"conditioning_1": pos, "conditioning_2": hat})
	both = out0(t, "ConditioningCombine", nodes.Inputs{"conditioning_1": both, "conditioning_2": late})
	neg := encodeNode(t, c, "blurry, low quality")
	empty := out0(t, "EmptyLatentImage", nodes.Inputs{"width": int64(128), "height": int64(96), "batch_size": int64(2)})

	var progress [][2]int
	var previews []nodes.PreviewImage
	env := &nodes.Env{Progress: func(v, m int) { progress = append(progress, [2]int{v, m}) },
		Preview: func(p nodes.PreviewImage) { previews = append(previews, p) }}
	ksample := func(seed int64, latent any, denoise float64) any {
		res, err := run(t, Options{}, env, "KSampler", nodes.Inputs{"model": model, "seed": seed, "steps": int64(4), "cfg": 6.5,
			"sampler_name": "dpmpp_2m", "scheduler": "karras", "positive": both, "negative": neg, "latent_image": latent, "denoise": denoise})
		if err != nil {
			t.Fatal(err)
		}
		return res.Outputs[0]
	}
	a := ksample(5, empty, 1)
	av, shape := latentValues(t, a)
	if len(shape) != 4 || shape[0] != 2 || shape[1] != 4 || shape[2] != 12 || shape[3] != 16 {
		t.Fatalf("latent shape %v, want [2 4 12 16]", shape)
	}
	for i, v := range av {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatalf("value %d is %v", i, v)
		}
	}
	if len(progress) != 4 || progress[0] != [2]int{1, 4} || progress[3] != [2]int{4, 4} {
		t.Fatalf("progress %v", progress)
	}
	if len(previews) == 0 || previews[0].Format != "JPEG" || len(previews[0].Data) < 100 {
		t.Fatalf("previews %d", len(previews))
	}
	// At most one frame a step; the 250 ms throttle itself is tested with a fake clock
	// (diffusion/sd TestPreviewFrames), since wall time here depends on machine load.
	if len(previews) > len(progress) {
		t.Fatalf("%d previews for %d steps", len(previews), len(progress))
	}
	bv, _ := latentValues(t, ksample(5, empty, 1))
	if d := diffMax(av, bv); d != 0 {
		t.Fatalf("same seed differs by %g", d)
	}
	cv, _ := latentValues(t, ksample(6, empty, 1))
	if d := diffMax(av, cv); d < 1e-3 {
		t.Fatalf("another seed agrees within %g", d)
	}

	up := out0(t, "LatentUpscaleBy", nodes.Inputs{"samples": a, "upscale_method": "nearest-exact", "scale_by": 1.5})
	uv, ushape := latentValues(t, up)
	if ushape[2] != 18 || ushape[3] != 24 {
		t.Fatalf("upscaled shape %v", ushape)
	}
	hv, hshape := latentValues(t, ksample(5, up, 0.5))
	if hshape[2] != 18 || hshape[3] != 24 {
		t.Fatalf("second pass shape %v", hshape)
	}
	// Half denoise keeps the upscaled latent's structure: it moves less than a full run.
	fv, _ := latentValues(t, ksample(5, up, 1))
	if diffMax(hv, uv) >= diffMax(fv, uv) {
		t.Fatal("denoise 0.5 moved the latent as far as a full denoise")
	}
}

// TestKSamplerAdvancedTwoPass: 0→3 with leftover noise, then 3→end without new noise,
// equals one 6-step KSamplerAdvanced run.
func TestKSamplerAdvancedTwoPass(t *testing.T) {
	model, c := tinySD(t)
	pos, neg := encodeNode(t, c, "a fox"), encodeNode(t, c, "blurry")
	empty := out0(t, "EmptyLatentImage", nodes.Inputs{"width": int64(64), "height": int64(64), "batch_size": int64(1)})
	adv := func(latent any, addNoise string, start, end int64, leftover string) any {
		return out0(t, "KSamplerAdvanced", nodes.Inputs{"model": model, "add_noise": addNoise, "noise_seed": int64(77), "steps": int64(6),
			"cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "positive": pos, "negative": neg, "latent_image": latent,
			"start_at_step": start, "end_at_step": end, "return_with_leftover_noise": leftover})
	}
	whole, _ := latentValues(t, adv(empty, "enable", 0, 10000, "disable"))
	mid := adv(empty, "enable", 0, 3, "enable")
	end, _ := latentValues(t, adv(mid, "disable", 3, 10000, "disable"))
	if d := diffMax(whole, end); d > 1e-4 {
		t.Fatalf("two passes differ from one by %g", d)
	}
	mv, _ := latentValues(t, mid)
	if diffMax(mv, whole) < 1e-2 {
		t.Fatal("the leftover-noise latent is already the final one")
	}
	if _, err := run(t, Options{}, nil, "KSamplerAdvanced", nodes.Inputs{"model": model, "add_noise": "maybe", "noise_seed": int64(1),
		"steps": int64(2), "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "positive": pos, "negative": neg,
		"latent_image": empty, "start_at_step": int64(0), "end_at_step": int64(2), "return_with_leftover_noise": "disable"}); err == nil {
		t.Fatal("add_noise maybe: no error")
	}
}

// TestCustomSamplingNodes: RandomNoise + CFGGuider + KSamplerSelect + BasicScheduler into
// SamplerCustomAdvanced equals KSampler; SamplerCustom equals it too; BasicGuider and
// DualCFGGuider run; DisableNoise keeps a latent when the sigmas are empty.
func TestCustomSamplingNodes(t *testing.T) {
	model, c := tinySD(t)
	pos, neg := encodeNode(t, c, "a fox"), encodeNode(t, c, "blurry")
	empty := out0(t, "EmptyLatentImage", nodes.Inputs{"width": int64(64), "height": int64(64), "batch_size": int64(1)})
	ks := out0(t, "KSampler", nodes.Inputs{"model": model, "seed": int64(9), "steps": int64(3), "cfg": 4.0, "sampler_name": "euler_ancestral",
		"scheduler": "simple", "positive": pos, "negative": neg, "latent_image": empty, "denoise": 1.0})
	kv, _ := latentValues(t, ks)

	noise := out0(t, "RandomNoise", nodes.Inputs{"noise_seed": int64(9)})
	guider := out0(t, "CFGGuider", nodes.Inputs{"model": model, "positive": pos, "negative": neg, "cfg": 4.0})
	sampler := out0(t, "KSamplerSelect", nodes.Inputs{"sampler_name": "euler_ancestral"})
	sigmas := out0(t, "BasicScheduler", nodes.Inputs{"model": model, "scheduler": "simple", "steps": int64(3), "denoise": 1.0})
	res := mustRun(t, "SamplerCustomAdvanced", nodes.Inputs{"noise": noise, "guider": guider, "sampler": sampler, "sigmas": sigmas, "latent_image": empty})
	ov, _ := latentValues(t, res.Outputs[0])
	if d := diffMax(ov, kv); d != 0 {
		t.Fatalf("SamplerCustomAdvanced differs from KSampler by %g", d)
	}
	dv, _ := latentValues(t, res.Outputs[1])
	if d := diffMax(dv, ov); d > 1e-5 {
		t.Fatalf("denoised_output differs from output by %g after the last step", d)
	}
	sc := mustRun(t, "SamplerCustom", nodes.Inputs{"model": model, "add_noise": true, "noise_seed": int64(9), "cfg": 4.0,
		"positive": pos, "negative": neg, "sampler": sampler, "sigmas": sigmas, "latent_image": empty})
	if sv, _ := latentValues(t, sc.Outputs[0]); diffMax(sv, kv) != 0 {
		t.Fatal("SamplerCustom differs from KSampler")
	}

	for _, g := range []any{
		out0(t, "BasicGuider", nodes.Inputs{"model": model, "conditioning": pos}),
		out0(t, "DualCFGGuider", nodes.Inputs{"model": model, "cond1": pos, "cond2": encodeNode(t, c, "a cat"), "negative": neg,
			"cfg_conds": 3.0, "cfg_cond2_negative": 2.0, "style": "nested"}),
	} {
		r := mustRun(t, "SamplerCustomAdvanced", nodes.Inputs{"noise": noise, "guider": g, "sampler": sampler, "sigmas": sigmas, "latent_image": empty})
		v, _ := latentValues(t, r.Outputs[0])
		if diffMax(v, kv) < 1e-4 {
			t.Fatalf("%T guider gives the CFG result", g)
		}
	}

	// Empty sigmas (denoise 0): the latent comes back as it is.
	none := out0(t, "BasicScheduler", nodes.Inputs{"model": model, "scheduler": "normal", "steps": int64(3), "denoise": 0.0})
	if len(none.(Sigmas)) != 0 {
		t.Fatalf("denoise 0 sigmas %v", none)
	}
	r := mustRun(t, "SamplerCustomAdvanced", nodes.Inputs{"noise": out0(t, "DisableNoise", nodes.Inputs{}), "guider": guider,
		"sampler": sampler, "sigmas": none, "latent_image": ks})
	if v, _ := latentValues(t, r.Outputs[0]); diffMax(v, kv) != 0 {
		t.Fatal("empty sigmas changed the latent")
	}
	if _, err := run(t, Options{}, nil, "SamplerCustomAdvanced", nodes.Inputs{"noise": noise, "guider": "x", "sampler": sampler,
		"sigmas": sigmas, "latent_image": empty}); err == nil {
		t.Fatal("a string guider: no error")
	}
}

// TestSamplerNodeCancel: KSampler stops with the context's error.
func TestSamplerNodeCancel(t *testing.T) {
	model, c := tinySD(t)
	pos := encodeNode(t, c, "a fox")
	empty := out0(t, "EmptyLatentImage", nodes.Inputs{"width": int64(64), "height": int64(64), "batch_size": int64(1)})
	r := newTestRegistry(t, Options{})
	n, _ := r.Lookup("KSampler")
	ctx, cancel := context.WithCancel(context.Background())
	steps := 0
	env := &nodes.Env{Progress: func(v, m int) {
		steps++
		cancel()
	}}
	_, err := n.Run(ctx, env, nodes.Inputs{"model": model, "seed": int64(1), "steps": int64(50), "cfg": 4.0, "sampler_name": "euler",
		"scheduler": "normal", "positive": pos, "negative": pos, "latent_image": empty, "denoise": 1.0})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if steps > 2 {
		t.Fatalf("%d steps after cancel", steps)
	}
	// Already cancelled: nodes return at once.
	if _, err := n.Run(ctx, env, nodes.Inputs{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

// TestSchedulerNodes checks the sigma nodes against the registry and ComfyUI's slicing.
func TestSchedulerNodes(t *testing.T) {
	model, _ := tinySD(t)
	ms := model.Sampling
	basic := out0(t, "BasicScheduler", nodes.Inputs{"model": model, "scheduler": "karras", "steps": int64(4), "denoise": 0.5}).(Sigmas)
	full, _ := sampling.LookupScheduler("karras")
	want := full(ms, 8)
	if len(basic) != 5 || diffMax(basic, want[4:]) != 0 {
		t.Fatalf("BasicScheduler denoise 0.5 = %v, want the last 5 of %v", basic, want)
	}
	k := out0(t, "KarrasScheduler", nodes.Inputs{"steps": int64(3), "sigma_max": 10.0, "sigma_min": 0.1, "rho": 7.0}).(Sigmas)
	if len(k) != 4 || math.Abs(float64(k[0])-10) > 1e-4 || math.Abs(float64(k[2])-0.1) > 1e-5 || k[3] != 0 {
		t.Fatalf("KarrasScheduler %v", k)
	}
	e := out0(t, "ExponentialScheduler", nodes.Inputs{"steps": int64(2), "sigma_max": 10.0, "sigma_min": 0.1}).(Sigmas)
	if len(e) != 3 || math.Abs(float64(e[0])-10) > 1e-4 || math.Abs(float64(e[1])-0.1) > 1e-5 {
		t.Fatalf("ExponentialScheduler %v", e)
	}
	if _, err := run(t, Options{}, nil, "ExponentialScheduler", nodes.Inputs{"steps": int64(2), "sigma_max": 10.0, "sigma_min": 0.0}); err == nil {
		t.Fatal("sigma_min 0: no error")
	}
	if _, err := run(t, Options{}, nil, "KarrasScheduler", nodes.Inputs{"steps": int64(2), "sigma_max": 10.0, "sigma_min": 0.1, "rho": 0.0}); err == nil {
		t.Fatal("rho 0: no error")
	}
	turbo := out0(t, "SDTurboScheduler", nodes.Inputs{"model": model, "steps": int64(2), "denoise": 0.5}).(Sigmas)
	if len(turbo) != 3 || turbo[0] != ms.Sigma(499) || turbo[1] != ms.Sigma(399) || turbo[2] != 0 {
		t.Fatalf("SDTurboScheduler %v", turbo)
	}
	if got := out0(t, "SDTurboScheduler", nodes.Inputs{"model": model, "steps": int64(10), "denoise": 1.0}).(Sigmas); len(got) != 11 || got[0] != ms.Sigma(999) {
		t.Fatalf("SDTurboScheduler 10 steps %v", got)
	}

	s := Sigmas{5, 4, 3, 2, 1, 0}
	for _, c := range []struct {
		step   int64
		hi, lo int
	}{{0, 1, 6}, {2, 3, 4}, {5, 6, 1}, {9, 6, 0}} {
		r := mustRun(t, "SplitSigmas", nodes.Inputs{"sigmas": s, "step": c.step})
		hi, lo := r.Outputs[0].(Sigmas), r.Outputs[1].(Sigmas)
		if len(hi) != c.hi || len(lo) != c.lo {
			t.Errorf("SplitSigmas step %d: %v %v", c.step, hi, lo)
		}
		if c.step == 2 && (hi[2] != 3 || lo[0] != 3) {
			t.Errorf("SplitSigmas step 2 shares sigma 3: %v %v", hi, lo)
		}
	}
	for _, c := range []struct {
		denoise float64
		hi, lo  int
	}{{1, 1, 6}, {0.4, 4, 3}, {0.5, 4, 3}, {0, 0, 1}} {
		// steps 5: 1 → [:-5] keeps the first; round(2.0)=2 → [:-2], [-3:]; round(2.5)=2
		// (half to even); 0 → [:-0] is empty.
		r := mustRun(t, "SplitSigmasDenoise", nodes.Inputs{"sigmas": s, "denoise": c.denoise})
		hi, lo := r.Outputs[0].(Sigmas), r.Outputs[1].(Sigmas)
		if len(hi) != c.hi || len(lo) != c.lo {
			t.Errorf("SplitSigmasDenoise %v: %v %v", c.denoise, hi, lo)
		}
	}
	if _, err := run(t, Options{}, nil, "KSamplerSelect", nodes.Inputs{"sampler_name": "nope"}); err == nil {
		t.Fatal("unknown sampler: no error")
	}
}

// TestModelSamplingDiscrete: v_prediction swaps the prediction and keeps the weights;
// the unsupported modes are clear errors.
func TestModelSamplingDiscrete(t *testing.T) {
	model, _ := tinySD(t)
	m := out0(t, "ModelSamplingDiscrete", nodes.Inputs{"model": model, "sampling": "v_prediction", "zsnr": false}).(*sd.Model)
	if m.Sampling.Prediction() != sampling.VPrediction || m.UNet != model.UNet || model.Sampling.Prediction() != sampling.EPS {
		t.Fatal("v_prediction not applied to a copy")
	}
	// zsnr: the rescaled table, values from ComfyUI 0.3.64's ModelSamplingDiscrete(zsnr=True).
	z := out0(t, "ModelSamplingDiscrete", nodes.Inputs{"model": model, "sampling": "v_prediction", "zsnr": true}).(*sd.Model).Sampling
	for i, want := range map[int]float64{0: 0.029167158529162407, 1: 0.04206756502389908, 500: 1.7745574712753296, 998: 2254.238037109375, 999: 4518.763671875} {
		if got := float64(z.Sigmas()[i]); math.Abs(got-want) > 1e-6*want {
			t.Errorf("zsnr sigma[%d] = %v, want %v", i, got, want)
		}
	}
	if got := z.PercentToSigma(0.5); math.Abs(got-1.7713158130645752) > 1e-6 {
		t.Errorf("zsnr percent_to_sigma(0.5) = %v", got)
	}
	for _, in := range []nodes.Inputs{
		{"model": model, "sampling": "lcm", "zsnr": false},
		{"model": model, "sampling": "x0", "zsnr": true},
		{"model": "not a model", "sampling": "eps", "zsnr": false},
	} {
		if _, err := run(t, Options{}, nil, "ModelSamplingDiscrete", in); err == nil {
			t.Errorf("%v: no error", in)
		}
	}
}

// TestKSamplerSeedPast2p63 runs KSampler with the seed 2^64-1 as a prompt brings it (a
// JSON number through graph.Coerce): it used to pass validation and fail at run time.
// torch seeds mt19937 with the seed's low 32 bits, so it samples exactly as seed 2^32-1
// does, and differently from 2^32-2.
func TestKSamplerSeedPast2p63(t *testing.T) {
	model, c := tinySD(t)
	pos, neg := encodeNode(t, c, "a fox"), encodeNode(t, c, "")
	empty := out0(t, "EmptyLatentImage", nodes.Inputs{"width": int64(64), "height": int64(64), "batch_size": int64(1)})
	r := newTestRegistry(t, Options{Runtime: testRuntime(t)})
	spec, _ := mustSchema(t, r, "KSampler").Input("seed")
	sample := func(seed any) []float32 {
		res := mustRunIn(t, r, "KSampler", nodes.Inputs{"model": model, "seed": seed, "steps": int64(2), "cfg": 5.0,
			"sampler_name": "euler", "scheduler": "normal", "positive": pos, "negative": neg, "latent_image": empty, "denoise": 1.0})
		v, _ := latentValues(t, res.Outputs[0])
		return v
	}
	big, err := graph.Coerce(spec, json.Number("18446744073709551615"))
	if err != nil {
		t.Fatal(err)
	}
	a, b := sample(big), sample(int64(1<<32-1))
	if d := diffMax(a, b); d != 0 {
		t.Errorf("seed 2^64-1 differs from 2^32-1 by %g", d)
	}
	if d := diffMax(a, sample(int64(1<<32-2))); d < 1e-3 {
		t.Errorf("seed 2^64-1 agrees with 2^32-2 within %g", d)
	}
}

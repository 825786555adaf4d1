package builtin

import (
	"bufio"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/flux"
	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/nodes"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/folders"
	"github.com/forgeflow/forgeflow/weights/gguf"
	"github.com/forgeflow/forgeflow/weights/memory"
)

// fluxModels is a models folder with tiny random Flux transformers (dev as F32
// safetensors under unet/, schnell as BF16 under diffusion_models/, dev as Q8_0 and
// Q4_0 GGUF) and a tiny Flux VAE, with a model cache.
type fluxModels struct {
	base string
	opts Options
	spec sd.RandomFluxSpec
}

func writeFile(t *testing.T, path string, write func(w *bufio.Writer) error) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	if err := write(w); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func newFluxModels(t *testing.T) *fluxModels {
	t.Helper()
	base := t.TempDir()
	spec := sd.TinyFluxRandomSpec(true)
	spec.Model.Seed = 21
	dev, schnell := spec.Model, spec.Model
	schnell.Guidance = false
	models := filepath.Join(base, "models")
	writeFile(t, filepath.Join(models, "unet", "flux_dev_tiny.safetensors"), func(w *bufio.Writer) error {
		return flux.WriteRandomSafetensors(w, dev, gpu.F32)
	})
	writeFile(t, filepath.Join(models, "diffusion_models", "sub", "flux_schnell_tiny.safetensors"), func(w *bufio.Writer) error {
		return flux.WriteRandomSafetensors(w, schnell, gpu.BF16)
	})
	for name, q := range map[string]gguf.Type{"flux_dev_tiny-Q8_0.gguf": gguf.TypeQ8_0, "flux_dev_tiny-Q4_0.gguf": gguf.TypeQ4_0} {
		writeFile(t, filepath.Join(models, "unet", name), func(w *bufio.Writer) error { return flux.WriteRandomGGUF(w, dev, q) })
	}
	writeFile(t, filepath.Join(models, "vae", "flux_ae_tiny.safetensors"), func(w *bufio.Writer) error {
		return sd.WriteRandomVAE(w, spec.VAE, "", 23, weights.F32)
	})
	p, err := folders.New(folders.Options{BaseDir: base})
	if err != nil {
		t.Fatal(err)
	}
	return &fluxModels{base: base, spec: spec, opts: Options{Models: p, Memory: memory.New(memory.Options{RAMBudget: -1}),
		Runtime: testRuntime(t), Dirs: nodes.Dirs{Output: filepath.Join(base, "output")}}}
}

func fluxNet(t *testing.T, m any) *flux.Model {
	t.Helper()
	model, ok := m.(*sd.Model)
	if !ok {
		t.Fatalf("got %T, want *sd.Model", m)
	}
	n, ok := model.Net.(sd.FluxNetwork)
	if !ok {
		t.Fatalf("network %T, want sd.FluxNetwork", model.Net)
	}
	return n.Model
}

// TestFluxLoaderNodes lists and loads Flux files through UNETLoader and the GGUF
// loaders: what each combo lists, the stored weight types, weight_dtype, dequant_dtype,
// the model cache, and the errors for a file the loader does not take.
func TestFluxLoaderNodes(t *testing.T) {
	fm := newFluxModels(t)
	r := newTestRegistry(t, fm.opts)
	choices := func(class string) []string {
		s, _ := r.Schema(class)
		in, _ := s.Input("unet_name")
		return in.Choices()
	}
	if got, want := choices("UNETLoader"), []string{"flux_dev_tiny.safetensors", "sub/flux_schnell_tiny.safetensors"}; !slices.Equal(got, want) {
		t.Errorf("UNETLoader lists %q, want %q", got, want)
	}
	for _, class := range []string{"UnetLoaderGGUF", "UnetLoaderGGUFAdvanced"} {
		if got, want := choices(class), []string{"flux_dev_tiny-Q4_0.gguf", "flux_dev_tiny-Q8_0.gguf"}; !slices.Equal(got, want) {
			t.Errorf("%s lists %q, want %q", class, got, want)
		}
	}

	dev := mustNode(t, r, "UNETLoader", nodes.Inputs{"unet_name": "flux_dev_tiny.safetensors", "weight_dtype": "default"})[0]
	if m := fluxNet(t, dev); !m.Guidance() || m.DoubleBlocks[0].ImgAttn.QKV.Weight.DType() != gpu.F32 {
		t.Errorf("dev: guidance %v, weights %s", m.Guidance(), m.DoubleBlocks[0].ImgAttn.QKV.Weight.DType())
	}
	if again := mustNode(t, r, "UNETLoader", nodes.Inputs{"unet_name": "flux_dev_tiny.safetensors", "weight_dtype": "default"})[0]; again != dev {
		t.Error("loading the same file again did not hit the model cache")
	}
	schnell := mustNode(t, r, "UNETLoader", nodes.Inputs{"unet_name": "sub/flux_schnell_tiny.safetensors", "weight_dtype": "default"})[0]
	if m := fluxNet(t, schnell); m.Guidance() || m.DoubleBlocks[0].ImgAttn.QKV.Weight.DType() != gpu.BF16 {
		t.Errorf("schnell: guidance %v, weights %s", m.Guidance(), m.DoubleBlocks[0].ImgAttn.QKV.Weight.DType())
	}
	if s := schnell.(*sd.Model).Sampling; !slices.Equal(s.Sigmas(), sampling.NewFlowShift(1, 1, 1000).Sigmas()) {
		t.Errorf("schnell samples with %T, want flow shift 1", s)
	}
	for dtype, want := range map[string]gpu.DType{"fp8_e4m3fn": gpu.F8E4M3FN, "fp8_e4m3fn_fast": gpu.F8E4M3FN, "fp8_e5m2": gpu.F8E5M2} {
		m := mustNode(t, r, "UNETLoader", nodes.Inputs{"unet_name": "flux_dev_tiny.safetensors", "weight_dtype": dtype})[0]
		if got := fluxNet(t, m).SingleBlocks[0].Linear1.Weight.DType(); got != want {
			t.Errorf("weight_dtype %s: weights %s", dtype, got)
		}
	}
	q8 := mustNode(t, r, "UnetLoaderGGUF", nodes.Inputs{"unet_name": "flux_dev_tiny-Q8_0.gguf"})[0]
	if got := fluxNet(t, q8).SingleBlocks[0].Linear1.Weight.DType(); got != gpu.Q8_0 {
		t.Errorf("Q8_0 file: weights %s", got)
	}
	adv := mustNode(t, r, "UnetLoaderGGUFAdvanced", nodes.Inputs{"unet_name": "flux_dev_tiny-Q8_0.gguf",
		"dequant_dtype": "default", "patch_dtype": "default", "patch_on_device": false})[0]
	if adv != q8 {
		t.Error("UnetLoaderGGUFAdvanced did not share UnetLoaderGGUF's cached model")
	}
	for _, deq := range []string{"target", "float32"} {
		if m := mustNode(t, r, "UnetLoaderGGUFAdvanced", nodes.Inputs{"unet_name": "flux_dev_tiny-Q8_0.gguf",
			"dequant_dtype": deq, "patch_dtype": "float16", "patch_on_device": false})[0]; m != q8 {
			t.Errorf("dequant_dtype %s (float32 arithmetic) did not share UnetLoaderGGUF's cached model", deq)
		}
	}
	q4 := mustNode(t, r, "UnetLoaderGGUFAdvanced", nodes.Inputs{"unet_name": "flux_dev_tiny-Q4_0.gguf",
		"dequant_dtype": "float16", "patch_dtype": "target", "patch_on_device": true})[0]
	if w := fluxNet(t, q4).SingleBlocks[0].Linear1.Weight; w.DType() != gpu.Q4_0 || w.DequantDType() != gpu.F16 {
		t.Errorf("Q4_0 file, dequant_dtype float16: weights %s decoded in %s", w.DType(), w.DequantDType())
	}
	bf := mustNode(t, r, "UnetLoaderGGUFAdvanced", nodes.Inputs{"unet_name": "flux_dev_tiny-Q8_0.gguf",
		"dequant_dtype": "bfloat16", "patch_dtype": "default", "patch_on_device": false})[0]
	if w := fluxNet(t, bf).SingleBlocks[0].Linear1.Weight; bf == q8 || w.DequantDType() != gpu.BF16 {
		t.Errorf("dequant_dtype bfloat16: a model of its own %v, weights decoded in %s", bf != q8, w.DequantDType())
	}

	_, err := nodeRun(t, r, nil, "UNETLoader", nodes.Inputs{"unet_name": "flux_dev_tiny-Q8_0.gguf", "weight_dtype": "default"})
	wantErr(t, err, "UnetLoaderGGUF")
	_, err = nodeRun(t, r, nil, "UnetLoaderGGUF", nodes.Inputs{"unet_name": "missing.gguf"})
	if !errors.Is(err, folders.ErrNotFound) {
		t.Errorf("missing file: err = %v, want folders.ErrNotFound", err)
	}
	_, err = nodeRun(t, r, nil, "UNETLoader", nodes.Inputs{"unet_name": "../models/unet/flux_dev_tiny.safetensors", "weight_dtype": "default"})
	if !errors.Is(err, folders.ErrInvalidName) {
		t.Errorf("path traversal: err = %v, want folders.ErrInvalidName", err)
	}
	_, err = nodeRun(t, r, nil, "UNETLoader", nodes.Inputs{"unet_name": "flux_dev_tiny.safetensors", "weight_dtype": "fp4"})
	wantErr(t, err, "fp4")
	// A truncated file is a clear error, not a crash.
	trunc := filepath.Join(fm.base, "models", "unet", "truncated.safetensors")
	data, err := os.ReadFile(filepath.Join(fm.base, "models", "unet", "flux_dev_tiny.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(trunc, data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = nodeRun(t, r, nil, "UNETLoader", nodes.Inputs{"unet_name": "truncated.safetensors", "weight_dtype": "default"})
	wantErr(t, err, "truncated.safetensors")
}

// randCond is a one-entry conditioning of random T5-like states (1, tokens, 64) and a
// pooled vector (1, 64), the widths of sd.TinyFluxRandomSpec.
func randCond(t *testing.T, seed uint64, tokens int) sd.Conditioning {
	t.Helper()
	rt := testRuntime(t)
	r := rand.New(rand.NewPCG(seed, 2))
	v := func(n int) []float32 {
		out := make([]float32, n)
		for i := range out {
			out[i] = float32(r.NormFloat64())
		}
		return out
	}
	e, err := rt.FromFloat32(v(tokens*64), 1, tokens, 64)
	if err != nil {
		t.Fatal(err)
	}
	p, err := rt.FromFloat32(v(64), 1, 64)
	if err != nil {
		t.Fatal(err)
	}
	return sd.Conditioning{sd.NewCond(e, p)}
}

// TestFluxConditioningNodes checks the values FluxGuidance, FluxDisableGuidance,
// ReferenceLatent and FluxKontextMultiReferenceLatentMethod set, and that they leave
// their input unchanged (outputs are shared by the executor's cache).
func TestFluxConditioningNodes(t *testing.T) {
	c := randCond(t, 1, 4)
	g := out0(t, "FluxGuidance", nodes.Inputs{"conditioning": c, "guidance": 5.5}).(sd.Conditioning)
	if g[0].Guidance == nil || *g[0].Guidance != 5.5 || g[0].NoGuidance || c[0].Guidance != nil {
		t.Fatalf("FluxGuidance: %+v (input %+v)", g[0], c[0])
	}
	off := out0(t, "FluxDisableGuidance", nodes.Inputs{"conditioning": g}).(sd.Conditioning)
	if off[0].Guidance != nil || !off[0].NoGuidance || *g[0].Guidance != 5.5 {
		t.Fatalf("FluxDisableGuidance: %+v", off[0])
	}
	on := out0(t, "FluxGuidance", nodes.Inputs{"conditioning": off, "guidance": 2.0}).(sd.Conditioning)
	if on[0].Guidance == nil || *on[0].Guidance != 2 || on[0].NoGuidance {
		t.Fatalf("FluxGuidance after FluxDisableGuidance: %+v", on[0])
	}

	rt := testRuntime(t)
	lat := func(h int) *sd.Latent {
		x, err := rt.Zeros(gpu.F32, 1, 16, h, 4)
		if err != nil {
			t.Fatal(err)
		}
		return &sd.Latent{Samples: x}
	}
	a, b := lat(2), lat(3)
	r1 := out0(t, "ReferenceLatent", nodes.Inputs{"conditioning": c, "latent": a}).(sd.Conditioning)
	r2 := out0(t, "ReferenceLatent", nodes.Inputs{"conditioning": r1, "latent": b}).(sd.Conditioning)
	r2b := out0(t, "ReferenceLatent", nodes.Inputs{"conditioning": r1, "latent": a}).(sd.Conditioning)
	if len(c[0].ReferenceLatents) != 0 || len(r1[0].ReferenceLatents) != 1 || len(r2[0].ReferenceLatents) != 2 ||
		r2[0].ReferenceLatents[0] != a.Samples || r2[0].ReferenceLatents[1] != b.Samples || r2b[0].ReferenceLatents[1] != a.Samples {
		t.Fatalf("ReferenceLatent chain: %d, %d, %d references", len(c[0].ReferenceLatents), len(r1[0].ReferenceLatents), len(r2[0].ReferenceLatents))
	}
	if same := out0(t, "ReferenceLatent", nodes.Inputs{"conditioning": c}).(sd.Conditioning); len(same[0].ReferenceLatents) != 0 {
		t.Error("ReferenceLatent without a latent added one")
	}
	for in, want := range map[string]string{"offset": "offset", "index": "index", "uxo/uno": "uxo"} {
		m := out0(t, "FluxKontextMultiReferenceLatentMethod", nodes.Inputs{"conditioning": r2, "reference_latents_method": in}).(sd.Conditioning)
		if m[0].ReferenceMethod != want || r2[0].ReferenceMethod != "" || len(m[0].ReferenceLatents) != 2 {
			t.Errorf("method %q: %q", in, m[0].ReferenceMethod)
		}
	}
}

// TestModelSamplingFluxNode checks the shift ModelSamplingFlux computes (base_shift at
// 256 patches, max_shift at 4096, linear between and beyond) and that the input model
// keeps its sampling.
func TestModelSamplingFluxNode(t *testing.T) {
	rt := testRuntime(t)
	orig := &sd.Model{Runtime: rt, Sampling: sampling.NewFlux(1.15), Latent: sd.FluxLatent}
	for _, c := range []struct {
		w, h  int
		shift float64
	}{{1024, 1024, 1.15}, {256, 256, 0.5}, {512, 512, 0.5 + 0.65*768/3840}, {2048, 1024, 0.5 + 0.65*(8192-256)/3840.0}} {
		m := out0(t, "ModelSamplingFlux", nodes.Inputs{"model": orig, "max_shift": 1.15, "base_shift": 0.5,
			"width": int64(c.w), "height": int64(c.h)}).(*sd.Model)
		want := sampling.NewFlux(c.shift)
		if got := m.Sampling.Sigmas(); len(got) != len(want.Sigmas()) || diffMax(got, want.Sigmas()) > 1e-6 {
			t.Errorf("%dx%d: sigmas differ from shift %.4f's", c.w, c.h, c.shift)
		}
	}
	if !slices.Equal(orig.Sampling.Sigmas(), sampling.NewFlux(1.15).Sigmas()) {
		t.Error("ModelSamplingFlux changed its input model")
	}
}

// TestFluxKontextImageScale checks the resolution table lookup and the Lanczos resize.
func TestFluxKontextImageScale(t *testing.T) {
	for _, c := range []struct{ w, h, ww, wh int }{
		{100, 100, 1024, 1024}, {1024, 1024, 1024, 1024}, {200, 100, 1456, 720}, {100, 200, 720, 1456},
		{4000, 100, 1568, 672}, {100, 4000, 672, 1568}, {1200, 800, 1248, 832}, {800, 1200, 832, 1248},
	} {
		if w, h := kontextSize(c.w, c.h); w != c.ww || h != c.wh {
			t.Errorf("%dx%d → %dx%d, want %dx%d", c.w, c.h, w, h, c.ww, c.wh)
		}
	}
	im := ramp(1, 30, 60, 3)
	got := out0(t, "FluxKontextImageScale", nodes.Inputs{"image": im}).(*Image)
	want, err := upscale(im, 1456, 720, "lanczos", "center")
	if err != nil {
		t.Fatal(err)
	}
	if got.Width != 1456 || got.Height != 720 || !slices.Equal(got.Pix, want.Pix) {
		t.Errorf("image %v, want 1456x720 Lanczos", got.Shape())
	}
}

// TestFluxSamplingNodes runs ComfyUI's Flux graphs through the nodes on the tiny models:
// the dev example's custom sampling (UNETLoader → ModelSamplingFlux → BasicScheduler;
// FluxGuidance → BasicGuider; RandomNoise, KSamplerSelect, EmptySD3LatentImage →
// SamplerCustomAdvanced → VAEDecode), schnell's KSampler at cfg 1, CFGGuider and
// DualCFGGuider on a Flux, and a Kontext edit (VAEEncode → ReferenceLatent). The
// custom-sampling result must equal sd.CustomSample's with the same values.
func TestFluxSamplingNodes(t *testing.T) {
	fm := newFluxModels(t)
	r := newTestRegistry(t, fm.opts)
	node := func(class string, in nodes.Inputs) any { t.Helper(); return mustNode(t, r, class, in)[0] }
	model := node("UNETLoader", nodes.Inputs{"unet_name": "flux_dev_tiny.safetensors", "weight_dtype": "default"})
	vae := node("VAELoader", nodes.Inputs{"vae_name": "flux_ae_tiny.safetensors"}).(*sd.VAE)
	if vae.Latent != sd.FluxLatent {
		t.Fatalf("Flux VAE latent format %v", vae.Latent)
	}
	patched := node("ModelSamplingFlux", nodes.Inputs{"model": model, "max_shift": 1.15, "base_shift": 0.5, "width": int64(64), "height": int64(64)})
	sigmas := node("BasicScheduler", nodes.Inputs{"model": patched, "scheduler": "simple", "steps": int64(3), "denoise": 1.0}).(Sigmas)
	if len(sigmas) != 4 || sigmas[0] != 1 || sigmas[3] != 0 {
		t.Fatalf("sigmas %v", sigmas)
	}
	cond := node("FluxGuidance", nodes.Inputs{"conditioning": randCond(t, 3, 5), "guidance": 3.5}).(sd.Conditioning)
	guider := node("BasicGuider", nodes.Inputs{"model": patched, "conditioning": cond})
	noise := node("RandomNoise", nodes.Inputs{"noise_seed": int64(42)})
	smp := node("KSamplerSelect", nodes.Inputs{"sampler_name": "euler"})
	empty := node("EmptySD3LatentImage", nodes.Inputs{"width": int64(64), "height": int64(64), "batch_size": int64(1)}).(*sd.Latent)
	checkShape(t, empty.Samples.Shape(), []int{1, 16, 8, 8})
	custom := func() *sd.Latent {
		out := mustNode(t, r, "SamplerCustomAdvanced", nodes.Inputs{"noise": noise, "guider": guider, "sampler": smp,
			"sigmas": sigmas, "latent_image": empty})
		return out[0].(*sd.Latent)
	}
	lat := custom()
	got, shape := latentValues(t, lat)
	checkShape(t, shape, []int{1, 16, 8, 8})
	allFinite(t, "latent", got)
	again, _ := latentValues(t, custom())
	if !slices.Equal(got, again) {
		t.Error("the same graph gave another latent")
	}
	want, _, err := sd.CustomSample(t.Context(), sd.Noise{Seed: 42}, sd.NewBasicGuider(patched.(*sd.Model), cond),
		smp.(*Sampler).Sampler, sigmas, empty, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w, _ := latentValues(t, want); !slices.Equal(got, w) {
		t.Errorf("SamplerCustomAdvanced differs from sd.CustomSample by %g", diffMax(got, w))
	}
	img := node("VAEDecode", nodes.Inputs{"samples": lat, "vae": vae}).(*Image)
	if img.Width != 16 || img.Height != 16 || img.Channels != 3 {
		t.Fatalf("decoded image %v", img.Shape())
	}
	allFinite(t, "image", img.Pix)

	// schnell's example: KSampler, cfg 1, an EmptyLatentImage's 4 channels widened to 16.
	schnell := node("UNETLoader", nodes.Inputs{"unet_name": "sub/flux_schnell_tiny.safetensors", "weight_dtype": "default"})
	ks := node("KSampler", nodes.Inputs{"model": schnell, "seed": int64(7), "steps": int64(2), "cfg": 1.0, "sampler_name": "euler",
		"scheduler": "simple", "positive": randCond(t, 4, 5), "negative": randCond(t, 5, 1),
		"latent_image": node("EmptyLatentImage", nodes.Inputs{"width": int64(64), "height": int64(64), "batch_size": int64(2)}), "denoise": 1.0})
	v, shape := latentValues(t, ks)
	checkShape(t, shape, []int{2, 16, 8, 8})
	allFinite(t, "schnell latent", v)

	// CFG with a negative prompt of another length, and DualCFGGuider, run on Flux.
	neg := randCond(t, 6, 3)
	for _, g := range []any{
		node("CFGGuider", nodes.Inputs{"model": model, "positive": cond, "negative": neg, "cfg": 2.5}),
		node("DualCFGGuider", nodes.Inputs{"model": model, "cond1": cond, "cond2": randCond(t, 7, 5), "negative": neg,
			"cfg_conds": 2.0, "cfg_cond2_negative": 1.5, "style": "regular"}),
	} {
		out := mustNode(t, r, "SamplerCustomAdvanced", nodes.Inputs{"noise": noise, "guider": g, "sampler": smp, "sigmas": sigmas, "latent_image": empty})
		v, _ := latentValues(t, out[0])
		allFinite(t, "guided latent", v)
		if slices.Equal(v, got) {
			t.Error("a CFG guider gave BasicGuider's latent")
		}
	}

	// Skip Layer Guidance on Flux: leaving out the single block (or the double block)
	// changes a CFG run, which the patched model's post-CFG function reaches through
	// the network's skipped blocks.
	cfgRun := func(m any) []float32 {
		g := node("CFGGuider", nodes.Inputs{"model": m, "positive": cond, "negative": neg, "cfg": 2.5})
		out := mustNode(t, r, "SamplerCustomAdvanced", nodes.Inputs{"noise": noise, "guider": g, "sampler": smp, "sigmas": sigmas, "latent_image": empty})
		v, _ := latentValues(t, out[0])
		return v
	}
	plainCFG := cfgRun(model)
	for _, layers := range [][2]string{{"", "0"}, {"0", ""}} {
		slg := node("SkipLayerGuidanceDiT", nodes.Inputs{"model": model, "double_layers": layers[0], "single_layers": layers[1],
			"scale": 3.0, "start_percent": 0.0, "end_percent": 1.0, "rescaling_scale": 0.0})
		if v := cfgRun(slg); slices.Equal(v, plainCFG) {
			t.Errorf("SkipLayerGuidanceDiT double %q single %q left the run unchanged", layers[0], layers[1])
		}
	}

	// Kontext: the encoded image as a reference latent changes the result; a second
	// reference with the index method changes it again.
	ref := node("VAEEncode", nodes.Inputs{"pixels": ramp(1, 16, 12, 3), "vae": vae}).(*sd.Latent)
	edit := node("ReferenceLatent", nodes.Inputs{"conditioning": cond, "latent": ref}).(sd.Conditioning)
	sample := func(c sd.Conditioning) []float32 {
		g := node("BasicGuider", nodes.Inputs{"model": model, "conditioning": c})
		out := mustNode(t, r, "SamplerCustomAdvanced", nodes.Inputs{"noise": noise, "guider": g, "sampler": smp, "sigmas": sigmas, "latent_image": empty})
		v, _ := latentValues(t, out[0])
		return v
	}
	plain, edited := sample(cond), sample(edit)
	two := node("FluxKontextMultiReferenceLatentMethod", nodes.Inputs{"reference_latents_method": "index",
		"conditioning": node("ReferenceLatent", nodes.Inputs{"conditioning": edit, "latent": ref})}).(sd.Conditioning)
	indexed := sample(two)
	allFinite(t, "edited latent", edited)
	if slices.Equal(plain, edited) || slices.Equal(edited, indexed) || math.IsNaN(diffMax(plain, indexed)) {
		t.Error("reference latents did not reach the model")
	}
}

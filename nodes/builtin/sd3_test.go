package builtin

import (
	"bufio"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/diffusion/t5"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/nodes"
	"github.com/forgeflow/forgeflow/weights/folders"
	"github.com/forgeflow/forgeflow/weights/gguf"
	"github.com/forgeflow/forgeflow/weights/memory"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// newSD3Models is a models folder with a tiny SD3 as an all-in-one checkpoint, its
// MMDiT as a diffusion_models file, its text encoders as text_encoders files (T5 also as
// a GGUF file), the tiny CLIP vocabulary and the tiny T5 tokenizer.
func newSD3Models(t *testing.T) Options {
	t.Helper()
	base := t.TempDir()
	spec := sd.TinySD3RandomSpec(false)
	spec.Seed = 41
	write := func(rel, part string) string {
		t.Helper()
		p := filepath.Join(base, "models", filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		w := bufio.NewWriter(f)
		if part == "" {
			err = sd.WriteRandomSD3(w, spec)
		} else {
			err = sd.WriteRandomSD3Part(w, spec, part)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		return p
	}
	write("checkpoints/sd3_tiny.safetensors", "")
	write("diffusion_models/sd3_tiny_mmdit.safetensors", sd.SD3PartModel)
	write("text_encoders/clip_l.safetensors", sd.SD3PartCLIPL)
	write("text_encoders/clip_g.safetensors", sd.SD3PartCLIPG)
	t5Path := write("clip/t5xxl_tiny.safetensors", sd.SD3PartT5)
	ggufCopy(t, t5Path, filepath.Join(base, "models", "text_encoders", "t5xxl_tiny.gguf"))
	dir := filepath.Join(base, "models", "tokenizers", "clip")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	merges := "#version: 0.2\nc a\nca t</w>\np h\no t\no </w>\nph ot\nphot o</w>\n"
	if err := os.WriteFile(filepath.Join(dir, "bpe_simple_vocab_16e6.txt"), []byte(merges), 0o644); err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(base, "models", "tokenizers", "t5")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, t5.TokenizerJSON), sd.TinyT5TokenizerJSON(), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := folders.New(folders.Options{BaseDir: base})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return Options{Models: p, Memory: memory.New(memory.Options{RAMBudget: -1}), Runtime: rt,
		Dirs: nodes.Dirs{Output: filepath.Join(base, "output")}}
}

// ggufCopy writes a safetensors file's tensors into a GGUF file (F16), as ComfyUI-GGUF's
// converter keeps the names.
func ggufCopy(t *testing.T, from, to string) {
	t.Helper()
	src, err := tensorfile.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var ts []gguf.WriteTensor
	for _, info := range src.Tensors() {
		tn, err := src.Tensor(info.Name)
		if err != nil {
			t.Fatal(err)
		}
		dims := make([]uint64, len(info.Shape))
		for i, d := range info.Shape {
			dims[len(dims)-1-i] = uint64(d)
		}
		ts = append(ts, gguf.WriteTensor{Name: info.Name, Type: gguf.TypeF16, Dims: dims, Data: tn.Data})
	}
	f, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := gguf.Write(f, nil, ts); err != nil {
		t.Fatal(err)
	}
}

func asLatent(t *testing.T, v any) *sd.Latent {
	t.Helper()
	l, ok := v.(*sd.Latent)
	if !ok {
		t.Fatalf("%T is not a LATENT", v)
	}
	return l
}

func condShape(t *testing.T, c sd.Conditioning, tokens, width, pooled int) {
	t.Helper()
	if len(c) != 1 {
		t.Fatalf("%d entries", len(c))
	}
	if s := c[0].Embedding.Shape(); !slices.Equal(s, []int{1, tokens, width}) {
		t.Errorf("conditioning %v, want [1 %d %d]", s, tokens, width)
	}
	if s := c[0].Pooled.Shape(); !slices.Equal(s, []int{1, pooled}) {
		t.Errorf("pooled %v, want [1 %d]", s, pooled)
	}
}

// TestSD3Workflow is ComfyUI's SD3 example graph on the tiny checkpoint:
// CheckpointLoaderSimple, CLIPTextEncode, EmptySD3LatentImage, ModelSamplingSD3,
// KSampler, VAEDecode; then the same with TripleCLIPLoader and UNETLoader.
func TestSD3Workflow(t *testing.T) {
	opts := newSD3Models(t)
	r := newTestRegistry(t, opts)
	out := mustNode(t, r, "CheckpointLoaderSimple", nodes.Inputs{"ckpt_name": "sd3_tiny.safetensors"})
	model, clipv, vaev := out[0].(*sd.Model), out[1].(*sd.CLIP), out[2].(*sd.VAE)
	if _, ok := model.Net.(sd.MMDiTNetwork); !ok || clipv.Kind != sd.CLIPSD3 || clipv.T5 == nil || vaev.Latent != sd.SD3Latent {
		t.Fatalf("checkpoint: network %T, CLIP kind %v T5 %v, VAE latent %v", model.Net, clipv.Kind, clipv.T5, vaev.Latent)
	}
	pos := mustNode(t, r, "CLIPTextEncode", nodes.Inputs{"text": "a (photo:1.2) of a cat", "clip": clipv})[0].(sd.Conditioning)
	neg := mustNode(t, r, "CLIPTextEncode", nodes.Inputs{"text": "", "clip": clipv})[0].(sd.Conditioning)
	condShape(t, pos, 77+77, 4096, 128)
	lat := asLatent(t, mustNode(t, r, "EmptySD3LatentImage", nodes.Inputs{"width": int64(64), "height": int64(48), "batch_size": int64(2)})[0])
	if s := lat.Samples.Shape(); !slices.Equal(s, []int{2, 16, 6, 8}) {
		t.Fatalf("EmptySD3LatentImage %v", s)
	}
	shifted := mustNode(t, r, "ModelSamplingSD3", nodes.Inputs{"model": model, "shift": 3.0})[0].(*sd.Model)
	if shifted.Sampling.Prediction() != sampling.Flow || shifted.Sampling.Timestep(0.25) != 250 {
		t.Fatalf("ModelSamplingSD3: %v, timestep(0.25) %v", shifted.Sampling.Prediction(), shifted.Sampling.Timestep(0.25))
	}
	sample := func(m *sd.Model, pos, neg sd.Conditioning) *sd.Latent {
		t.Helper()
		return asLatent(t, mustNode(t, r, "KSampler", nodes.Inputs{
			"model": m, "seed": int64(7), "steps": int64(2), "cfg": 4.5, "sampler_name": "euler",
			"scheduler": "sgm_uniform", "positive": pos, "negative": neg, "latent_image": lat, "denoise": 1.0,
		})[0])
	}
	sampled := sample(shifted, pos, neg)
	img := mustNode(t, r, "VAEDecode", nodes.Inputs{"samples": sampled, "vae": vaev})[0].(*Image)
	if img.Batch != 2 || img.Height != 12 || img.Width != 16 {
		t.Fatalf("image %v", img.Shape())
	}
	allFinite(t, "image", img.Pix)

	// The same graph from the part files: TripleCLIPLoader and UNETLoader.
	triple := mustNode(t, r, "TripleCLIPLoader", nodes.Inputs{"clip_name1": "clip_l.safetensors", "clip_name2": "clip_g.safetensors", "clip_name3": "t5xxl_tiny.safetensors"})[0].(*sd.CLIP)
	if triple.Kind != sd.CLIPSD3 || len(triple.Encoders) != 2 || triple.T5 == nil || triple.T5.Tokenizer == nil {
		t.Fatalf("TripleCLIPLoader: kind %v, %d CLIP encoders, T5 %v", triple.Kind, len(triple.Encoders), triple.T5)
	}
	unet := mustNode(t, r, "UNETLoader", nodes.Inputs{"unet_name": "sd3_tiny_mmdit.safetensors", "weight_dtype": "default"})[0].(*sd.Model)
	p2 := mustNode(t, r, "CLIPTextEncode", nodes.Inputs{"text": "a photo of a cat", "clip": triple})[0].(sd.Conditioning)
	n2 := mustNode(t, r, "CLIPTextEncode", nodes.Inputs{"text": "", "clip": triple})[0].(sd.Conditioning)
	v, err := sample(unet, p2, n2).Samples.Float32()
	if err != nil {
		t.Fatal(err)
	}
	allFinite(t, "UNETLoader samples", v)
	fp8 := mustNode(t, r, "UNETLoader", nodes.Inputs{"unet_name": "sd3_tiny_mmdit.safetensors", "weight_dtype": "fp8_e4m3fn"})[0].(*sd.Model)
	if fp8 == unet {
		t.Error("UNETLoader fp8 returned the cached default-dtype model")
	}
}

// TestSD3TextEncoderNodes covers the text encoder loaders and prompt nodes: each
// loader's combination, CLIPTextEncodeSD3's empty padding, CLIPTextEncodeFlux's
// guidance, T5TokenizerOptions, the GGUF loaders and the refusals.
func TestSD3TextEncoderNodes(t *testing.T) {
	opts := newSD3Models(t)
	r := newTestRegistry(t, opts)
	triple := mustNode(t, r, "TripleCLIPLoader", nodes.Inputs{"clip_name1": "t5xxl_tiny.safetensors", "clip_name2": "clip_l.safetensors", "clip_name3": "clip_g.safetensors"})[0].(*sd.CLIP)
	enc := func(l, g, t5x, padding string) sd.Conditioning {
		t.Helper()
		return mustNode(t, r, "CLIPTextEncodeSD3", nodes.Inputs{"clip": triple, "clip_l": l, "clip_g": g, "t5xxl": t5x, "empty_padding": padding})[0].(sd.Conditioning)
	}
	condShape(t, enc("a cat", "a dog", "a red tree", "none"), 77+77, 4096, 128)
	condShape(t, enc("", "", "a red tree", "none"), 77, 4096, 2048) // no CLIP tokens: T5 alone, zero pooled
	condShape(t, enc("", "", "", "none"), 1, 4096, 2048)            // T5's empty sequence is its end token
	condShape(t, enc("", "", "", "empty_prompt"), 77+77, 4096, 128) // empty prompts encoded
	condShape(t, enc("a cat", "", "", "none"), 77+1, 4096, 128)     // CLIP-G padded with the empty prompt
	long := strings.Repeat("a photo of a cat ", 30)                 // over 77 tokens: several windows
	toks, err := triple.Tokenize(long)
	if err != nil {
		t.Fatal(err)
	}
	if len(toks["l"]) < 2 {
		t.Fatalf("%d windows", len(toks["l"]))
	}
	// CLIP-G's one window is padded with empty-prompt windows to CLIP-L's count.
	condShape(t, enc(long, "a dog", "a cat", "none"), 77*len(toks["l"])+77, 4096, 128)

	// CLIPLoader sd3 with one file; the GGUF loader with a .gguf T5.
	single := mustNode(t, r, "CLIPLoader", nodes.Inputs{"clip_name": "clip_g.safetensors", "type": "sd3"})[0].(*sd.CLIP)
	// A lone CLIP-G: 768 zeros before its states and before its pooled output.
	lone := mustNode(t, r, "CLIPTextEncode", nodes.Inputs{"text": "a cat", "clip": single})[0].(sd.Conditioning)
	condShape(t, lone, 77, 4096, 768+64)
	lv, _ := lone[0].Embedding.Float32()
	pv, _ := lone[0].Pooled.Float32()
	for i := 0; i < 768; i++ {
		if lv[i] != 0 || pv[i] != 0 || lv[4096+i] != 0 {
			t.Fatalf("lone CLIP-G: feature %d is %v / pooled %v, want 0", i, lv[i], pv[i])
		}
	}
	s, _ := r.Schema("CLIPLoaderGGUF")
	in, _ := s.Input("clip_name")
	if got, want := in.Choices(), []string{"clip_g.safetensors", "clip_l.safetensors", "t5xxl_tiny.gguf", "t5xxl_tiny.safetensors"}; !slices.Equal(got, want) {
		t.Errorf("CLIPLoaderGGUF files %q, want %q", got, want)
	}
	s, _ = r.Schema("CLIPLoader")
	in, _ = s.Input("clip_name")
	if slices.Contains(in.Choices(), "t5xxl_tiny.gguf") {
		t.Error("CLIPLoader lists a .gguf file")
	}
	gt5 := mustNode(t, r, "CLIPLoaderGGUF", nodes.Inputs{"clip_name": "t5xxl_tiny.gguf", "type": "sd3"})[0].(*sd.CLIP)
	st5 := mustNode(t, r, "CLIPLoader", nodes.Inputs{"clip_name": "t5xxl_tiny.safetensors", "type": "sd3"})[0].(*sd.CLIP)
	a := mustNode(t, r, "CLIPTextEncode", nodes.Inputs{"text": "a red cat", "clip": gt5})[0].(sd.Conditioning)
	b := mustNode(t, r, "CLIPTextEncode", nodes.Inputs{"text": "a red cat", "clip": st5})[0].(sd.Conditioning)
	av, _ := a[0].Embedding.Float32()
	bv, _ := b[0].Embedding.Float32()
	if len(av) != len(bv) {
		t.Fatalf("GGUF T5 %d values, safetensors %d", len(av), len(bv))
	}
	for i := range av {
		if av[i] != bv[i] {
			t.Fatalf("GGUF T5 differs from the same F16 weights in safetensors at %d: %v vs %v", i, av[i], bv[i])
		}
	}
	mustNode(t, r, "TripleCLIPLoaderGGUF", nodes.Inputs{"clip_name1": "clip_l.safetensors", "clip_name2": "clip_g.safetensors", "clip_name3": "t5xxl_tiny.gguf"})
	if _, err := nodeRun(t, r, nil, "CLIPLoader", nodes.Inputs{"clip_name": "t5xxl_tiny.gguf", "type": "sd3"}); err == nil || !strings.Contains(err.Error(), "GGUF") {
		t.Errorf("CLIPLoader on a GGUF file: %v", err)
	}

	// Flux: CLIP-L + T5, 256 tokens, guidance on the entry; T5TokenizerOptions.
	flux := mustNode(t, r, "DualCLIPLoader", nodes.Inputs{"clip_name1": "clip_l.safetensors", "clip_name2": "t5xxl_tiny.safetensors", "type": "flux"})[0].(*sd.CLIP)
	// The cache: the same files again are a hit; a changed second file loads again.
	fluxIn := nodes.Inputs{"clip_name1": "clip_l.safetensors", "clip_name2": "t5xxl_tiny.safetensors", "type": "flux"}
	if again := mustNode(t, r, "DualCLIPLoader", fluxIn)[0].(*sd.CLIP); again.T5.Encoder != flux.T5.Encoder {
		t.Error("loading the same files again did not hit the model cache")
	}
	t5File := filepath.Join(opts.Models.BaseDir(), "models", "clip", "t5xxl_tiny.safetensors")
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(t5File, later, later); err != nil {
		t.Fatal(err)
	}
	if again := mustNode(t, r, "DualCLIPLoader", fluxIn)[0].(*sd.CLIP); again.T5.Encoder == flux.T5.Encoder {
		t.Error("a changed T5 file came from the cache")
	}
	fc := mustNode(t, r, "CLIPTextEncodeFlux", nodes.Inputs{"clip": flux, "clip_l": "a cat", "t5xxl": "a photo of a cat", "guidance": 2.5})[0].(sd.Conditioning)
	condShape(t, fc, 256, 4096, 64)
	if g := fc[0].Guidance; g == nil || *g != 2.5 {
		t.Errorf("guidance %v, want 2.5", g)
	}
	short := mustNode(t, r, "T5TokenizerOptions", nodes.Inputs{"clip": flux, "min_padding": int64(2), "min_length": int64(0)})[0].(*sd.CLIP)
	// "a photo of a cat": 5 pieces, </s>, 2 pads.
	condShape(t, mustNode(t, r, "CLIPTextEncode", nodes.Inputs{"clip": short, "text": "a photo of a cat"})[0].(sd.Conditioning), 8, 4096, 64)
	if flux.T5.Options != nil {
		t.Error("T5TokenizerOptions changed its input CLIP")
	}
	sdxl := mustNode(t, r, "DualCLIPLoader", nodes.Inputs{"clip_name1": "clip_g.safetensors", "clip_name2": "clip_l.safetensors", "type": "sdxl"})[0].(*sd.CLIP)
	condShape(t, mustNode(t, r, "CLIPTextEncode", nodes.Inputs{"clip": sdxl, "text": "a cat"})[0].(sd.Conditioning), 77, 128, 64)

	for _, tc := range []struct {
		class string
		in    nodes.Inputs
		want  string
	}{
		{"DualCLIPLoader", nodes.Inputs{"clip_name1": "clip_l.safetensors", "clip_name2": "clip_g.safetensors", "type": "flux"}, "CLIP-L and T5"},
		{"DualCLIPLoader", nodes.Inputs{"clip_name1": "clip_l.safetensors", "clip_name2": "clip_g.safetensors", "type": "hidream"}, "hidream"},
		{"DualCLIPLoader", nodes.Inputs{"clip_name1": "clip_l.safetensors", "clip_name2": "clip_l.safetensors", "type": "sd3"}, "second CLIP-L"},
		{"TripleCLIPLoader", nodes.Inputs{"clip_name1": "clip_l.safetensors", "clip_name2": "clip_g.safetensors", "clip_name3": "nope.safetensors"}, "not found"},
		{"CLIPLoader", nodes.Inputs{"clip_name": "t5xxl_tiny.safetensors", "type": "wan"}, "T5"},
		{"TripleCLIPLoader", nodes.Inputs{"clip_name1": "../clip_l.safetensors", "clip_name2": "clip_g.safetensors", "clip_name3": "t5xxl_tiny.safetensors"}, "invalid model name"},
	} {
		_, err := nodeRun(t, r, nil, tc.class, tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %v: %v, want an error saying %q", tc.class, tc.in, err, tc.want)
		}
	}
	var nf *sd.UnsupportedError
	_, err = nodeRun(t, r, nil, "DualCLIPLoader", nodes.Inputs{"clip_name1": "clip_l.safetensors", "clip_name2": "clip_g.safetensors", "type": "flux"})
	if !errors.As(err, &nf) {
		t.Errorf("wrong Flux files: %T, want an sd.UnsupportedError", err)
	}
}

// TestSD3ModelPatchNodes checks what the model patch nodes set: SLG's layer lists and
// sigma range from the model's sampling, CFGNorm's strength, AuraFlow's multiplier, and
// that no layers leaves the model as it is.
func TestSD3ModelPatchNodes(t *testing.T) {
	opts := newSD3Models(t)
	r := newTestRegistry(t, opts)
	m := mustNode(t, r, "UNETLoader", nodes.Inputs{"unet_name": "sd3_tiny_mmdit.safetensors", "weight_dtype": "default"})[0].(*sd.Model)
	slg := mustNode(t, r, "SkipLayerGuidanceDiT", nodes.Inputs{"model": m, "double_layers": "1", "single_layers": "", "scale": 3.0,
		"start_percent": 0.01, "end_percent": 0.15, "rescaling_scale": 0.5})[0].(*sd.Model)
	if len(slg.PostCFG) != 1 || len(m.PostCFG) != 0 {
		t.Fatalf("post-CFG functions %d (input model %d)", len(slg.PostCFG), len(m.PostCFG))
	}
	got := slg.PostCFG[0].(sd.SkipLayerGuidance)
	if !slices.Equal(got.Double, []int{1}) || got.Scale != 3 || got.Rescale != 0.5 ||
		got.SigmaStart != m.Sampling.PercentToSigma(0.01) || got.SigmaEnd != m.Sampling.PercentToSigma(0.15) {
		t.Errorf("SkipLayerGuidance %+v", got)
	}
	same := mustNode(t, r, "SkipLayerGuidanceDiT", nodes.Inputs{"model": m, "double_layers": "", "single_layers": " , ", "scale": 3.0,
		"start_percent": 0.01, "end_percent": 0.15, "rescaling_scale": 0.0})[0].(*sd.Model)
	if same != m {
		t.Error("SkipLayerGuidanceDiT without layers patched the model")
	}
	simple := mustNode(t, r, "SkipLayerGuidanceDiTSimple", nodes.Inputs{"model": m, "double_layers": "0, 1", "single_layers": "", "start_percent": 0.0, "end_percent": 1.0})[0].(*sd.Model)
	if s, ok := simple.CondBatch.(sd.SkipLayerGuidanceSimple); !ok || !slices.Equal(s.Double, []int{0, 1}) {
		t.Errorf("SkipLayerGuidanceDiTSimple set %+v", simple.CondBatch)
	}
	norm := mustNode(t, r, "CFGNorm", nodes.Inputs{"model": slg, "strength": 0.9})[0].(*sd.Model)
	if len(norm.PostCFG) != 2 || norm.PostCFG[1].(sd.CFGNorm).Strength != 0.9 {
		t.Errorf("CFGNorm post-CFG functions %+v", norm.PostCFG)
	}
	aura := mustNode(t, r, "ModelSamplingAuraFlow", nodes.Inputs{"model": m, "shift": 1.73})[0].(*sd.Model)
	// Multiplier 1: timesteps are sigmas; σ(t) = shift·t / (1 + (shift−1)·t).
	if ts := aura.Sampling.Timestep(0.5); ts != 0.5 {
		t.Errorf("AuraFlow timestep(0.5) = %v", ts)
	}
	if s, want := aura.Sampling.Sigma(0.5), 1.73*0.5/(1+0.73*0.5); math.Abs(float64(s)-want) > 1e-6 {
		t.Errorf("AuraFlow sigma(0.5) = %v, want %v", s, want)
	}
	if _, err := nodeRun(t, r, nil, "UNETLoader", nodes.Inputs{"unet_name": "sd3_tiny_mmdit.safetensors", "weight_dtype": "int4"}); err == nil {
		t.Error("weight_dtype int4 accepted")
	}
}

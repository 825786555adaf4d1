package builtin

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/nodes"
	"github.com/forgeflow/forgeflow/weights/detect"
	"github.com/forgeflow/forgeflow/weights/folders"
	"github.com/forgeflow/forgeflow/weights/memory"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// sdModels is a models folder with tiny random checkpoints of each family, a CLIP
// vocabulary in models/tokenizers/clip, a VAE and a CLIP-L text encoder file.
type sdModels struct {
	base string
	opts Options
}

func writeRandom(t *testing.T, path string, s sd.RandomSpec) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.WriteRandomCheckpoint(f, s); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func newSDModels(t *testing.T, vocab bool) *sdModels {
	t.Helper()
	base := t.TempDir()
	sd1 := sd.TinyRandomSpec(detect.FamilySD1)
	sd2 := sd.TinyRandomSpec(detect.FamilySD2)
	sd2.VPrediction = true
	xl := sd.TinyRandomSpec(detect.FamilySDXL)
	writeRandom(t, filepath.Join(base, "models", "checkpoints", "sd15_tiny.safetensors"), sd1)
	writeRandom(t, filepath.Join(base, "models", "checkpoints", "sub", "sd2v_tiny.safetensors"), sd2)
	writeRandom(t, filepath.Join(base, "models", "checkpoints", "sdxl_tiny.safetensors"), xl)
	writeRandom(t, filepath.Join(base, "models", "checkpoints", "sdxl_refiner_tiny.safetensors"), sd.TinyRandomSpec(detect.FamilySDXLRefiner))
	// A VAE file and a CLIP-L file: the SD1 checkpoint's parts under their own names.
	ts, err := sd1.Tensors()
	if err != nil {
		t.Fatal(err)
	}
	var vaeTs, clipTs []sd.RandomTensor
	for _, x := range ts {
		if name, ok := strings.CutPrefix(x.Name, "first_stage_model."); ok {
			x.Name = name
			vaeTs = append(vaeTs, x)
		}
		if name, ok := strings.CutPrefix(x.Name, "cond_stage_model.transformer."); ok {
			x.Name = name
			clipTs = append(clipTs, x)
		}
	}
	for _, f := range []struct {
		path string
		ts   []sd.RandomTensor
	}{{filepath.Join(base, "models", "vae", "tiny_vae.safetensors"), vaeTs}, {filepath.Join(base, "models", "text_encoders", "clip_l_tiny.safetensors"), clipTs}} {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if err := sd.WriteRandomTensors(out, f.ts, 7, ""); err != nil {
			t.Fatal(err)
		}
		out.Close()
	}
	if vocab {
		dir := filepath.Join(base, "models", "tokenizers", "clip")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		merges := "#version: 0.2\nc a\nca t</w>\np h\no t\no </w>\nph ot\nphot o</w>\n"
		if err := os.WriteFile(filepath.Join(dir, "bpe_simple_vocab_16e6.txt"), []byte(merges), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p, err := folders.New(folders.Options{BaseDir: base})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &sdModels{base: base, opts: Options{
		Models: p, Memory: memory.New(memory.Options{RAMBudget: -1}), Runtime: rt,
		Dirs: nodes.Dirs{Output: filepath.Join(base, "output")},
	}}
}

func nodeRun(t *testing.T, r *nodes.Registry, env *nodes.Env, class string, in nodes.Inputs) ([]any, error) {
	t.Helper()
	n, err := r.Lookup(class)
	if err != nil {
		t.Fatal(err)
	}
	if env == nil {
		env = &nodes.Env{}
	}
	res, err := n.Run(context.Background(), env, in)
	if err != nil {
		return nil, err
	}
	if len(res.Outputs) != len(n.Schema().Outputs) {
		t.Fatalf("%s returned %d outputs, schema has %d", class, len(res.Outputs), len(n.Schema().Outputs))
	}
	return res.Outputs, nil
}

func mustNode(t *testing.T, r *nodes.Registry, class string, in nodes.Inputs) []any {
	t.Helper()
	out, err := nodeRun(t, r, nil, class, in)
	if err != nil {
		t.Fatalf("%s: %v", class, err)
	}
	return out
}

func allFinite(t *testing.T, what string, v []float32) {
	t.Helper()
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			t.Fatalf("%s[%d] = %v", what, i, x)
		}
	}
}

// TestCheckpointLoaderSimpleFamilies loads each family's tiny checkpoint through the
// node, encodes a prompt with CLIPTextEncode, samples two steps with KSampler and
// decodes with VAEDecode.
func TestCheckpointLoaderSimpleFamilies(t *testing.T) {
	m := newSDModels(t, true)
	r := newTestRegistry(t, m.opts)
	s, _ := r.Schema("CheckpointLoaderSimple")
	in, _ := s.Input("ckpt_name")
	if got, want := in.Choices(), []string{"sd15_tiny.safetensors", "sdxl_refiner_tiny.safetensors", "sdxl_tiny.safetensors", "sub/sd2v_tiny.safetensors"}; !slices.Equal(got, want) {
		t.Fatalf("ckpt_name choices %q, want %q", got, want)
	}
	tests := []struct {
		name   string
		pred   sampling.Prediction
		latent sd.LatentFormat
	}{
		{"sd15_tiny.safetensors", sampling.EPS, sd.SD15Latent},
		{"sub/sd2v_tiny.safetensors", sampling.VPrediction, sd.SD15Latent},
		{"sdxl_tiny.safetensors", sampling.EPS, sd.SDXLLatent},
		{"sdxl_refiner_tiny.safetensors", sampling.EPS, sd.SDXLLatent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := mustNode(t, r, "CheckpointLoaderSimple", nodes.Inputs{"ckpt_name": tc.name})
			model, clipv, vaev := out[0].(*sd.Model), out[1].(*sd.CLIP), out[2].(*sd.VAE)
			if model.Sampling.Prediction() != tc.pred || model.Latent != tc.latent {
				t.Fatalf("model samples %v in %v, want %v in %v", model.Sampling.Prediction(), model.Latent, tc.pred, tc.latent)
			}
			again := mustNode(t, r, "CheckpointLoaderSimple", nodes.Inputs{"ckpt_name": tc.name})
			if again[0].(*sd.Model) != model {
				t.Error("loading the same file again did not hit the model cache")
			}
			pos := mustNode(t, r, "CLIPTextEncode", nodes.Inputs{"text": "a (photo:1.1) of a cat", "clip": clipv})[0]
			neg := mustNode(t, r, "CLIPTextEncode", nodes.Inputs{"text": "", "clip": clipv})[0]
			lat := mustNode(t, r, "EmptyLatentImage", nodes.Inputs{"width": int64(64), "height": int64(64), "batch_size": int64(1)})[0]
			sampled := mustNode(t, r, "KSampler", nodes.Inputs{
				"model": model, "seed": int64(1), "steps": int64(2), "cfg": 4.0, "sampler_name": "euler",
				"scheduler": "normal", "positive": pos, "negative": neg, "latent_image": lat, "denoise": 1.0,
			})[0].(*sd.Latent)
			img := mustNode(t, r, "VAEDecode", nodes.Inputs{"samples": sampled, "vae": vaev})[0].(*Image)
			// The tiny VAE upsamples by 2; EmptyLatentImage makes 8×8 cells.
			if img.Batch != 1 || img.Height != 16 || img.Width != 16 || img.Channels != 3 {
				t.Fatalf("image %v", img.Shape())
			}
			allFinite(t, "image", img.Pix)
		})
	}
}

// TestVAENodes runs the VAE nodes on the SD1 checkpoint's VAE and the VAE file:
// encode/decode shapes, tiled against whole-image results, pixel_space.
func TestVAENodes(t *testing.T) {
	m := newSDModels(t, false)
	r := newTestRegistry(t, m.opts)
	s, _ := r.Schema("VAELoader")
	in, _ := s.Input("vae_name")
	if got, want := in.Choices(), []string{"tiny_vae.safetensors", "pixel_space"}; !slices.Equal(got, want) {
		t.Fatalf("vae_name choices %q, want %q", got, want)
	}
	v := mustNode(t, r, "VAELoader", nodes.Inputs{"vae_name": "tiny_vae.safetensors"})[0].(*sd.VAE)
	rt := m.opts.Runtime
	lv := make([]float32, 4*40*40)
	for i := range lv {
		lv[i] = float32(math.Sin(float64(i)*0.37)) * 0.8
	}
	z, _ := rt.FromFloat32(lv, 1, 4, 40, 40)
	lat := &sd.Latent{Samples: z}
	full := mustNode(t, r, "VAEDecode", nodes.Inputs{"samples": lat, "vae": v})[0].(*Image)
	tiled := mustNode(t, r, "VAEDecodeTiled", nodes.Inputs{"samples": lat, "vae": v, "tile_size": int64(64),
		"overlap": int64(64), "temporal_size": int64(64), "temporal_overlap": int64(8)})[0].(*Image)
	if !slices.Equal(full.Shape(), []int{1, 80, 80, 3}) || !slices.Equal(tiled.Shape(), full.Shape()) {
		t.Fatalf("decoded %v, tiled %v", full.Shape(), tiled.Shape())
	}
	var diff float64
	for i := range full.Pix {
		diff += math.Abs(float64(full.Pix[i] - tiled.Pix[i]))
	}
	diff /= float64(len(full.Pix))
	t.Logf("VAEDecodeTiled: mean |Δ| %.4f against VAEDecode", diff)
	if diff == 0 || diff > 0.1 {
		t.Errorf("tiled decode differs from the full one by %.4f on average", diff)
	}

	enc := mustNode(t, r, "VAEEncode", nodes.Inputs{"pixels": full, "vae": v})[0].(*sd.Latent)
	encT := mustNode(t, r, "VAEEncodeTiled", nodes.Inputs{"pixels": full, "vae": v, "tile_size": int64(64),
		"overlap": int64(16), "temporal_size": int64(64), "temporal_overlap": int64(8)})[0].(*sd.Latent)
	if !slices.Equal(enc.Samples.Shape(), []int{1, 4, 40, 40}) || !slices.Equal(encT.Samples.Shape(), enc.Samples.Shape()) {
		t.Fatalf("encoded %v, tiled %v", enc.Samples.Shape(), encT.Samples.Shape())
	}
	ev, _ := encT.Samples.Float32()
	allFinite(t, "tiled latent", ev)

	ps := mustNode(t, r, "VAELoader", nodes.Inputs{"vae_name": "pixel_space"})[0].(*sd.VAE)
	pl := mustNode(t, r, "VAEEncode", nodes.Inputs{"pixels": full, "vae": ps})[0].(*sd.Latent)
	back := mustNode(t, r, "VAEDecode", nodes.Inputs{"samples": pl, "vae": ps})[0].(*Image)
	for i := range full.Pix {
		if math.Abs(float64(back.Pix[i]-full.Pix[i])) > 1e-6 {
			t.Fatalf("pixel_space round trip [%d]: %v, want %v", i, back.Pix[i], full.Pix[i])
		}
	}
	// A latent of the wrong width for the VAE.
	bad, _ := rt.FromFloat32(make([]float32, 3*4*4), 1, 3, 4, 4)
	if _, err := nodeRun(t, r, nil, "VAEDecode", nodes.Inputs{"samples": &sd.Latent{Samples: bad}, "vae": v}); err == nil || !strings.Contains(err.Error(), "channels") {
		t.Errorf("a 3-channel latent: %v", err)
	}
}

func TestCLIPLoaderNode(t *testing.T) {
	m := newSDModels(t, true)
	r := newTestRegistry(t, m.opts)
	c := mustNode(t, r, "CLIPLoader", nodes.Inputs{"clip_name": "clip_l_tiny.safetensors", "type": "stable_diffusion"})[0].(*sd.CLIP)
	if len(c.Encoders) != 1 || c.Encoders[0].Name != "l" {
		t.Fatalf("encoders %v", c.Encoders)
	}
	cond := mustNode(t, r, "CLIPTextEncode", nodes.Inputs{"text": "a cat", "clip": c})[0].(sd.Conditioning)
	if s := cond[0].Embedding.Shape(); !slices.Equal(s, []int{1, 77, 64}) {
		t.Errorf("embedding %v", s)
	}
	_, err := nodeRun(t, r, nil, "CLIPLoader", nodes.Inputs{"clip_name": "clip_l_tiny.safetensors", "type": "wan"})
	var ue *sd.UnsupportedError
	if !errors.As(err, &ue) {
		t.Errorf("type wan: %v, want an UnsupportedError", err)
	}
}

// TestLoaderErrors: what a user sees for a missing file, a broken file and a missing
// vocabulary.
func TestLoaderErrors(t *testing.T) {
	m := newSDModels(t, false)
	broken := filepath.Join(m.base, "models", "checkpoints", "broken.safetensors")
	if err := os.WriteFile(broken, []byte("\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A checkpoint without VAE tensors.
	ts, err := sd.TinyRandomSpec(detect.FamilySD1).Tensors()
	if err != nil {
		t.Fatal(err)
	}
	var noVAE []sd.RandomTensor
	for _, x := range ts {
		if !strings.HasPrefix(x.Name, "first_stage_model.") {
			noVAE = append(noVAE, x)
		}
	}
	nf, err := os.Create(filepath.Join(m.base, "models", "checkpoints", "novae.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.WriteRandomTensors(nf, noVAE, 1, ""); err != nil {
		t.Fatal(err)
	}
	nf.Close()
	r := newTestRegistry(t, m.opts)
	nv := mustNode(t, r, "CheckpointLoaderSimple", nodes.Inputs{"ckpt_name": "novae.safetensors"})
	z, _ := m.opts.Runtime.FromFloat32(make([]float32, 4*4*4), 1, 4, 4, 4)
	if _, err := nodeRun(t, r, nil, "VAEDecode", nodes.Inputs{"samples": &sd.Latent{Samples: z}, "vae": nv[2]}); err == nil || !strings.Contains(err.Error(), "does not contain a valid VAE") {
		t.Errorf("VAEDecode with a checkpoint's missing VAE: %v", err)
	}
	if _, err := nodeRun(t, r, nil, "CheckpointLoaderSimple", nodes.Inputs{"ckpt_name": "absent.safetensors"}); !errors.Is(err, folders.ErrNotFound) {
		t.Errorf("absent checkpoint: %v", err)
	}
	if _, err := nodeRun(t, r, nil, "CheckpointLoaderSimple", nodes.Inputs{"ckpt_name": "broken.safetensors"}); err == nil || !strings.Contains(err.Error(), "broken.safetensors") {
		t.Errorf("broken checkpoint: %v", err)
	}
	out := mustNode(t, r, "CheckpointLoaderSimple", nodes.Inputs{"ckpt_name": "sd15_tiny.safetensors"})
	_, err = nodeRun(t, r, nil, "CLIPTextEncode", nodes.Inputs{"text": "a cat", "clip": out[1]})
	var me *sd.MissingVocabError
	if !errors.As(err, &me) || !strings.Contains(err.Error(), filepath.Join(m.base, "models", "tokenizers", "clip")) {
		t.Errorf("no vocabulary: %v", err)
	}
	bare := newTestRegistry(t, Options{})
	if _, err := nodeRun(t, bare, nil, "CheckpointLoaderSimple", nodes.Inputs{"ckpt_name": "x.safetensors"}); err == nil {
		t.Error("a checkpoint loaded without model folders")
	}
}

func TestCheckpointSaveNode(t *testing.T) {
	m := newSDModels(t, false)
	r := newTestRegistry(t, m.opts)
	out := mustNode(t, r, "CheckpointLoaderSimple", nodes.Inputs{"ckpt_name": "sd15_tiny.safetensors"})
	env := &nodes.Env{Prompt: nil, ExtraPNGInfo: map[string]any{"workflow": map[string]any{"nodes": []any{}}}}
	for i := 0; i < 2; i++ {
		if _, err := nodeRun(t, r, env, "CheckpointSave", nodes.Inputs{"model": out[0], "clip": out[1], "vae": out[2], "filename_prefix": "checkpoints/ComfyUI"}); err != nil {
			t.Fatal(err)
		}
	}
	saved := filepath.Join(m.opts.Dirs.Output, "checkpoints", "ComfyUI_00002_.safetensors")
	f, err := safetensors.Open(saved)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	md := f.Metadata()
	if md["prompt"] != "" || md["workflow"] != `{"nodes": []}` || md["modelspec.predict_key"] != "epsilon" {
		t.Errorf("metadata %v", md)
	}
	rt := m.opts.Runtime
	ck, err := sd.LoadCheckpoint(rt, saved, sd.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	if ck.Family != detect.FamilySD1 {
		t.Errorf("saved checkpoint loads as %s", ck.Family)
	}
	orig, err := safetensors.Open(filepath.Join(m.base, "models", "checkpoints", "sd15_tiny.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	if len(f.Tensors()) != len(orig.Tensors()) {
		t.Errorf("saved %d tensors, the source has %d", len(f.Tensors()), len(orig.Tensors()))
	}
}

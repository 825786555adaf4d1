package builtin

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/nodes"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/detect"
	"github.com/forgeflow/forgeflow/weights/folders"
	"github.com/forgeflow/forgeflow/weights/safetensors"
	"github.com/forgeflow/forgeflow/weights/torch/torchtest"
)

// Inference configs in the layout of the original repositories' files (written here,
// not copied): only the keys ComfyUI's load_checkpoint reads, plus some it ignores.
var testConfigs = map[string]string{
	"v2-v.yaml": `model:
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    parameterization: "v"
    linear_start: 0.00085
    cond_stage_config:
      params:
        layer: "penultimate"
`,
	"skip2.yaml": `model:
  params:
    scale_factor: 0.18215
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenCLIPEmbedder
      params:
        layer: "hidden"
        layer_idx: -2
`,
	"sub/plain.yaml":   "model:\n  params:\n    cond_stage_config:\n      target: x\n",
	"no_cond.yaml":     "model:\n  params:\n    parameterization: \"v\"\n",
	"no_params.yaml":   "model:\n  target: x\n",
	"garbage.yaml":     "model: [unclosed\n",
	"layer_pos.yaml":   "model:\n  params:\n    cond_stage_config:\n      params:\n        layer_idx: 3\n",
	"layer_str.yaml":   "model:\n  params:\n    cond_stage_config:\n      params:\n        layer_idx: last\n",
	"not_a_config.txt": "model: {}\n",
}

func TestCheckpointLoaderNode(t *testing.T) {
	m := newSDModels(t, false)
	for name, text := range testConfigs {
		p := filepath.Join(m.base, "models", "configs", filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := newTestRegistry(t, m.opts)
	s, _ := r.Schema("CheckpointLoader")
	in, _ := s.Input("config_name")
	want := []string{"garbage.yaml", "layer_pos.yaml", "layer_str.yaml", "no_cond.yaml", "no_params.yaml", "skip2.yaml", "sub/plain.yaml", "v2-v.yaml"}
	if got := in.Choices(); !slices.Equal(got, want) {
		t.Fatalf("config_name choices %q, want %q", got, want)
	}
	load := func(config, ckpt string) ([]any, error) {
		return nodeRun(t, r, nil, "CheckpointLoader", nodes.Inputs{"config_name": config, "ckpt_name": ckpt})
	}
	simple := mustNode(t, r, "CheckpointLoaderSimple", nodes.Inputs{"ckpt_name": "sd15_tiny.safetensors"})
	for _, tc := range []struct {
		config, ckpt string
		pred         sampling.Prediction
		layer        int
	}{
		{"v2-v.yaml", "sd15_tiny.safetensors", sampling.VPrediction, 0},
		{"skip2.yaml", "sd15_tiny.safetensors", sampling.EPS, -2},
		{"sub/plain.yaml", "sd15_tiny.safetensors", sampling.EPS, 0},
		// The config does not turn a v model into eps: only "v" changes anything.
		{"sub/plain.yaml", "sub/sd2v_tiny.safetensors", sampling.VPrediction, 0},
		{"skip2.yaml", "sdxl_tiny.safetensors", sampling.EPS, -2},
	} {
		t.Run(tc.config+"/"+tc.ckpt, func(t *testing.T) {
			out, err := load(tc.config, tc.ckpt)
			if err != nil {
				t.Fatal(err)
			}
			model, clip, vae := out[0].(*sd.Model), out[1].(*sd.CLIP), out[2].(*sd.VAE)
			if model.Sampling.Prediction() != tc.pred || clip.Layer != tc.layer || vae == nil {
				t.Fatalf("prediction %v layer %d, want %v %d", model.Sampling.Prediction(), clip.Layer, tc.pred, tc.layer)
			}
		})
	}
	// The cached checkpoint the simple loader shares is not changed by a config.
	again := mustNode(t, r, "CheckpointLoaderSimple", nodes.Inputs{"ckpt_name": "sd15_tiny.safetensors"})
	if again[0] != simple[0] || again[0].(*sd.Model).Sampling.Prediction() != sampling.EPS || again[1].(*sd.CLIP).Layer != 0 {
		t.Fatal("a config changed the cached checkpoint's parts")
	}
	// v-prediction through a config samples as ModelSamplingDiscrete v does.
	vOut, err := load("v2-v.yaml", "sd15_tiny.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	vModel := vOut[0].(*sd.Model)
	if got, want := vModel.Sampling.Sigma(500), sampling.NewSD(sampling.VPrediction).Sigma(500); got != want {
		t.Errorf("sigma(500) %v, want %v", got, want)
	}
	for _, tc := range []struct {
		config, ckpt, want string
		is                 error
	}{
		{"no_cond.yaml", "sd15_tiny.safetensors", "no model.params.cond_stage_config", nil},
		{"no_params.yaml", "sd15_tiny.safetensors", "no model.params section", nil},
		{"garbage.yaml", "sd15_tiny.safetensors", "garbage.yaml", nil},
		{"layer_pos.yaml", "sd15_tiny.safetensors", "only negative layers", nil},
		{"layer_str.yaml", "sd15_tiny.safetensors", "not an integer", nil},
		{"absent.yaml", "sd15_tiny.safetensors", "absent.yaml", folders.ErrNotFound},
		{"../configs/skip2.yaml", "sd15_tiny.safetensors", "", folders.ErrInvalidName},
		{"/etc/passwd", "sd15_tiny.safetensors", "", folders.ErrInvalidName},
		{"skip2.yaml", "../checkpoints/sd15_tiny.safetensors", "", folders.ErrInvalidName},
		{"skip2.yaml", "absent.safetensors", "", folders.ErrNotFound},
	} {
		t.Run("error/"+tc.config+"/"+tc.ckpt, func(t *testing.T) {
			_, err := load(tc.config, tc.ckpt)
			if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("error %v, want one with %q (%v)", err, tc.want, tc.is)
			}
		})
	}
}

// TestInstructPixToPixNodes loads a tiny InstructPix2Pix checkpoint (SD1 layout, 8
// input channels) with CheckpointLoaderSimple, checks InstructPixToPixConditioning's
// crop against ComfyUI's (tools/refpeer/ip2p_ref.py: what the node handed a recording
// VAE stub in ComfyUI 0.3.64, for a 21×30 batch of two), and samples through the node's
// outputs: the image latent reaches the UNet (another image, another result).
func TestInstructPixToPixNodes(t *testing.T) {
	m := newSDModels(t, true)
	spec := sd.TinyRandomSpec(detect.FamilySD1)
	spec.UNet.InChannels = 8
	writeRandom(t, filepath.Join(m.base, "models", "checkpoints", "ip2p_tiny.safetensors"), spec)
	r := newTestRegistry(t, m.opts)

	fx, err := safetensors.Open("testdata/ip2p_refpeer.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	defer fx.Close()
	read := func(name string) ([]float32, []int) {
		tn, err := fx.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		v, err := tn.Float32()
		if err != nil {
			t.Fatal(err)
		}
		var shape []int
		for _, d := range tn.Shape {
			shape = append(shape, int(d))
		}
		return v, shape
	}
	pv, ps := read("in.pixels")
	pixels := &Image{Batch: ps[0], Height: ps[1], Width: ps[2], Channels: ps[3], Pix: pv}
	cropped, err := cropToCell(pixels, 8)
	if err != nil {
		t.Fatal(err)
	}
	wv, ws := read("node.pixels")
	if !slices.Equal(cropped.Shape(), ws) || !slices.Equal(cropped.Pix, wv) {
		t.Fatalf("crop %v differs from ComfyUI's %v", cropped.Shape(), ws)
	}

	ck := mustNode(t, r, "CheckpointLoaderSimple", nodes.Inputs{"ckpt_name": "ip2p_tiny.safetensors"})
	model, clip, vae := ck[0].(*sd.Model), ck[1], ck[2].(*sd.VAE)
	if !model.IP2P {
		t.Fatal("the 8-channel checkpoint did not load as InstructPix2Pix")
	}
	pos := mustNode(t, r, "CLIPTextEncode", nodes.Inputs{"text": "a photo", "clip": clip})[0]
	neg := mustNode(t, r, "CLIPTextEncode", nodes.Inputs{"text": "", "clip": clip})[0]
	run := func(img *Image) []float32 {
		out := mustNode(t, r, "InstructPixToPixConditioning", nodes.Inputs{"positive": pos, "negative": neg, "vae": vae, "pixels": img})
		p, n, lat := out[0].(sd.Conditioning), out[1].(sd.Conditioning), out[2].(*sd.Latent)
		if img == pixels {
			want, err := vae.Encode(t.Context(), toVAEImage(cropped))
			if err != nil {
				t.Fatal(err)
			}
			got, _ := p[0].ConcatLatent.Float32()
			wantv, _ := want.Float32()
			if !slices.Equal(got, wantv) || n[0].ConcatLatent != p[0].ConcatLatent {
				t.Fatal("the conditionings do not carry the cropped image's latent")
			}
		}
		zv, _ := lat.Samples.Float32()
		if !slices.Equal(lat.Samples.Shape(), p[0].ConcatLatent.Shape()) || slices.ContainsFunc(zv, func(v float32) bool { return v != 0 }) {
			t.Fatalf("latent %v is not zeros of the image latent's shape %v", lat.Samples.Shape(), p[0].ConcatLatent.Shape())
		}
		s := mustNode(t, r, "KSampler", nodes.Inputs{
			"model": model, "seed": int64(3), "steps": int64(2), "cfg": 2.5, "sampler_name": "euler",
			"scheduler": "normal", "positive": p, "negative": n, "latent_image": lat, "denoise": 1.0,
		})[0].(*sd.Latent)
		v, _ := s.Samples.Float32()
		allFinite(t, "samples", v)
		return v
	}
	a := run(pixels)
	other := &Image{Batch: pixels.Batch, Height: pixels.Height, Width: pixels.Width, Channels: pixels.Channels, Pix: make([]float32, len(pixels.Pix))}
	for i, v := range pixels.Pix {
		other.Pix[i] = 1 - v
	}
	b := run(other)
	var diff float64
	for i := range a {
		diff = max(diff, math.Abs(float64(a[i]-b[i])))
	}
	if diff == 0 {
		t.Fatal("another image to edit gave the same samples")
	}
	// A plain SD1 model takes no image latent: the concat is ignored, as ComfyUI's
	// BaseModel.concat_cond ignores concat_latent_image without concat keys.
	plain := mustNode(t, r, "CheckpointLoaderSimple", nodes.Inputs{"ckpt_name": "sd15_tiny.safetensors"})[0].(*sd.Model)
	if plain.IP2P {
		t.Fatal("a 4-channel checkpoint loaded as InstructPix2Pix")
	}
	small := &Image{Batch: 1, Height: 7, Width: 30, Channels: 3, Pix: make([]float32, 7*30*3)}
	if _, err := nodeRun(t, r, nil, "InstructPixToPixConditioning", nodes.Inputs{"positive": pos, "negative": neg, "vae": vae, "pixels": small}); err == nil || !strings.Contains(err.Error(), "smaller than the 8-pixel cell") {
		t.Fatalf("a 7-pixel-high image: %v", err)
	}
}

// TestHypernetworkLoaderNode: the node patches a copy of the model (the cached input
// stays as it is), a safetensors file patches nothing (as in ComfyUI), and names that
// leave the folder or do not exist are refused. The numerics are
// diffusion/sd TestHypernetworkAgainstComfyUI's.
func TestHypernetworkLoaderNode(t *testing.T) {
	m := newSDModels(t, false)
	dir := filepath.Join(m.base, "models", "hypernetworks")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f32 := func(shape ...int64) torchtest.Tensor {
		n := int64(1)
		for _, d := range shape {
			n *= d
		}
		b := make([]byte, 4*n)
		for i := range n {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(float32(i%7)*0.01))
		}
		return torchtest.Tensor{DType: weights.F32, Shape: shape, Data: b}
	}
	layer := func(w int64) *torchtest.Dict {
		return (&torchtest.Dict{}).Set("linear.0.weight", f32(2*w, w)).Set("linear.0.bias", f32(2*w)).
			Set("linear.2.weight", f32(w, 2*w)).Set("linear.2.bias", f32(w))
	}
	root := (&torchtest.Dict{}).Set(int64(64), torchtest.Tuple{layer(64), layer(64)}).Set("activation_func", "relu")
	b, err := torchtest.ZipValue(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tiny.pt"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "broken.pt"), b[:len(b)/3], 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := os.Create(filepath.Join(dir, "flat.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.WriteRandomTensors(st, []sd.RandomTensor{{Name: "64.0.linear.0.weight", Shape: []int{128, 64}, Scale: 1}}, 1, weights.F32); err != nil {
		t.Fatal(err)
	}
	st.Close()
	r := newTestRegistry(t, m.opts)
	s, _ := r.Schema("HypernetworkLoader")
	in, _ := s.Input("hypernetwork_name")
	if got, want := in.Choices(), []string{"broken.pt", "flat.safetensors", "tiny.pt"}; !slices.Equal(got, want) {
		t.Fatalf("choices %q, want %q", got, want)
	}
	model := mustNode(t, r, "CheckpointLoaderSimple", nodes.Inputs{"ckpt_name": "sd15_tiny.safetensors"})[0].(*sd.Model)
	out := mustNode(t, r, "HypernetworkLoader", nodes.Inputs{"model": model, "hypernetwork_name": "tiny.pt", "strength": 0.7})[0].(*sd.Model)
	if out == model || len(out.AttnInputs) != 1 || len(model.AttnInputs) != 0 {
		t.Fatalf("patches: input %d, output %d", len(model.AttnInputs), len(out.AttnInputs))
	}
	if p, ok := out.AttnInputs[0].(sd.HypernetworkPatch); !ok || p.Strength != 0.7 {
		t.Fatalf("patch %#v", out.AttnInputs[0])
	}
	if same := mustNode(t, r, "HypernetworkLoader", nodes.Inputs{"model": model, "hypernetwork_name": "flat.safetensors", "strength": 1.0})[0]; same != model {
		t.Fatal("a safetensors hypernetwork patched the model; ComfyUI applies nothing from it")
	}
	for _, tc := range []struct {
		name, want string
		is         error
	}{
		{"../checkpoints/sd15_tiny.safetensors", "", folders.ErrInvalidName},
		{"absent.pt", "absent.pt", folders.ErrNotFound},
		{"broken.pt", "broken.pt", nil},
	} {
		_, err := nodeRun(t, r, nil, "HypernetworkLoader", nodes.Inputs{"model": model, "hypernetwork_name": tc.name, "strength": 1.0})
		if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.is != nil && !errors.Is(err, tc.is)) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// TestDiffusersLoaderNode lists and loads a tiny SD1 pipeline folder written in
// diffusers' names (ComfyUI's UNet map: diffusion/sd/testdata/diffusers_unet_map.json,
// see diffusion/sd TestDiffusersUNetMap for the numerics) and samples with it.
func TestDiffusersLoaderNode(t *testing.T) {
	m := newSDModels(t, true)
	data, err := os.ReadFile("../../diffusion/sd/testdata/diffusers_unet_map.json")
	if err != nil {
		t.Fatal(err)
	}
	var maps map[string]map[string]string
	if err := json.Unmarshal(data, &maps); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(m.base, "models", "diffusers")
	if err := sd.WriteRandomDiffusers(filepath.Join(root, "sub", "tiny-sd1"), sd.TinyRandomSpec(detect.FamilySD1), maps["sd1"], true); err != nil {
		t.Fatal(err)
	}
	// Folders without model_index.json are not offered; hidden ones are not walked.
	for _, d := range []string{"notes", ".cache/x"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, ".cache", "x", "model_index.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := newTestRegistry(t, m.opts)
	s, _ := r.Schema("DiffusersLoader")
	in, _ := s.Input("model_path")
	if got := in.Choices(); !slices.Equal(got, []string{"sub/tiny-sd1"}) {
		t.Fatalf("model_path choices %q", got)
	}
	out := mustNode(t, r, "DiffusersLoader", nodes.Inputs{"model_path": "sub/tiny-sd1"})
	model, clip, vae := out[0].(*sd.Model), out[1].(*sd.CLIP), out[2].(*sd.VAE)
	pos := mustNode(t, r, "CLIPTextEncode", nodes.Inputs{"text": "a photo", "clip": clip})[0]
	lat := mustNode(t, r, "EmptyLatentImage", nodes.Inputs{"width": int64(64), "height": int64(64), "batch_size": int64(1)})[0]
	sampled := mustNode(t, r, "KSampler", nodes.Inputs{
		"model": model, "seed": int64(1), "steps": int64(2), "cfg": 3.0, "sampler_name": "euler",
		"scheduler": "normal", "positive": pos, "negative": pos, "latent_image": lat, "denoise": 1.0,
	})[0].(*sd.Latent)
	img := mustNode(t, r, "VAEDecode", nodes.Inputs{"samples": sampled, "vae": vae})[0].(*Image)
	allFinite(t, "image", img.Pix)
	// The same prompt through the checkpoint the folder was written from samples alike.
	ckOut := mustNode(t, r, "CheckpointLoaderSimple", nodes.Inputs{"ckpt_name": "sd15_tiny.safetensors"})
	ckPos := mustNode(t, r, "CLIPTextEncode", nodes.Inputs{"text": "a photo", "clip": ckOut[1]})[0]
	ckSampled := mustNode(t, r, "KSampler", nodes.Inputs{
		"model": ckOut[0], "seed": int64(1), "steps": int64(2), "cfg": 3.0, "sampler_name": "euler",
		"scheduler": "normal", "positive": ckPos, "negative": ckPos, "latent_image": lat, "denoise": 1.0,
	})[0].(*sd.Latent)
	a, _ := sampled.Samples.Float32()
	b, _ := ckSampled.Samples.Float32()
	if !slices.Equal(a, b) {
		t.Error("the diffusers folder samples differently from the checkpoint it was written from")
	}
	for _, tc := range []struct {
		name string
		is   error
	}{
		{"../checkpoints", folders.ErrInvalidName},
		{"/etc", folders.ErrInvalidName},
		{"absent", folders.ErrNotFound},
	} {
		if _, err := nodeRun(t, r, nil, "DiffusersLoader", nodes.Inputs{"model_path": tc.name}); !errors.Is(err, tc.is) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if _, err := nodeRun(t, r, nil, "DiffusersLoader", nodes.Inputs{"model_path": "notes"}); err == nil || !strings.Contains(err.Error(), "no unet/") {
		t.Errorf("a folder without a pipeline: %v", err)
	}
}

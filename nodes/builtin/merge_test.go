package builtin

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/lora"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/nodes"
	"github.com/forgeflow/forgeflow/weights/detect"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// unetParams reads the UNet parameters of m in float32, by ComfyUI key.
func unetParams(t *testing.T, m *sd.Model) map[string][]float32 {
	t.Helper()
	n := m.LoRANetwork()
	if n == nil {
		n = lora.NewNetwork(m.UNet, lora.UNetPrefix, lora.Auto)
	}
	ps, err := n.Params()
	if err != nil {
		t.Fatal(err)
	}
	read, err := n.Reader(m.Runtime)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]float32{}
	for _, p := range ps {
		v, _, _, err := read(p.Key)
		if err != nil {
			t.Fatal(err)
		}
		out[p.Key] = v
	}
	return out
}

// TestModelMergeBlocksNode merges two tiny SD1.5 checkpoints block by block (a ratio is
// model1's share): input blocks take model2 (ratio 0), the middle block keeps model1
// (ratio 1), output blocks and the keys no prefix names (time_embed: the first ratio,
// input's) follow their ratio. ModelMergeSD1's per-block inputs pick the longest
// prefix; ModelMergeSimple at ratio 1 gives model1's values exactly; the merged model
// saves through CheckpointSave.
func TestModelMergeBlocksNode(t *testing.T) {
	m := newSDModels(t, false)
	spec := sd.TinyRandomSpec(detect.FamilySD1)
	spec.Seed = 99
	writeRandom(t, filepath.Join(m.base, "models", "checkpoints", "sd15_other.safetensors"), spec)
	r := newTestRegistry(t, m.opts)
	a := mustNode(t, r, "CheckpointLoaderSimple", nodes.Inputs{"ckpt_name": "sd15_tiny.safetensors"})
	b := mustNode(t, r, "CheckpointLoaderSimple", nodes.Inputs{"ckpt_name": "sd15_other.safetensors"})
	wa, wb := unetParams(t, a[0].(*sd.Model)), unetParams(t, b[0].(*sd.Model))

	out := mustNode(t, r, "ModelMergeBlocks", nodes.Inputs{"model1": a[0], "model2": b[0], "input": 0.0, "middle": 1.0, "out": 0.5})
	got := unetParams(t, out[0].(*sd.Model))
	check := func(key string, ratio float64) {
		t.Helper()
		x, y, g := wa[key], wb[key], got[key]
		for i := range x {
			want := x[i]*float32(ratio) + float32(1-ratio)*y[i]
			if d := g[i] - want; d > 2e-3 || d < -2e-3 {
				t.Fatalf("%s[%d] = %v, want %v (ratio %v)", key, i, g[i], want, ratio)
			}
		}
	}
	seen := map[string]bool{}
	for k := range wa {
		rest := strings.TrimPrefix(k, "diffusion_model.")
		switch {
		case strings.HasPrefix(rest, "input"), strings.HasPrefix(rest, "time_embed"):
			check(k, 0)
			seen["input"] = true
		case strings.HasPrefix(rest, "middle"):
			check(k, 1)
			seen["middle"] = true
		case strings.HasPrefix(rest, "out"):
			check(k, 0.5)
			seen["out"] = true
		}
	}
	if len(seen) != 3 {
		t.Fatalf("blocks seen: %v", seen)
	}

	in := nodes.Inputs{"model1": a[0], "model2": b[0]}
	sd1, _ := r.Schema("ModelMergeSD1")
	for _, x := range sd1.Inputs[2:] {
		in[x.Name] = 0.0
	}
	in["output_blocks.1."] = 1.0
	got = unetParams(t, mustNode(t, r, "ModelMergeSD1", in)[0].(*sd.Model))
	for k := range wa {
		rest := strings.TrimPrefix(k, "diffusion_model.")
		switch {
		case strings.HasPrefix(rest, "output_blocks.1."):
			check(k, 1)
		default: // output_blocks.10. and .11. have their own ratio
			check(k, 0)
		}
	}

	got = unetParams(t, mustNode(t, r, "ModelMergeSimple", nodes.Inputs{"model1": a[0], "model2": b[0], "ratio": 1.0})[0].(*sd.Model))
	for k := range wa {
		for i := range wa[k] {
			if got[k][i] != wa[k][i] {
				t.Fatalf("ratio 1 changed %s", k)
			}
		}
	}

	merged := mustNode(t, r, "ModelMergeSubtract", nodes.Inputs{"model1": a[0], "model2": b[0], "multiplier": 1.0})
	clips := mustNode(t, r, "CLIPMergeAdd", nodes.Inputs{"clip1": a[1], "clip2": b[1]})
	if _, err := nodeRun(t, r, nil, "CheckpointSave", nodes.Inputs{"model": merged[0], "clip": clips[0], "vae": a[2], "filename_prefix": "checkpoints/merged"}); err != nil {
		t.Fatal(err)
	}
	ck, err := sd.LoadCheckpoint(m.opts.Runtime, filepath.Join(m.opts.Dirs.Output, "checkpoints", "merged_00001_.safetensors"), sd.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	got = unetParams(t, ck.Model)
	want := unetParams(t, merged[0].(*sd.Model))
	for k, x := range wa {
		for i := range x {
			// (model1 − model2)·1, stored F16.
			if d := got[k][i] - want[k][i]; d > 1e-3*max(1, abs32(want[k][i])) || d < -1e-3*max(1, abs32(want[k][i])) {
				t.Fatalf("saved %s[%d] = %v, merged %v", k, i, got[k][i], want[k][i])
			}
			if d := want[k][i] - (x[i] - wb[k][i]); d > 2e-3 || d < -2e-3 {
				t.Fatalf("ModelMergeSubtract %s[%d] = %v, want %v", k, i, want[k][i], x[i]-wb[k][i])
			}
		}
	}
}

// TestModelSaveAndVAESave saves a merged MODEL with ModelSave and a VAE with VAESave
// and loads both back (UNETLoader's and VAELoader's loaders): the UNet's values are the
// merge's, the VAE file holds the checkpoint's VAE tensors without their prefix.
func TestModelSaveAndVAESave(t *testing.T) {
	m := newSDModels(t, false)
	r := newTestRegistry(t, m.opts)
	a := mustNode(t, r, "CheckpointLoaderSimple", nodes.Inputs{"ckpt_name": "sd15_tiny.safetensors"})
	merged := mustNode(t, r, "ModelMergeAdd", nodes.Inputs{"model1": a[0], "model2": a[0]})
	if _, err := nodeRun(t, r, nil, "ModelSave", nodes.Inputs{"model": merged[0], "filename_prefix": "diffusion_models/ComfyUI"}); err != nil {
		t.Fatal(err)
	}
	if _, err := nodeRun(t, r, nil, "VAESave", nodes.Inputs{"vae": a[2], "filename_prefix": "vae/ComfyUI_vae"}); err != nil {
		t.Fatal(err)
	}
	rt := m.opts.Runtime
	dm, err := sd.LoadDiffusionModel(rt, filepath.Join(m.opts.Dirs.Output, "diffusion_models", "ComfyUI_00001_.safetensors"), sd.DiffusionModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer dm.Close()
	got, want, base := unetParams(t, dm.Model), unetParams(t, merged[0].(*sd.Model)), unetParams(t, a[0].(*sd.Model))
	if len(got) != len(want) {
		t.Fatalf("%d parameters saved, %d merged", len(got), len(want))
	}
	for k, w := range want {
		for i := range w {
			tol := 1e-3 * max(1, abs32(w[i]))
			if abs32(got[k][i]-w[i]) > tol || abs32(w[i]-2*base[k][i]) > tol {
				t.Fatalf("%s[%d]: saved %v, merged %v, base %v", k, i, got[k][i], w[i], base[k][i])
			}
		}
	}
	v, err := sd.LoadVAE(rt, filepath.Join(m.opts.Dirs.Output, "vae", "ComfyUI_vae_00001_.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if v.VAE == nil {
		t.Fatal("the saved VAE loads as no VAE")
	}
	sf, err := safetensors.Open(filepath.Join(m.opts.Dirs.Output, "vae", "ComfyUI_vae_00001_.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	src, err := safetensors.Open(filepath.Join(m.base, "models", "checkpoints", "sd15_tiny.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	n := 0
	for _, x := range src.Tensors() {
		if strings.HasPrefix(x.Name, "first_stage_model.") {
			n++
		}
	}
	if len(sf.Tensors()) != n {
		t.Fatalf("VAESave wrote %d tensors, the checkpoint's VAE has %d", len(sf.Tensors()), n)
	}
	for _, x := range sf.Tensors() {
		if strings.Contains(x.Name, "first_stage_model") {
			t.Fatalf("VAESave kept the checkpoint prefix: %s", x.Name)
		}
	}
}

// TestCLIPSaveNode saves a merged SD1.5 CLIP with CLIPSave and loads the file back as a
// CLIP-L text encoder (CLIPLoader's loader): the merged values.
func TestCLIPSaveNode(t *testing.T) {
	m := newSDModels(t, false)
	r := newTestRegistry(t, m.opts)
	a := mustNode(t, r, "CheckpointLoaderSimple", nodes.Inputs{"ckpt_name": "sd15_tiny.safetensors"})
	merged := mustNode(t, r, "CLIPMergeAdd", nodes.Inputs{"clip1": a[1], "clip2": a[1]})
	env := &nodes.Env{ExtraPNGInfo: map[string]any{"workflow": map[string]any{}}}
	if _, err := nodeRun(t, r, env, "CLIPSave", nodes.Inputs{"clip": merged[0], "filename_prefix": "clip/ComfyUI"}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(m.opts.Dirs.Output, "clip", "ComfyUI_clip_l_00001_.safetensors")
	sf, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if md := sf.Metadata(); md["format"] != "pt" || md["workflow"] != "{}" {
		t.Errorf("metadata %v", md)
	}
	for _, x := range sf.Tensors() {
		if !strings.HasPrefix(x.Name, "text_model.") {
			t.Errorf("CLIPSave wrote %s", x.Name)
		}
	}
	sf.Close()
	rt := m.opts.Runtime
	ck, err := sd.LoadTextEncoder(rt, path, "stable_diffusion", sd.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	params := func(c *sd.CLIP) map[string][]float32 {
		te := c.Encoders[0]
		n := te.LoRANetwork()
		if n == nil {
			n = lora.NewNetwork(te.Encoder.Model, lora.CLIPPrefix(te.Name), lora.Auto)
		}
		ps, err := n.Params()
		if err != nil {
			t.Fatal(err)
		}
		read, err := n.Reader(rt)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string][]float32{}
		for _, p := range ps {
			v, _, _, err := read(p.Key)
			if err != nil {
				t.Fatal(err)
			}
			out[p.Key] = v
		}
		return out
	}
	got, want, base := params(ck.CLIP), params(merged[0].(*sd.CLIP)), params(a[1].(*sd.CLIP))
	if len(got) != len(want) || len(want) == 0 {
		t.Fatalf("%d parameters saved, %d merged", len(got), len(want))
	}
	for k, w := range want {
		for i := range w {
			tol := 1e-3 * max(1, abs32(w[i]))
			if abs32(got[k][i]-w[i]) > tol || abs32(w[i]-2*base[k][i]) > tol {
				t.Fatalf("%s[%d]: saved %v, merged %v, base %v", k, i, got[k][i], w[i], base[k][i])
			}
		}
	}
}

func abs32(x float32) float32 {
	if x < 0 {
		return -x
	}
	return x
}

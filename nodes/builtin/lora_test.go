package builtin

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/lora"
	"github.com/forgeflow/forgeflow/diffusion/lora/loratest"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/nodes"
)

// writeLoRAs puts two LoRAs for the tiny SD1 checkpoint in models/loras: a kohya LoRA
// of the UNet and text encoder, and a LyCORIS LoHa of the UNet.
func writeLoRAs(t *testing.T, base string) {
	t.Helper()
	dir := filepath.Join(base, "models", "loras")
	if err := os.MkdirAll(filepath.Join(dir, "styles"), 0o755); err != nil {
		t.Fatal(err)
	}
	a := loratest.New(1)
	a.LoRA("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", loratest.Kohya, 32, 4, 2, 32)
	a.LoRA("lora_unet_down_blocks_0_resnets_0_conv1", loratest.Kohya, 32, 2, 1, 32, 3, 3)
	a.LoRA("lora_te_text_model_encoder_layers_0_self_attn_q_proj", loratest.Kohya, 64, 4, 4, 64)
	b := loratest.New(2)
	b.LoHa("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_v", 32, 64, 0, 2, 1)
	for name, f := range map[string]*loratest.File{"tiny_lora.safetensors": a, "styles/tiny_loha.safetensors": b} {
		data, err := f.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "broken.safetensors"), []byte("not a tensor file"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestLoraLoaderNodes runs LoraLoader and LoraLoaderModelOnly on the tiny SD1
// checkpoint: the patched model samples differently, two loaders stack, zero strengths
// give the inputs back, the base model is left as loaded, and missing or broken files
// are errors.
func TestLoraLoaderNodes(t *testing.T) {
	m := newSDModels(t, true)
	writeLoRAs(t, m.base)
	r := newTestRegistry(t, m.opts)
	s, _ := r.Schema("LoraLoader")
	in, _ := s.Input("lora_name")
	if got, want := in.Choices(), []string{"broken.safetensors", "styles/tiny_loha.safetensors", "tiny_lora.safetensors"}; !slices.Equal(got, want) {
		t.Fatalf("lora_name choices %q, want %q", got, want)
	}
	ck := mustNode(t, r, "CheckpointLoaderSimple", nodes.Inputs{"ckpt_name": "sd15_tiny.safetensors"})
	model, clipv := ck[0].(*sd.Model), ck[1].(*sd.CLIP)

	out := mustNode(t, r, "LoraLoader", nodes.Inputs{"model": model, "clip": clipv, "lora_name": "tiny_lora.safetensors",
		"strength_model": 0.8, "strength_clip": 0.5})
	pm, pc := out[0].(*sd.Model), out[1].(*sd.CLIP)
	if pm.UNet == model.UNet || pc.Encoders[0].Encoder.Model == clipv.Encoders[0].Encoder.Model {
		t.Fatal("LoraLoader changed neither the model nor the CLIP")
	}
	if model.LoRANetwork() != nil || pm.WithoutLoRA().UNet != model.UNet {
		t.Fatal("the loaded model changed, or is not what WithoutLoRA gives back")
	}
	// The node does what sd.LoadLoRA does with the same file.
	lf, err := lora.Open(m.opts.Runtime, filepath.Join(m.base, "models", "loras", "tiny_lora.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	dm, _, err := sd.LoadLoRA(model, clipv, lf, 0.8, 0.5, sd.LoRAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	key := lora.UNetPrefix + "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
	got, _ := pm.LoRANetwork().Weight(key)
	want, _ := dm.LoRANetwork().Weight(key)
	gv, _ := got.Float32()
	wv, _ := want.Float32()
	if !slices.Equal(gv, wv) {
		t.Fatal("LoraLoader's patched weight differs from sd.LoadLoRA's")
	}

	sample := func(model *sd.Model, clipv *sd.CLIP) []float32 {
		pos := mustNode(t, r, "CLIPTextEncode", nodes.Inputs{"text": "a photo of a cat", "clip": clipv})[0]
		neg := mustNode(t, r, "CLIPTextEncode", nodes.Inputs{"text": "", "clip": clipv})[0]
		lat := mustNode(t, r, "EmptyLatentImage", nodes.Inputs{"width": int64(64), "height": int64(64), "batch_size": int64(1)})[0]
		res := mustNode(t, r, "KSampler", nodes.Inputs{
			"model": model, "seed": int64(3), "steps": int64(2), "cfg": 4.0, "sampler_name": "euler",
			"scheduler": "normal", "positive": pos, "negative": neg, "latent_image": lat, "denoise": 1.0,
		})[0].(*sd.Latent)
		v, err := res.Samples.Float32()
		if err != nil {
			t.Fatal(err)
		}
		allFinite(t, "latent", v)
		return v
	}
	plain, patched := sample(model, clipv), sample(pm, pc)
	if slices.Equal(plain, patched) {
		t.Fatal("the LoRA did not change the sample")
	}
	if again := sample(model, clipv); !slices.Equal(again, plain) {
		t.Fatal("sampling the plain model after the LoRA gives another result")
	}

	stacked := mustNode(t, r, "LoraLoaderModelOnly", nodes.Inputs{"model": pm, "lora_name": "styles/tiny_loha.safetensors", "strength_model": 1.0})[0].(*sd.Model)
	if n := len(stacked.LoRANetwork().Stack); n != 2 {
		t.Fatalf("stack of %d LoRAs, want 2", n)
	}
	zero := mustNode(t, r, "LoraLoader", nodes.Inputs{"model": model, "clip": clipv, "lora_name": "tiny_lora.safetensors",
		"strength_model": 0.0, "strength_clip": 0.0})
	if zero[0].(*sd.Model) != model || zero[1].(*sd.CLIP) != clipv {
		t.Fatal("zero strengths did not give the inputs back")
	}
	if only := mustNode(t, r, "LoraLoaderModelOnly", nodes.Inputs{"model": model, "lora_name": "tiny_lora.safetensors", "strength_model": 0.0}); only[0].(*sd.Model) != model {
		t.Fatal("LoraLoaderModelOnly at strength 0 did not give the model back")
	}

	for _, tc := range []struct{ name, err string }{
		{"absent.safetensors", "absent.safetensors"},
		{"../models/checkpoints/sd15_tiny.safetensors", "invalid"},
		{"broken.safetensors", "broken.safetensors"},
	} {
		_, err := nodeRun(t, r, nil, "LoraLoader", nodes.Inputs{"model": model, "clip": clipv, "lora_name": tc.name,
			"strength_model": 1.0, "strength_clip": 1.0})
		wantErr(t, err, tc.err)
	}
}

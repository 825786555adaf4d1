//go:build integration

package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/lora/loratest"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights/detect"
)

// TestSDWorkflows runs every workflow in workflows/sd end to end on tiny random-weight
// checkpoints with the real key layout, written under the file names the workflows use.
// Sizes and step counts are cut down so the run takes seconds; the graphs are the files'.
func TestSDWorkflows(t *testing.T) {
	testenv.EndToEnd(t)
	vocab := testenv.GoldenVocabDir(t)
	base := t.TempDir()
	ckpts := filepath.Join(base, "models", "checkpoints")
	tok := filepath.Join(base, "models", "tokenizers", "clip")
	for _, d := range []string{ckpts, tok} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"vocab.json", "merges.txt"} {
		b, err := os.ReadFile(filepath.Join(vocab, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tok, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, fam := range map[string]detect.Family{
		"v1-5-pruned-emaonly.safetensors": detect.FamilySD1,
		"dreamshaper_8.safetensors":       detect.FamilySD1,
		"sd_xl_base_1.0.safetensors":      detect.FamilySDXL,
	} {
		f, err := os.Create(filepath.Join(ckpts, name))
		if err != nil {
			t.Fatal(err)
		}
		spec := fullVocab(sd.TinyRandomSpec(fam))
		if name == "dreamshaper_8.safetensors" {
			spec.Seed = 8
		}
		if err := sd.WriteRandomCheckpoint(f, spec); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	writeExampleLoRAs(t, filepath.Join(base, "models", "loras"))
	files, err := filepath.Glob(filepath.Join(workflowsDir, "sd", "*_api.json"))
	if err != nil || len(files) < 5 {
		t.Fatalf("workflows/sd holds %d workflows (%v)", len(files), err)
	}
	small := t.TempDir()
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var prompt map[string]struct {
			ClassType string         `json:"class_type"`
			Inputs    map[string]any `json:"inputs"`
		}
		if err := json.Unmarshal(data, &prompt); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, n := range prompt {
			for k := range n.Inputs {
				switch k {
				case "width", "height", "target_width", "target_height":
					n.Inputs[k] = 128
				case "steps":
					n.Inputs[k] = 3
				}
			}
		}
		out, _ := json.Marshal(prompt)
		if err := os.WriteFile(filepath.Join(small, filepath.Base(file)), out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	code, stdout, stderr := runCLI(t, context.Background(), "run", "--plain", "--base-directory", base, small)
	if code != exitOK {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"sd15_txt2img_api.json", "sd15_hiresfix_api.json", "sdxl_txt2img_api.json", "sd15_lora_api.json", "sd15_merge_api.json", "5 of 5 workflows succeeded"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	for _, f := range []string{"sd15/txt2img_00001_.png", "sd15/hiresfix_00001_.png", "sdxl/txt2img_00001_.png", "sd15/lora_00001_.png", "sd15/merge_00001_.png"} {
		img := decodePNG(t, filepath.Join(base, "output", f))
		if b := img.Bounds(); b.Dx() == 0 || b.Dy() == 0 {
			t.Errorf("%s is empty", f)
		}
	}
	// The merged checkpoint loads back as an SD1.5 checkpoint.
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ck, err := sd.LoadCheckpoint(rt, filepath.Join(base, "output", "checkpoints", "sd15_merged_00001_.safetensors"), sd.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ck.Family != detect.FamilySD1 {
		t.Errorf("the merged checkpoint loads as %s", ck.Family)
	}
	ck.Close()
	// The hires pass upscales the latent by 1.5 before the second sampler.
	lo := decodePNG(t, filepath.Join(base, "output", "sd15/txt2img_00001_.png")).Bounds()
	hi := decodePNG(t, filepath.Join(base, "output", "sd15/hiresfix_00001_.png")).Bounds()
	if hi.Dx()*2 != lo.Dx()*3 {
		t.Errorf("hires fix output %v, want 1.5 × %v", hi, lo)
	}
}

// writeExampleLoRAs writes the LoRA files workflows/sd/sd15_lora_api.json names, sized
// for the tiny SD1 checkpoint: a kohya LoRA of UNet and text encoder and a LyCORIS LoHa.
func writeExampleLoRAs(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	a := loratest.New(1)
	a.LoRA("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", loratest.Kohya, 32, 4, 2, 32)
	a.LoRA("lora_te_text_model_encoder_layers_0_self_attn_q_proj", loratest.Kohya, 64, 4, 4, 64)
	b := loratest.New(2)
	b.LoHa("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_v", 32, 64, 0, 2, 1)
	for name, f := range map[string]*loratest.File{"example_lora.safetensors": a, "example_lycoris.safetensors": b} {
		data, err := f.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

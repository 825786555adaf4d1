//go:build integration

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/diffusion/t5"
	"github.com/forgeflow/forgeflow/internal/testenv"
)

// TestSD3Workflows runs every workflow in workflows/sd3 end to end with `forgeflow run`
// on tiny random-weight SD3 models of the real key layout (CLIPs over the full 49408-token
// vocabulary), written under the file names the workflows use, with the golden CLIP
// vocabulary and a tiny T5 tokenizer. Sizes and step counts are cut down; the graphs are
// the files'. The SD3.5 large checkpoint is written fp8-scaled, as ComfyUI's is.
func TestSD3Workflows(t *testing.T) {
	testenv.EndToEnd(t)
	vocab := testenv.GoldenVocabDir(t)
	base := t.TempDir()
	models := filepath.Join(base, "models")
	for _, f := range []string{"vocab.json", "merges.txt"} {
		b, err := os.ReadFile(filepath.Join(vocab, f))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(models, "tokenizers", "clip", f), b)
	}
	writeFile(t, filepath.Join(models, "tokenizers", "t5", t5.TokenizerJSON), sd.TinyT5TokenizerJSON())
	write := func(rel string, spec sd.RandomSD3Spec, part string) {
		t.Helper()
		p := filepath.Join(models, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		w := bufio.NewWriter(f)
		switch part {
		case "":
			err = sd.WriteRandomSD3(w, spec)
		case "scaled":
			err = sd.WriteRandomSD3ScaledFP8(w, spec)
		default:
			err = sd.WriteRandomSD3Part(w, spec, part)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	sd3 := sd.TinySD3RandomSpec(false)
	sd35 := sd.TinySD3RandomSpec(true)
	for _, s := range []*sd.RandomSD3Spec{&sd3, &sd35} {
		s.CLIPL.Vocab, s.CLIPG.Vocab = 49408, 49408
	}
	write("checkpoints/sd3_medium_incl_clips_t5xxlfp16.safetensors", sd3, "")
	write("diffusion_models/sd3.5_medium.safetensors", sd35, sd.SD3PartModel)
	write("text_encoders/clip_l.safetensors", sd35, sd.SD3PartCLIPL)
	write("text_encoders/clip_g.safetensors", sd35, sd.SD3PartCLIPG)
	write("text_encoders/t5xxl_fp16.safetensors", sd35, sd.SD3PartT5)
	write("vae/sd35_vae.safetensors", sd35, sd.SD3PartVAE)
	// SD3.5 large's layout: q/k norms, no dual attention.
	large := sd.TinySD3RandomSpec(true)
	large.MMDiT.XBlockSelfAttn = nil
	large.CLIPL.Vocab, large.CLIPG.Vocab = 49408, 49408
	write("checkpoints/sd3.5_large_fp8_scaled.safetensors", large, "scaled")

	files, err := filepath.Glob(filepath.Join(workflowsDir, "sd3", "*_api.json"))
	if err != nil || len(files) != 3 {
		t.Fatalf("workflows/sd3 holds %d workflows (%v)", len(files), err)
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
			Meta      map[string]any `json:"_meta"`
		}
		if err := json.Unmarshal(data, &prompt); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, n := range prompt {
			for k := range n.Inputs {
				switch k {
				case "width":
					n.Inputs[k] = 96
				case "height":
					n.Inputs[k] = 64
				case "steps":
					n.Inputs[k] = 3
				}
			}
		}
		out, _ := json.Marshal(prompt)
		writeFile(t, filepath.Join(small, filepath.Base(file)), out)
	}
	code, stdout, stderr := runCLI(t, context.Background(), "run", "--plain", "--base-directory", base, small)
	if code != exitOK {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"sd3_medium_txt2img_api.json", "sd35_medium_slg_api.json", "sd35_large_fp8_scaled_api.json", "3 of 3 workflows succeeded"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	// 96×64 pixels are 12×8 latent cells; the tiny VAE upsamples by 2.
	for _, f := range []string{"sd3/medium_00001_.png", "sd3/sd35_medium_slg_00001_.png", "sd3/sd35_large_fp8_scaled_00001_.png"} {
		b := decodePNG(t, filepath.Join(base, "output", f)).Bounds()
		if b.Dx() != 24 || b.Dy() != 16 {
			t.Errorf("%s is %v, want 24×16", f, b)
		}
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

//go:build integration

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights"
)

// TestVisionWorkflows runs every workflow in workflows/vision (unCLIP, GLIGEN, stacked
// model patches, Flux Redux) end to end with `forgeflow run` on tiny random-weight models with the
// real key layout, written under the file names the workflows use. Latent sizes and
// step counts are cut down; the graphs are the files'.
func TestVisionWorkflows(t *testing.T) {
	testenv.EndToEnd(t)
	base := t.TempDir()
	m := filepath.Join(base, "models")
	// The Flux models, both tokenizers and the CLIP vocabulary of workflows/flux.
	fluxWorkflowModels(t, base)
	writeModel(t, filepath.Join(m, "clip_vision", "sigclip_vision_patch14_384.safetensors"), func(w *bufio.Writer) error {
		return sd.WriteRandomCLIPVision(w, sd.TinySigLIP, false, 73, weights.F16)
	})
	// Redux from the tiny SigLIP's width to the tiny Flux's context width.
	writeModel(t, filepath.Join(m, "style_models", "flux1-redux-dev.safetensors"), func(w *bufio.Writer) error {
		return sd.WriteRandomStyleModel(w, sd.RandomStyleModel{Redux: true, In: sd.TinySigLIP.Width, Hidden: 192, Out: 64}, 92, weights.BF16)
	})
	sd1 := fullVocab(sd.TinyGLIGENSpec())
	writeModel(t, filepath.Join(m, "checkpoints", "sd21-unclip-h.safetensors"), func(w *bufio.Writer) error {
		return sd.WriteRandomCheckpoint(w, fullVocab(sd.TinyUnCLIPSpec()))
	})
	writeModel(t, filepath.Join(m, "checkpoints", "v1-5-pruned-emaonly.safetensors"), func(w *bufio.Writer) error {
		return sd.WriteRandomCheckpoint(w, sd1)
	})
	writeModel(t, filepath.Join(m, "gligen", "gligen_sd14_textbox_pruned.safetensors"), func(w *bufio.Writer) error {
		return sd.WriteRandomGLIGEN(w, sd1.UNet, sd1.CLIPL.Width, 17, weights.F16)
	})
	im := image.NewRGBA(image.Rect(0, 0, 40, 24))
	for y := 0; y < 24; y++ {
		for x := 0; x < 40; x++ {
			im.Set(x, y, color.RGBA{uint8(6 * x), uint8(10 * y), 90, 255})
		}
	}
	writeModel(t, filepath.Join(base, "input", "example.png"), func(w *bufio.Writer) error { return png.Encode(w, im) })

	files, err := filepath.Glob(filepath.Join(workflowsDir, "vision", "*_api.json"))
	if err != nil || len(files) != 5 {
		t.Fatalf("workflows/vision holds %d workflows (%v)", len(files), err)
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
			switch n.ClassType {
			case "EmptyLatentImage", "EmptySD3LatentImage":
				n.Inputs["width"], n.Inputs["height"] = 64, 64
			case "KSampler", "BasicScheduler":
				n.Inputs["steps"] = 2
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
	if !strings.Contains(stdout, "5 of 5 workflows succeeded") {
		t.Errorf("output:\n%s", stdout)
	}
	// The tiny VAE scales by 2: 64×64 pixels make 8×8 latents that decode to 16×16.
	for _, f := range []string{"vision/unclip_00001_.png", "vision/gligen_00001_.png", "vision/patches_00001_.png", "vision/redux_00001_.png", "vision/deepshrink_00001_.png"} {
		b := decodePNG(t, filepath.Join(base, "output", f)).Bounds()
		if b.Dx() != 16 || b.Dy() != 16 {
			t.Errorf("%s is %v, want 16×16", f, b)
		}
	}
}

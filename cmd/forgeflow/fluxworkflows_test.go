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
	"slices"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/flux"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/diffusion/t5"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/gguf"
)

// writeModel writes one model file under base with write.
func writeModel(t *testing.T, path string, write func(w *bufio.Writer) error) {
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

// fluxWorkflowModels writes, under the file names workflows/flux uses, tiny random
// models with the real key layouts: Flux dev and Kontext transformers (BF16
// safetensors) and a Q4_0 GGUF dev, CLIP-L (over the golden CLIP vocabulary) and T5
// (F16 safetensors and a llama.cpp Q8_0 GGUF), the Flux VAE, a schnell all-in-one
// checkpoint, the tokenizers and the Kontext input image.
func fluxWorkflowModels(t *testing.T, base string) {
	t.Helper()
	m := filepath.Join(base, "models")
	spec := sd.TinyFluxRandomSpec(true)
	spec.CLIPL.Vocab = 49408 // the golden CLIP vocabulary's ids
	spec.Seed, spec.Model.Seed = 31, 31
	kontext := spec.Model
	kontext.Seed = 32
	for name, write := range map[string]func(w *bufio.Writer) error{
		"unet/flux1-dev.safetensors":         func(w *bufio.Writer) error { return flux.WriteRandomSafetensors(w, spec.Model, gpu.BF16) },
		"unet/flux1-kontext-dev.safetensors": func(w *bufio.Writer) error { return flux.WriteRandomSafetensors(w, kontext, gpu.BF16) },
		"unet/flux1-dev-Q4_0.gguf":           func(w *bufio.Writer) error { return flux.WriteRandomGGUF(w, spec.Model, gguf.TypeQ4_0) },
		"clip/clip_l.safetensors":            func(w *bufio.Writer) error { return sd.WriteRandomSD3Part(w, spec.TextParts(), sd.SD3PartCLIPL) },
		"clip/t5xxl_fp16.safetensors":        func(w *bufio.Writer) error { return sd.WriteRandomSD3Part(w, spec.TextParts(), sd.SD3PartT5) },
		"clip/t5-v1_1-xxl-encoder-Q8_0.gguf": func(w *bufio.Writer) error { return sd.WriteRandomT5GGUF(w, spec.T5, spec.Seed, gguf.TypeQ8_0) },
		"vae/ae.safetensors":                 func(w *bufio.Writer) error { return sd.WriteRandomVAE(w, spec.VAE, "", 33, weights.F32) },
		"checkpoints/flux1-schnell-fp8.safetensors": func(w *bufio.Writer) error {
			s := spec
			s.Model.Guidance = false
			return sd.WriteRandomFlux(w, s)
		},
	} {
		writeModel(t, filepath.Join(m, filepath.FromSlash(name)), write)
	}
	vocab := testenv.GoldenVocabDir(t)
	for _, f := range []string{"vocab.json", "merges.txt"} {
		b, err := os.ReadFile(filepath.Join(vocab, f))
		if err != nil {
			t.Fatal(err)
		}
		writeModel(t, filepath.Join(m, "tokenizers", "clip", f), func(w *bufio.Writer) error { _, err := w.Write(b); return err })
	}
	writeModel(t, filepath.Join(m, "tokenizers", "t5", t5.TokenizerJSON), func(w *bufio.Writer) error {
		_, err := w.Write(sd.TinyT5TokenizerJSON())
		return err
	})
	im := image.NewRGBA(image.Rect(0, 0, 24, 16))
	for y := 0; y < 16; y++ {
		for x := 0; x < 24; x++ {
			im.Set(x, y, color.RGBA{uint8(10 * x), uint8(15 * y), 128, 255})
		}
	}
	writeModel(t, filepath.Join(base, "input", "kontext_input.png"), func(w *bufio.Writer) error { return png.Encode(w, im) })
}

// shrinkPrompt cuts a converted Flux workflow down to test size: 64×64 latents, two
// steps, and (Kontext) the reference image at its own small size instead of
// FluxKontextImageScale's megapixel.
func shrinkPrompt(t *testing.T, data []byte) []byte {
	t.Helper()
	var prompt map[string]struct {
		ClassType string         `json:"class_type"`
		Inputs    map[string]any `json:"inputs"`
	}
	if err := json.Unmarshal(data, &prompt); err != nil {
		t.Fatal(err)
	}
	for _, n := range prompt {
		for k, v := range n.Inputs {
			switch k {
			case "width", "height":
				if _, link := v.([]any); !link {
					n.Inputs[k] = 64
				}
			case "steps":
				n.Inputs[k] = 2
			}
		}
	}
	for _, n := range prompt {
		if px, ok := n.Inputs["pixels"].([]any); ok && n.ClassType == "VAEEncode" {
			if src := prompt[px[0].(string)]; src.ClassType == "FluxKontextImageScale" {
				n.Inputs["pixels"] = src.Inputs["image"]
			}
		}
	}
	out, err := json.Marshal(prompt)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestFluxWorkflows converts every UI workflow in workflows/flux (ComfyUI's Flux dev,
// schnell-checkpoint, Kontext and GGUF example shapes) to API prompts with `forgeflow
// convert`, checks the node classes each asks for, shrinks sizes and steps, and runs
// them all with `forgeflow run` on tiny random models written under the file names the
// workflows use.
func TestFluxWorkflows(t *testing.T) {
	testenv.EndToEnd(t)
	base := t.TempDir()
	fluxWorkflowModels(t, base)
	files, err := filepath.Glob(filepath.Join(workflowsDir, "flux", "*_ui.json"))
	if err != nil || len(files) != 4 {
		t.Fatalf("workflows/flux holds %d UI workflows (%v)", len(files), err)
	}
	wantClasses := map[string][]string{
		"flux_dev_ui.json": {"BasicGuider", "BasicScheduler", "CLIPTextEncode", "DualCLIPLoader", "EmptySD3LatentImage", "FluxGuidance",
			"KSamplerSelect", "ModelSamplingFlux", "RandomNoise", "SamplerCustomAdvanced", "SaveImage", "UNETLoader", "VAEDecode", "VAELoader"},
		"flux_dev_gguf_ui.json": {"BasicGuider", "BasicScheduler", "CLIPTextEncode", "DualCLIPLoaderGGUF", "EmptySD3LatentImage", "FluxGuidance",
			"KSamplerSelect", "RandomNoise", "SamplerCustomAdvanced", "SaveImage", "UnetLoaderGGUF", "VAEDecode", "VAELoader"},
		"flux_schnell_checkpoint_ui.json": {"CLIPTextEncode", "CheckpointLoaderSimple", "EmptySD3LatentImage", "KSampler", "SaveImage", "VAEDecode"},
		"flux_kontext_ui.json": {"CLIPTextEncode", "ConditioningZeroOut", "DualCLIPLoader", "FluxGuidance", "FluxKontextImageScale", "KSampler",
			"LoadImage", "ReferenceLatent", "SaveImage", "UNETLoader", "VAEDecode", "VAEEncode", "VAELoader"},
	}
	small := t.TempDir()
	for _, file := range files {
		name := filepath.Base(file)
		code, out, errOut := runCLI(t, context.Background(), "convert", "--base-directory", base, file)
		if code != exitOK {
			t.Fatalf("convert %s: exit %d\n%s", name, code, errOut)
		}
		var prompt map[string]struct {
			ClassType string `json:"class_type"`
		}
		if err := json.Unmarshal([]byte(out), &prompt); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var classes []string
		for _, n := range prompt {
			if !slices.Contains(classes, n.ClassType) {
				classes = append(classes, n.ClassType)
			}
		}
		slices.Sort(classes)
		if want := wantClasses[name]; !slices.Equal(classes, want) {
			t.Errorf("%s converts to classes %q, want %q", name, classes, want)
		}
		if err := os.WriteFile(filepath.Join(small, strings.TrimSuffix(name, "_ui.json")+"_api.json"), shrinkPrompt(t, []byte(out)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	code, stdout, stderr := runCLI(t, context.Background(), "run", "--plain", "--base-directory", base, small)
	if code != exitOK {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "4 of 4 workflows succeeded") {
		t.Errorf("output:\n%s", stdout)
	}
	// The tiny VAE scales by 2: 64×64 latents of 8×8 cells decode to 16×16, the Kontext
	// reference of 24×16 pixels to its own size.
	for f, size := range map[string][2]int{"flux/dev_00001_.png": {16, 16}, "flux/dev_gguf_00001_.png": {16, 16},
		"flux/schnell_00001_.png": {16, 16}, "flux/kontext_00001_.png": {24, 16}} {
		b := decodePNG(t, filepath.Join(base, "output", f)).Bounds()
		if b.Dx() != size[0] || b.Dy() != size[1] {
			t.Errorf("%s is %v, want %dx%d", f, b, size[0], size[1])
		}
	}
}

//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/controlnet"
	"github.com/forgeflow/forgeflow/diffusion/lora/loratest"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights/detect"
)

// editSpec is an SD1.5-layout checkpoint small enough for a test: the UNet's four
// levels of two blocks (the twelve input blocks T2I-Adapters feed), attention where a
// 64-wide head fits (ControlNets use 64-channel heads at this size, as in ComfyUI), a
// VAE with SD's 8× spatial factor.
func editSpec(inChannels int) sd.RandomSpec {
	s := fullVocab(sd.TinyRandomSpec(detect.FamilySD1))
	s.UNet = sd.RandomUNet{ModelChannels: 32, Mult: []int{1, 2, 4, 4}, ResBlocks: 2, Depth: []int{0, 1, 1, 0}, MidDepth: 1,
		Context: s.CLIPL.Width, InChannels: inChannels}
	s.VAE = sd.RandomVAE{Ch: 32, Mult: []int{1, 1, 1, 1}, ResBlocks: 1}
	return s
}

// TestEditWorkflows runs workflows/controlnet and workflows/inpaint end to end: tiny
// random-weight checkpoints (plain and 9-channel inpainting), a ControlNet and a
// T2I-Adapter with the real key layouts, and input images, all under the names the
// workflows use; sizes and steps cut down. The ControlNet run is repeated at strength
// 0, which must change the image.
func TestEditWorkflows(t *testing.T) {
	testenv.EndToEnd(t)
	vocab := testenv.GoldenVocabDir(t)
	base := t.TempDir()
	dirs := map[string]string{}
	for _, d := range []string{"checkpoints", "controlnet", "loras", "tokenizers/clip"} {
		dirs[d] = filepath.Join(base, "models", filepath.FromSlash(d))
	}
	dirs["input"] = filepath.Join(base, "input")
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"vocab.json", "merges.txt"} {
		b, err := os.ReadFile(filepath.Join(vocab, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dirs["tokenizers/clip"], f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeFile := func(path string, write func(f *os.File) error) {
		t.Helper()
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := write(f); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for name, in := range map[string]int{"v1-5-pruned-emaonly.safetensors": 4, "sd-v1-5-inpainting.safetensors": 9} {
		writeFile(filepath.Join(dirs["checkpoints"], name), func(f *os.File) error { return sd.WriteRandomCheckpoint(f, editSpec(in)) })
	}
	u := editSpec(4).UNet
	for name, ts := range map[string][]sd.RandomTensor{
		"control_v11p_sd15_canny_fp16.safetensors": controlnet.RandomControlNet("", u, 3, 0),
		"t2iadapter_depth_sd15v2.safetensors":      controlnet.RandomAdapter(32, 2, 3, 3, false, false),
	} {
		writeFile(filepath.Join(dirs["controlnet"], name), func(f *os.File) error { return sd.WriteRandomTensors(f, ts, 5, "") })
	}
	// SDXL, a LoRA on every conv and linear of its UNet and a control-lora for it.
	xl := fullVocab(sd.TinyRandomSpec(detect.FamilySDXL))
	writeFile(filepath.Join(dirs["checkpoints"], "sd_xl_base_1.0.safetensors"), func(f *os.File) error { return sd.WriteRandomCheckpoint(f, xl) })
	writeFile(filepath.Join(dirs["controlnet"], "control-lora-canny-rank256.safetensors"), func(f *os.File) error {
		return sd.WriteRandomTensors(f, controlnet.RandomControlLoRA(xl.UNet, 3, 4), 6, "")
	})
	lf := loratest.New(7)
	for _, ts := range sd.RandomUNetTensors("", xl.UNet) {
		if layer, ok := strings.CutSuffix(ts.Name, ".weight"); ok && len(ts.Shape) >= 2 {
			lf.LoRA("lora_unet_"+strings.ReplaceAll(layer, ".", "_"), loratest.Kohya, ts.Shape[0], 4, 0, ts.Shape[1:]...)
		}
	}
	writeFile(filepath.Join(dirs["loras"], "sdxl_style_lora.safetensors"), func(f *os.File) error { return lf.Write(f) })
	// Inputs: a picture with shapes (edges for Canny), a depth ramp, an RGBA image with
	// a transparent hole, and a soft grey mask.
	img := func(name string, px func(x, y int) color.NRGBA) {
		m := image.NewNRGBA(image.Rect(0, 0, 64, 64))
		for y := 0; y < 64; y++ {
			for x := 0; x < 64; x++ {
				m.SetNRGBA(x, y, px(x, y))
			}
		}
		var buf bytes.Buffer
		png.Encode(&buf, m)
		if err := os.WriteFile(filepath.Join(dirs["input"], name), buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	scene := func(x, y int) color.NRGBA {
		c := color.NRGBA{30, 60, 90, 255}
		if (x-32)*(x-32)+(y-28)*(y-28) < 200 || (x > 8 && x < 24 && y > 40 && y < 56) {
			c = color.NRGBA{230, 200, 40, 255}
		}
		return c
	}
	img("controlnet_source.png", scene)
	img("t2i_depth.png", func(x, y int) color.NRGBA { v := uint8(y * 4); return color.NRGBA{v, v, v, 255} })
	img("inpaint_source.png", func(x, y int) color.NRGBA {
		c := scene(x, y)
		if x > 20 && x < 44 && y > 20 && y < 44 {
			c.A = 0
		}
		return c
	})
	img("outpaint_source.png", scene)
	img("soft_inpaint_source.png", scene)
	img("soft_mask.png", func(x, y int) color.NRGBA { v := uint8(x * 4); return color.NRGBA{v, v, v, 255} })

	small := t.TempDir()
	var cannyPrompt map[string]map[string]any
	for _, dir := range []string{"controlnet", "inpaint"} {
		files, err := filepath.Glob(filepath.Join(workflowsDir, dir, "*_api.json"))
		if err != nil || len(files) < 2 {
			t.Fatalf("workflows/%s holds %d workflows (%v)", dir, len(files), err)
		}
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var prompt map[string]map[string]any
			if err := json.Unmarshal(data, &prompt); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			for _, n := range prompt {
				in := n["inputs"].(map[string]any)
				for k := range in {
					switch k {
					case "width", "height":
						in[k] = 64
					case "steps":
						in[k] = 2
					case "left", "right":
						if v, _ := in[k].(float64); v > 0 {
							in[k] = 16
						}
					case "feathering":
						in[k] = 8
					}
				}
			}
			if filepath.Base(file) == "controlnet_canny_api.json" {
				cannyPrompt = prompt
			}
			out, _ := json.Marshal(prompt)
			if err := os.WriteFile(filepath.Join(small, filepath.Base(file)), out, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	code, stdout, stderr := runCLI(t, context.Background(), "run", "--plain", "--base-directory", base, small)
	if code != exitOK {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "6 of 6 workflows succeeded") {
		t.Errorf("output:\n%s", stdout)
	}
	for f, size := range map[string][2]int{
		"controlnet/canny_00001_.png": {64, 64}, "controlnet/canny_edges_00001_.png": {64, 64},
		// The tiny SDXL VAE has two levels: its 8×8 latent decodes to 16×16.
		"controlnet/t2i_depth_00001_.png": {64, 64}, "controlnet/control_lora_sdxl_00001_.png": {16, 16},
		"inpaint/inpaint_00001_.png":  {64, 64},
		"inpaint/outpaint_00001_.png": {96, 64}, "inpaint/soft_inpaint_00001_.png": {64, 64},
	} {
		b := decodePNG(t, filepath.Join(base, "output", filepath.FromSlash(f))).Bounds()
		if b.Dx() != size[0] || b.Dy() != size[1] {
			t.Errorf("%s is %dx%d, want %dx%d", f, b.Dx(), b.Dy(), size[0], size[1])
		}
	}
	// The edges are white on black, and there are some: the circle's outline.
	edges := decodePNG(t, filepath.Join(base, "output", "controlnet", "canny_edges_00001_.png"))
	white := 0
	for y := 0; y < 64; y++ {
		for x := 0; x < 64; x++ {
			r, g, b, _ := edges.At(x, y).RGBA()
			if r != g || g != b || (r != 0 && r != 0xffff) {
				t.Fatalf("edge pixel (%d, %d) = %d %d %d", x, y, r, g, b)
			}
			if r != 0 {
				white++
			}
		}
	}
	if white < 20 || white > 64*64/4 {
		t.Errorf("%d edge pixels", white)
	}
	// Strength 0 leaves the conditioning without control: another image.
	cannyPrompt["7"]["inputs"].(map[string]any)["strength"] = 0.0
	cannyPrompt["11"]["inputs"].(map[string]any)["filename_prefix"] = "controlnet/canny_off"
	data, _ := json.Marshal(cannyPrompt)
	off := filepath.Join(t.TempDir(), "canny_off_api.json")
	if err := os.WriteFile(off, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := runCLI(t, context.Background(), "run", "--plain", "--base-directory", base, off); code != exitOK {
		t.Fatalf("strength 0: exit %d\n%s\n%s", code, stdout, stderr)
	}
	on := decodePNG(t, filepath.Join(base, "output", "controlnet", "canny_00001_.png"))
	plain := decodePNG(t, filepath.Join(base, "output", "controlnet", "canny_off_00001_.png"))
	differ := 0
	for y := 0; y < 64; y++ {
		for x := 0; x < 64; x++ {
			if on.At(x, y) != plain.At(x, y) {
				differ++
			}
		}
	}
	if differ < 64 {
		t.Errorf("the ControlNet at strength 1 changes %d pixels of the image without it", differ)
	}
}

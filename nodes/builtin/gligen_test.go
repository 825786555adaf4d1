package builtin

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/gligen"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/nodes"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/detect"
)

// TestGLIGENNodes runs GLIGENLoader and GLIGENTextBoxApply on a tiny checkpoint: the
// boxes are stored in latent units with the text's unprojected pooled embedding, a
// second box joins the first, and KSampler samples the grounded conditioning to a
// result other than the plain one.
func TestGLIGENNodes(t *testing.T) {
	spec := sd.TinyGLIGENSpec()
	e := newModelsEnv(t, map[string]func(w io.Writer) error{
		"checkpoints/sd1_64.safetensors": func(w io.Writer) error { return sd.WriteRandomCheckpoint(w, spec) },
		"gligen/box.safetensors":         func(w io.Writer) error { return sd.WriteRandomGLIGEN(w, spec.UNet, 64, 5, weights.F32) },
		"tokenizers/clip/bpe_simple_vocab_16e6.txt": func(w io.Writer) error {
			_, err := io.WriteString(w, "#version: 0.2\nc a\nca t</w>\np h\no t\no </w>\nph ot\nphot o</w>\n")
			return err
		},
	})
	ck := e.run(t, "CheckpointLoaderSimple", nodes.Inputs{"ckpt_name": "sd1_64.safetensors"})
	model, clip := ck[0], ck[1].(*sd.CLIP)
	gl := e.run(t, "GLIGENLoader", nodes.Inputs{"gligen_name": "box.safetensors"})[0].(*gligen.Model)
	if len(gl.Fusers) != 7 || gl.KeyDim != 64 || gl.Fusers[0].DimHead != 64 {
		t.Fatalf("%d fusers, key width %d, heads of %d: want 7, 64, 64", len(gl.Fusers), gl.KeyDim, gl.Fusers[0].DimHead)
	}
	pos := e.run(t, "CLIPTextEncode", nodes.Inputs{"text": "a photo of a cat", "clip": clip})[0].(sd.Conditioning)
	neg := e.run(t, "CLIPTextEncode", nodes.Inputs{"text": "", "clip": clip})[0].(sd.Conditioning)
	box := func(c sd.Conditioning, text string, w, h, x, y int) sd.Conditioning {
		return e.run(t, "GLIGENTextBoxApply", nodes.Inputs{"conditioning_to": c, "clip": clip, "gligen_textbox_model": gl,
			"text": text, "width": w, "height": h, "x": x, "y": y})[0].(sd.Conditioning)
	}
	one := box(pos, "a cat", 100, 64, 17, 40)
	two := box(one, "photo", 32, 48, 0, 8)
	if pos[0].GLIGEN != nil || len(one[0].GLIGEN.Boxes) != 1 || len(two[0].GLIGEN.Boxes) != 2 {
		t.Fatal("GLIGENTextBoxApply changed its input or did not append")
	}
	b := two[0].GLIGEN.Boxes
	if got := [4]int{b[0].Height, b[0].Width, b[0].Y, b[0].X}; got != [4]int{8, 12, 5, 2} {
		t.Errorf("first box (h, w, y, x) %v in latent units, want [8 12 5 2]", got)
	}
	if got := [4]int{b[1].Height, b[1].Width, b[1].Y, b[1].X}; got != [4]int{6, 4, 1, 0} {
		t.Errorf("second box %v, want [6 4 1 0]", got)
	}
	enc, err := clip.WithoutPooledProjection().EncodeText(context.Background(), "a cat")
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Release()
	closeTo(t, "pooled", b[0].Pooled, data(t, enc.Pooled), 0)
	sample := func(c sd.Conditioning) []float32 {
		zeros, _ := e.rt.Zeros(gpu.F32, 1, 4, 8, 8)
		out := e.run(t, "KSampler", nodes.Inputs{"model": model, "seed": uint64(3), "steps": 2, "cfg": 4.0, "sampler_name": "euler",
			"scheduler": "normal", "positive": c, "negative": neg, "latent_image": &sd.Latent{Samples: zeros}, "denoise": 1.0})[0].(*sd.Latent)
		return data(t, out.Samples)
	}
	if d := maxDiff(sample(two), sample(pos)); d < 1e-3 {
		t.Errorf("the boxes change the sample by only %.3g", d)
	}
}

func maxDiff(a, b []float32) float64 {
	d := 0.0
	for i := range a {
		if v := float64(a[i] - b[i]); v > d {
			d = v
		} else if -v > d {
			d = -v
		}
	}
	return d
}

// TestVisionLoadersRefuseWrongFiles: each loader of this family refuses a file of
// another kind, a truncated file and a name outside its folder with an error that says
// what is wrong, and CLIPVisionEncode refuses the empty CLIP_VISION of a checkpoint
// without a vision tower.
func TestVisionLoadersRefuseWrongFiles(t *testing.T) {
	files := map[string]func(w io.Writer) error{}
	for k, v := range visionFiles {
		files[k] = v
	}
	cut := func(write func(w io.Writer) error) func(w io.Writer) error {
		return func(w io.Writer) error {
			var b bytes.Buffer
			if err := write(&b); err != nil {
				return err
			}
			_, err := w.Write(b.Bytes()[:b.Len()/2])
			return err
		}
	}
	files["clip_vision/unet.safetensors"] = visionFiles["diffusion_models/patch_unet.safetensors"]
	files["clip_vision/cut.safetensors"] = cut(visionFiles["clip_vision/cv_l.safetensors"])
	files["style_models/vision.safetensors"] = visionFiles["clip_vision/cv_l.safetensors"]
	files["gligen/unet.safetensors"] = visionFiles["diffusion_models/patch_unet.safetensors"]
	files["gligen/cut.safetensors"] = cut(func(w io.Writer) error {
		return sd.WriteRandomGLIGEN(w, sd.TinyPatchUNet, 32, 1, weights.F16)
	})
	files["checkpoints/sd1.safetensors"] = func(w io.Writer) error {
		return sd.WriteRandomCheckpoint(w, sd.TinyRandomSpec(detect.FamilySD1))
	}
	e := newModelsEnv(t, files)
	for _, c := range []struct {
		class, input, name, want string
	}{
		{"CLIPVisionLoader", "clip_name", "unet.safetensors", "no CLIP vision model"},
		{"CLIPVisionLoader", "clip_name", "cut.safetensors", "invalid format"},
		{"CLIPVisionLoader", "clip_name", "../checkpoints/sd1.safetensors", "climbs out of its folder"},
		{"StyleModelLoader", "style_model_name", "vision.safetensors", "invalid style model"},
		{"GLIGENLoader", "gligen_name", "unet.safetensors", "not a GLIGEN model"},
		{"GLIGENLoader", "gligen_name", "cut.safetensors", "invalid format"},
		{"GLIGENLoader", "gligen_name", "../clip_vision/cv_l.safetensors", "climbs out of its folder"},
	} {
		_, err := nodeRun(t, e.r, nil, c.class, nodes.Inputs{c.input: c.name})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %q: %v, want an error naming %q", c.class, c.name, err, c.want)
		}
	}
	ck := e.run(t, "unCLIPCheckpointLoader", nodes.Inputs{"ckpt_name": "sd1.safetensors"})
	img := &Image{Batch: 1, Height: 8, Width: 8, Channels: 3, Pix: make([]float32, 8*8*3)}
	if _, err := nodeRun(t, e.r, nil, "CLIPVisionEncode", nodes.Inputs{"clip_vision": ck[3], "image": img, "crop": "center"}); err == nil ||
		!strings.Contains(err.Error(), "no CLIP vision model") {
		t.Errorf("CLIPVisionEncode on a checkpoint without a vision tower: %v", err)
	}
}

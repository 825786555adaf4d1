package builtin

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	upmodel "github.com/forgeflow/forgeflow/diffusion/upscale"
	"github.com/forgeflow/forgeflow/nodes"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/folders"
	"github.com/forgeflow/forgeflow/weights/memory"
	"github.com/forgeflow/forgeflow/weights/safetensors"
	"github.com/forgeflow/forgeflow/weights/torch/torchtest"
)

// upscaleModels is a models folder holding tiny upscale models: an ESRGAN 2× as
// safetensors, a Real-ESRGAN Compact 4× as a torch .pth in a subfolder, and a file of
// an architecture forgeflow does not run (DAT).
func upscaleModels(t *testing.T) Options {
	t.Helper()
	base := t.TempDir()
	dir := filepath.Join(base, "models", "upscale_models")
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	esrgan := upmodel.RandomSpec{Arch: "ESRGAN", In: 3, Out: 3, Features: 8, Growth: 4, Blocks: 1, Scale: 2}
	if err := upmodel.WriteRandom(&buf, esrgan, 3, weights.F16); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tiny_esrgan_x2.safetensors"), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	compact := upmodel.RandomSpec{Arch: "Compact", In: 3, Out: 3, Features: 8, Blocks: 2, Scale: 4}
	ts, err := compact.Tensors()
	if err != nil {
		t.Fatal(err)
	}
	var tt []torchtest.Tensor
	for _, r := range ts {
		data, _ := upmodel.EncodeValues(r.Values(4), weights.F32)
		shape := make([]int64, len(r.Shape))
		for i, d := range r.Shape {
			shape[i] = int64(d)
		}
		tt = append(tt, torchtest.Tensor{Name: r.Name, DType: weights.F32, Shape: shape, Data: data})
	}
	pth, err := torchtest.Zip(tt, "params")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub", "tiny_compact_x4.pth"), pth, 0o644); err != nil {
		t.Fatal(err)
	}
	var dat bytes.Buffer
	var entries []safetensors.Entry
	for _, k := range []string{"conv_first.weight", "before_RG.1.weight", "layers.0.blocks.0.ffn.sg.norm.weight"} {
		entries = append(entries, safetensors.Entry{Name: k, DType: weights.F32, Shape: []int64{1}, Data: make([]byte, 4)})
	}
	if err := safetensors.Write(&dat, entries, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "4x_dat.safetensors"), dat.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := folders.New(folders.Options{BaseDir: base})
	if err != nil {
		t.Fatal(err)
	}
	return Options{Models: p, Memory: memory.New(memory.Options{RAMBudget: -1}), Runtime: testRuntime(t)}
}

func TestUpscaleModelNodes(t *testing.T) {
	opts := upscaleModels(t)
	r := newTestRegistry(t, opts)
	loader, _ := r.Lookup("UpscaleModelLoader")
	in, _ := loader.Schema().Input("model_name")
	if got, want := in.Choices(), []string{"4x_dat.safetensors", "sub/tiny_compact_x4.pth", "tiny_esrgan_x2.safetensors"}; !slices.Equal(got, want) {
		t.Errorf("model_name choices %v, want %v", got, want)
	}
	im := ramp(2, 10, 13, 3)
	for _, tc := range []struct {
		file  string
		scale int
	}{{"tiny_esrgan_x2.safetensors", 2}, {"sub/tiny_compact_x4.pth", 4}} {
		t.Run(tc.file, func(t *testing.T) {
			out := mustNode(t, r, "UpscaleModelLoader", nodes.Inputs{"model_name": tc.file})
			m := out[0].(*upmodel.Model)
			if again := mustNode(t, r, "UpscaleModelLoader", nodes.Inputs{"model_name": tc.file}); again[0] != m {
				t.Error("loading the same file again did not hit the model cache")
			}
			var steps, total int
			env := &nodes.Env{Progress: func(v, m int) { steps, total = v, m }}
			res, err := nodeRun(t, r, env, "ImageUpscaleWithModel", nodes.Inputs{"upscale_model": m, "image": im})
			if err != nil {
				t.Fatal(err)
			}
			got := res[0].(*Image)
			if got.Batch != 2 || got.Height != 10*tc.scale || got.Width != 13*tc.scale || got.Channels != 3 {
				t.Fatalf("upscaled to [%d,%d,%d,%d]", got.Batch, got.Height, got.Width, got.Channels)
			}
			if steps != 2 || total != 2 {
				t.Errorf("progress %d of %d, want one tile per image", steps, total)
			}
			// The node is the package's Upscale on the NCHW image, laid out as IMAGE.
			want, err := m.Upscale(context.Background(), opts.Runtime, upmodel.Image{N: 2, C: 3, H: 10, W: 13, Pix: im.NCHW()}, upmodel.TileOptions{})
			if err != nil {
				t.Fatal(err)
			}
			checkPix(t, got.NCHW(), want.Pix, 0)
		})
	}
	_, err := nodeRun(t, r, nil, "UpscaleModelLoader", nodes.Inputs{"model_name": "4x_dat.safetensors"})
	wantErr(t, err, "DAT models are not supported")
	_, err = nodeRun(t, r, nil, "UpscaleModelLoader", nodes.Inputs{"model_name": "missing.pth"})
	wantErr(t, err, "upscale_models")
	m := mustNode(t, r, "UpscaleModelLoader", nodes.Inputs{"model_name": "tiny_esrgan_x2.safetensors"})[0]
	_, err = nodeRun(t, r, nil, "ImageUpscaleWithModel", nodes.Inputs{"upscale_model": m, "image": ramp(1, 8, 8, 4)})
	wantErr(t, err, "4")
	// Without a runtime the node says so.
	rNone := newTestRegistry(t, Options{})
	_, err = nodeRun(t, rNone, nil, "ImageUpscaleWithModel", nodes.Inputs{"upscale_model": m, "image": im})
	wantErr(t, err, "no tensor runtime")
}

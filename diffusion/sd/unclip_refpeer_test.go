package sd

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/clipvision"
	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/gpu"
)

var writeUnCLIPModel = flag.String("sd.unclipmodel", "", "write the tiny unCLIP checkpoint of the unCLIP reference to this folder")

func unclipModel(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteRandomCheckpoint(&buf, TinyUnCLIPSpec()); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestWriteUnCLIPModel(t *testing.T) {
	if *writeUnCLIPModel == "" {
		t.Skip("set -sd.unclipmodel DIR to write the tiny unCLIP checkpoint")
	}
	if err := os.WriteFile(filepath.Join(*writeUnCLIPModel, "unclip_tiny.safetensors"), unclipModel(t), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestUnCLIPRefpeer loads the tiny unCLIP checkpoint (model, noise augmentor, vision
// tower), encodes the fixture's images with the checkpoint's tower, attaches them as
// unCLIPConditioning does and samples; the latents are compared with ComfyUI 0.3.64's
// (tools/refpeer/unclip_ref.py): one embedding with and without noise augmentation, two
// applications and a batch of two images (the merge path, whose noise continues the
// seed − 10 generator), a negative with its own embeddings, a seed below 10.
func TestUnCLIPRefpeer(t *testing.T) {
	model := unclipModel(t)
	f := refFixture(t, "unclip_refpeer.safetensors", model)
	var runs []struct {
		Name string  `json:"name"`
		Seed uint64  `json:"seed"`
		Pos  [][]any `json:"pos"`
		Neg  [][]any `json:"neg"`
	}
	if err := json.Unmarshal([]byte(f.Metadata()["runs"]), &runs); err != nil {
		t.Fatal(err)
	}
	if len(runs) == 0 {
		t.Fatal("the fixture lists no runs")
	}
	path := filepath.Join(t.TempDir(), "unclip.safetensors")
	if err := os.WriteFile(path, model, 0o644); err != nil {
		t.Fatal(err)
	}
	rt := ckRuntime(t)
	ck, err := LoadCheckpoint(rt, path, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	if ck.CLIPVision == nil || ck.Model.UnCLIP == nil {
		t.Fatal("the checkpoint did not load as unCLIP")
	}
	if pred := ck.Model.Sampling.Prediction(); (pred == sampling.VPrediction) != (f.Metadata()["prediction"] == "V_PREDICTION") {
		t.Fatalf("prediction %v, ComfyUI's %s", pred, f.Metadata()["prediction"])
	}
	embeds := map[string]*gpu.Tensor{}
	for _, name := range []string{"one", "pair"} {
		img := fixtureTensor(t, rt, f, "img."+name)
		s := img.Shape()
		data, _ := img.Float32()
		cfg := ck.CLIPVision.Config
		px, err := clipvision.Preprocess(data, s[0], s[1], s[2], s[3], cfg.ImageSize, cfg.Mean, cfg.Std, true)
		if err != nil {
			t.Fatal(err)
		}
		pt, _ := rt.FromFloat32(px, s[0], 3, cfg.ImageSize, cfg.ImageSize)
		out, err := ck.CLIPVision.Encode(context.Background(), rt, pt)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := out.ImageEmbeds.Float32()
		want, _ := fixtureTensor(t, rt, f, "embeds."+name).Float32()
		compareRef(t, got, want, 1e-5)
		embeds[name] = out.ImageEmbeds
	}
	cond := func(base string, list [][]any) Conditioning {
		c := NewCond(fixtureTensor(t, rt, f, base), nil)
		for _, u := range list {
			c.UnCLIP = append(c.UnCLIP, UnCLIPCond{ImageEmbeds: embeds[u[0].(string)], Strength: u[1].(float64), NoiseAugmentation: u[2].(float64)})
		}
		return Conditioning{c}
	}
	for _, r := range runs {
		t.Run(r.Name, func(t *testing.T) {
			zeros, _ := rt.Zeros(gpu.F32, 1, 4, 8, 8)
			out, err := KSample(context.Background(), ck.Model, cond("pos", r.Pos), cond("neg", r.Neg), &Latent{Samples: zeros},
				KSamplerParams{Seed: r.Seed, Steps: 3, CFG: 5, Sampler: "euler", Scheduler: "normal", Denoise: 1, StartStep: -1, LastStep: -1}, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := out.Samples.Float32()
			want, _ := fixtureTensor(t, rt, f, r.Name+".out").Float32()
			compareRef(t, got, want, 1e-4)
		})
	}
}

package sd

import (
	"context"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/detect"
)

var writeDiffusersModels = flag.String("sd.diffusersmodels", "", "write the tiny checkpoints of the diffusers map reference to this folder")

// diffusersFamilies are the tiny checkpoints the diffusers tests convert.
var diffusersFamilies = map[string]detect.Family{"sd1": detect.FamilySD1, "sd2": detect.FamilySD2, "sdxl": detect.FamilySDXL}

// writeDiffusersFolder writes spec as a diffusers folder in dir (WriteRandomDiffusers)
// and as a checkpoint, whose path it returns.
func writeDiffusersFolder(t *testing.T, dir string, spec RandomSpec, unetMap map[string]string, textEncoder bool) string {
	t.Helper()
	if err := WriteRandomDiffusers(dir, spec, unetMap, textEncoder); err != nil {
		t.Fatal(err)
	}
	ck := filepath.Join(dir, "checkpoint.safetensors")
	f, err := os.Create(ck)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteRandomCheckpoint(f, spec); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return ck
}

// TestDiffusersUNetMap converts tiny SD1, SD2 and SDXL checkpoints to diffusers' UNet
// names with ComfyUI 0.3.64's own map (testdata/diffusers_unet_map.json, made by
// tools/refpeer/diffusers_map_ref.py: comfy.utils.unet_to_diffusers for the config
// detect_unet_config finds in the same files), loads them back through the diffusers
// loader and samples both: the results are identical.
func TestDiffusersUNetMap(t *testing.T) {
	if *writeDiffusersModels != "" {
		for name, fam := range diffusersFamilies {
			f, err := os.Create(filepath.Join(*writeDiffusersModels, "diffusers_"+name+".safetensors"))
			if err != nil {
				t.Fatal(err)
			}
			if err := WriteRandomCheckpoint(f, TinyRandomSpec(fam)); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
		return
	}
	data, err := os.ReadFile("testdata/diffusers_unet_map.json")
	if err != nil {
		t.Fatal(err)
	}
	var maps map[string]map[string]string
	if err := json.Unmarshal(data, &maps); err != nil {
		t.Fatal(err)
	}
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"sd1", "sd2", "sdxl"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			spec := TinyRandomSpec(diffusersFamilies[name])
			ckPath := writeDiffusersFolder(t, dir, spec, maps[name], name == "sd1")
			want, err := LoadCheckpoint(rt, ckPath, LoadOptions{SkipCLIP: true})
			if err != nil {
				t.Fatal(err)
			}
			defer want.Close()
			var got *Checkpoint
			if name == "sd1" {
				got, err = LoadDiffusers(rt, dir, LoadOptions{})
			} else {
				got, err = loadDiffusersUNet(rt, filepath.Join(dir, "unet", "diffusion_pytorch_model.safetensors"), LoadOptions{})
			}
			if err != nil {
				t.Fatal(err)
			}
			defer got.Close()
			if got.Family != want.Family || got.Model.Sampling.Prediction() != want.Model.Sampling.Prediction() || got.Model.ADM != want.Model.ADM {
				t.Fatalf("family %s prediction %v, want %s %v", got.Family, got.Model.Sampling.Prediction(), want.Family, want.Model.Sampling.Prediction())
			}
			if name == "sd1" && (got.CLIP == nil || len(got.CLIP.Encoders) != 1 || got.VAE == nil || got.VAE.Latent != SD15Latent) {
				t.Fatalf("clip %v vae %v", got.CLIP, got.VAE)
			}
			ctxDim := spec.UNet.Context
			emb := make([]float32, 77*ctxDim)
			for i := range emb {
				emb[i] = float32(math.Sin(float64(i) * 0.37))
			}
			et, _ := rt.FromFloat32(emb, 1, 77, ctxDim)
			var pooled *gpu.Tensor
			if spec.UNet.ADM > 0 {
				pooled, _ = rt.FromFloat32(emb[:spec.OpenCLIP.Projection], 1, spec.OpenCLIP.Projection)
			}
			lat, _ := rt.Zeros(gpu.F32, 1, 4, 8, 8)
			params := KSamplerParams{Seed: 3, Steps: 2, CFG: 1, Sampler: "euler", Scheduler: "normal", Denoise: 1, StartStep: -1, LastStep: -1}
			run := func(m *Model) []float32 {
				c := NewCond(et, pooled)
				out, err := KSample(context.Background(), m, Conditioning{c}, Conditioning{c}, &Latent{Samples: lat}, params, nil)
				if err != nil {
					t.Fatal(err)
				}
				v, _ := out.Samples.Float32()
				return v
			}
			if a, b := run(got.Model), run(want.Model); !slices.Equal(a, b) {
				t.Fatal("the diffusers UNet samples differently from the checkpoint it was converted from")
			}
			// UNETLoader takes the diffusers UNet file alone too.
			alone, err := LoadDiffusionModel(rt, filepath.Join(dir, "unet", "diffusion_pytorch_model.safetensors"), DiffusionModelOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer alone.Close()
			if a, b := run(alone.Model), run(want.Model); !slices.Equal(a, b) {
				t.Fatal("the diffusers UNet loaded by UNETLoader samples differently")
			}
		})
	}
}

// TestDiffusersErrors: folders without their parts and files that are not diffusers
// UNets give errors naming them.
func TestDiffusersErrors(t *testing.T) {
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := LoadDiffusers(rt, dir, LoadOptions{}); err == nil || !strings.Contains(err.Error(), "no unet/") {
		t.Fatalf("empty folder: %v", err)
	}
	// A checkpoint in the original names under unet/: not a diffusers UNet.
	spec := TinyRandomSpec(detect.FamilySD1)
	if err := os.MkdirAll(filepath.Join(dir, "unet"), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "unet", "diffusion_pytorch_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteRandomCheckpoint(f, spec); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := LoadDiffusers(rt, dir, LoadOptions{}); err == nil || !strings.Contains(err.Error(), "not a diffusers UNet") {
		t.Fatalf("original names: %v", err)
	}
	// Truncated.
	b, err := os.ReadFile(filepath.Join(dir, "unet", "diffusion_pytorch_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "unet", "diffusion_pytorch_model.safetensors"), b[:len(b)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadDiffusers(rt, dir, LoadOptions{}); err == nil || !strings.Contains(err.Error(), "diffusion_pytorch_model.safetensors") {
		t.Fatalf("truncated: %v", err)
	}
}

package clipvision_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/clipvision"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

var writeModels = flag.String("clipvision.models", "", "write the reference test's tiny towers to this folder")

// refModel is one of the reference test's towers.
type refModel struct {
	file     string
	spec     sd.RandomCLIPVision
	openCLIP bool
	dtype    weights.DType
	seed     uint64
}

// refModels are the towers tools/refpeer/clipvision_ref.py runs: a ViT-L-like one
// (quick_gelu), an OpenCLIP-layout one with 31 layers (gelu, as ViT-H) and a SigLIP one
// stored as float16.
var refModels = map[string]refModel{
	"cv_l":      {"cv_l.safetensors", sd.TinyCLIPVisionL, false, weights.F32, 71},
	"cv_h":      {"cv_h.safetensors", sd.RandomCLIPVision{Width: 32, Layers: 31, Intermediate: 64, Patch: 8, ImageSize: 32, Projection: 24}, true, weights.F32, 72},
	"cv_siglip": {"cv_siglip.safetensors", sd.TinySigLIP, false, weights.F16, 73},
}

func modelBytes(t testing.TB, m refModel) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := sd.WriteRandomCLIPVision(&buf, m.spec, m.openCLIP, m.seed, m.dtype); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestWriteRefModels(t *testing.T) {
	if *writeModels == "" {
		t.Skip("set -clipvision.models DIR to write the reference towers")
	}
	for _, m := range refModels {
		if err := os.WriteFile(filepath.Join(*writeModels, m.file), modelBytes(t, m), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func runtime(t testing.TB) *gpu.Runtime {
	t.Helper()
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

// loadRef writes a reference tower to a temporary file and loads it.
func loadRef(t *testing.T, rt *gpu.Runtime, name string) *clipvision.File {
	t.Helper()
	m := refModels[name]
	path := filepath.Join(t.TempDir(), m.file)
	if err := os.WriteFile(path, modelBytes(t, m), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := clipvision.LoadFile(rt, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func fixture(t *testing.T, f *tensorfile.File, name string) ([]float32, []int) {
	t.Helper()
	tn, err := f.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	v, err := tn.Float32()
	if err != nil {
		t.Fatal(err)
	}
	shape := make([]int, len(tn.Shape))
	for i, d := range tn.Shape {
		shape[i] = int(d)
	}
	return v, shape
}

func maxDiff(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	d, ref := 0.0, 0.0
	for i := range got {
		d = math.Max(d, math.Abs(float64(got[i]-want[i])))
		ref = math.Max(ref, math.Abs(float64(want[i])))
	}
	if !(d <= tol*math.Max(1, ref)) {
		t.Errorf("%s: max |Δ| %.3g (values up to %.3g)", what, d, ref)
	}
	t.Logf("%s: max |Δ| %.3g, values up to %.3g", what, d, ref)
}

// TestRefpeer compares Preprocess and Encode with ComfyUI 0.3.64's clip_preprocess and
// ClipVisionModel.encode_image (tools/refpeer/clipvision_ref.py) on three tiny towers
// (ViT-L-like, OpenCLIP-layout ViT-H-like, SigLIP) and four images (wider, square with
// alpha, smaller, taller than the tower's input), cropped and not; the towers run on
// ComfyUI's preprocessed pixels.
func TestRefpeer(t *testing.T) {
	ref, err := tensorfile.Open(filepath.Join("testdata", "refpeer.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	var sums map[string]string
	if err := json.Unmarshal([]byte(ref.Metadata()["sha256"]), &sums); err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Model, Image, Crop string
		Encode             bool
	}
	if err := json.Unmarshal([]byte(ref.Metadata()["cases"]), &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) == 0 {
		t.Fatal("the fixture lists no cases")
	}
	rt := runtime(t)
	models := map[string]*clipvision.File{}
	for name, m := range refModels {
		sum := sha256.Sum256(modelBytes(t, m))
		if hex.EncodeToString(sum[:]) != sums[name] {
			t.Fatalf("%s: the fixture was made from another model", name)
		}
		models[name] = loadRef(t, rt, name)
	}
	for _, c := range cases {
		key := c.Model + "." + c.Image + "." + c.Crop
		t.Run(key, func(t *testing.T) {
			m := models[c.Model]
			img, shape := fixture(t, ref, "img."+c.Image)
			cfg := m.Config
			px, err := clipvision.Preprocess(img, shape[0], shape[1], shape[2], shape[3], cfg.ImageSize, cfg.Mean, cfg.Std, c.Crop == "center")
			if err != nil {
				t.Fatal(err)
			}
			want, _ := fixture(t, ref, key+".pixels")
			// A level of 1/255 where the resize lands on a rounding boundary.
			maxDiff(t, "pixels", px, want, 1.01/255/0.26)
			if !c.Encode {
				return
			}
			pt, err := rt.FromFloat32(want, shape[0], 3, cfg.ImageSize, cfg.ImageSize)
			if err != nil {
				t.Fatal(err)
			}
			defer pt.Release()
			out, err := m.Encode(context.Background(), rt, pt)
			if err != nil {
				t.Fatal(err)
			}
			defer out.Release()
			for _, o := range []struct {
				name string
				got  *gpu.Tensor
			}{{"last", out.LastHidden}, {"penultimate", out.Penultimate}, {"embeds", out.ImageEmbeds}} {
				got, err := o.got.Float32()
				if err != nil {
					t.Fatal(err)
				}
				w, _ := fixture(t, ref, key+"."+o.name)
				maxDiff(t, o.name, got, w, 1e-4)
			}
		})
	}
}

package builtin

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/clipvision"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/nodes"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/folders"
	"github.com/forgeflow/forgeflow/weights/memory"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

var writeVisionModels = flag.String("builtin.visionmodels", "", "write the vision tests' tiny models under this folder's models/")

// visionFiles are the vision and patch tests' tiny models, by path under models/; the
// reference fixtures (tools/refpeer/style_ref.py, …) were made from exactly these.
var visionFiles = map[string]func(w io.Writer) error{
	"clip_vision/cv_l.safetensors": func(w io.Writer) error {
		return sd.WriteRandomCLIPVision(w, sd.TinyCLIPVisionL, false, 71, weights.F32)
	},
	"clip_vision/cv_siglip.safetensors": func(w io.Writer) error {
		return sd.WriteRandomCLIPVision(w, sd.TinySigLIP, false, 73, weights.F16)
	},
	"style_models/t2i_style.safetensors": func(w io.Writer) error {
		return sd.WriteRandomStyleModel(w, sd.TinyStyleAdapter, 91, weights.F32)
	},
	"style_models/redux.safetensors": func(w io.Writer) error {
		return sd.WriteRandomStyleModel(w, sd.TinyRedux, 92, weights.F16)
	},
	"diffusion_models/patch_unet.safetensors": func(w io.Writer) error {
		return sd.WriteRandomUNet(w, sd.TinyPatchUNet, "model.diffusion_model.", 61, weights.F32)
	},
	"checkpoints/unclip_tiny.safetensors": func(w io.Writer) error {
		return sd.WriteRandomCheckpoint(w, sd.TinyUnCLIPSpec())
	},
}

// writeVisionFiles writes visionFiles under dir.
func writeVisionFiles(t testing.TB, dir string) {
	t.Helper()
	writeModelFiles(t, dir, visionFiles)
}

// writeModelFiles writes files (writers by path under dir) under dir.
func writeModelFiles(t testing.TB, dir string, files map[string]func(w io.Writer) error) {
	t.Helper()
	for rel, write := range files {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(p)
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
}

func TestWriteVisionModels(t *testing.T) {
	if *writeVisionModels == "" {
		t.Skip("set -builtin.visionmodels DIR to write the vision tests' tiny models")
	}
	writeVisionFiles(t, filepath.Join(*writeVisionModels, "models"))
}

// visionEnv is a registry over a models folder holding the tiny vision models.
type visionEnv struct {
	base string
	r    *nodes.Registry
	rt   *gpu.Runtime
}

func newVisionEnv(t *testing.T) *visionEnv {
	t.Helper()
	return newModelsEnv(t, visionFiles)
}

// newModelsEnv is a registry over a models folder holding files.
func newModelsEnv(t *testing.T, files map[string]func(w io.Writer) error) *visionEnv {
	t.Helper()
	base := t.TempDir()
	writeModelFiles(t, filepath.Join(base, "models"), files)
	p, err := folders.New(folders.Options{BaseDir: base})
	if err != nil {
		t.Fatal(err)
	}
	rt := testRuntime(t)
	opts := Options{Models: p, Memory: memory.New(memory.Options{RAMBudget: -1}), Runtime: rt,
		Dirs: nodes.Dirs{Output: filepath.Join(base, "output"), Input: filepath.Join(base, "input")}}
	return &visionEnv{base: base, r: newTestRegistry(t, opts), rt: rt}
}

// run runs one node and fails the test on error.
func (e *visionEnv) run(t *testing.T, class string, in nodes.Inputs) []any {
	t.Helper()
	out, err := nodeRun(t, e.r, nil, class, in)
	if err != nil {
		t.Fatalf("%s: %v", class, err)
	}
	return out
}

// refFile opens a reference fixture and checks it was made from the tiny models.
func refFile(t *testing.T, name string, base string) *tensorfile.File {
	t.Helper()
	f, err := tensorfile.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var sums map[string]string
	if err := json.Unmarshal([]byte(f.Metadata()["sha256"]), &sums); err != nil {
		t.Fatal(err)
	}
	for rel, want := range sums {
		data, err := os.ReadFile(filepath.Join(base, "models", filepath.FromSlash(rel)))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != want {
			t.Fatalf("%s differs from the model the fixture was made from", rel)
		}
	}
	return f
}

// refTensor reads a fixture tensor.
// sdFixture opens one of diffusion/sd's refpeer fixtures (testdata/NAME), closed when
// the test ends.
func sdFixture(t *testing.T, name string) *tensorfile.File {
	t.Helper()
	f, err := tensorfile.Open(filepath.Join("..", "..", "diffusion", "sd", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// patchRun is one sampling run of the model-patch fixtures (patches_ref.py,
// modelpatch_ref.py): the sampler settings and the patch nodes applied, in order.
type patchRun struct {
	Name      string  `json:"name"`
	Sampler   string  `json:"sampler"`
	Scheduler string  `json:"scheduler"`
	Steps     int     `json:"steps"`
	CFG       float64 `json:"cfg"`
	Seed      uint64  `json:"seed"`
	Shape     []int   `json:"shape"`
	Patches   [][]any `json:"patches"`
}

// fixtureRuns decodes a fixture's "runs" metadata into runs.
func fixtureRuns(t *testing.T, f *tensorfile.File, runs any) {
	t.Helper()
	if err := json.Unmarshal([]byte(f.Metadata()["runs"]), runs); err != nil {
		t.Fatal(err)
	}
}

func refTensor(t *testing.T, rt *gpu.Runtime, f *tensorfile.File, name string) *gpu.Tensor {
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
	g, err := rt.FromFloat32(v, shape...)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// refImage reads a fixture tensor (B, H, W, C) as an IMAGE.
func refImage(t *testing.T, rt *gpu.Runtime, f *tensorfile.File, name string) *Image {
	t.Helper()
	g := refTensor(t, rt, f, name)
	s := g.Shape()
	v, _ := g.Float32()
	return &Image{Batch: s[0], Height: s[1], Width: s[2], Channels: s[3], Pix: v}
}

// closeTo fails when got is further than tol·max(1, max|want|) from want.
func closeTo(t *testing.T, what string, got, want []float32, tol float64) {
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

func data(t *testing.T, g *gpu.Tensor) []float32 {
	t.Helper()
	v, err := g.Float32()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestStyleModelRefpeer runs CLIPVisionLoader, CLIPVisionEncode, StyleModelLoader and
// StyleModelApply on the tiny models and compares with ComfyUI 0.3.64
// (tools/refpeer/style_ref.py): the T2I style adapter with "multiply", with "attn_bias"
// (attention mask) and chained after it (the mask grows), Flux Redux on SigLIP
// features, and a KSampler run of the styled conditioning on the patch UNet.
func TestStyleModelRefpeer(t *testing.T) {
	e := newVisionEnv(t)
	f := refFile(t, "style_refpeer.safetensors", e.base)
	img := refImage(t, e.rt, f, "img")
	encode := func(name string) *clipvision.Output {
		cv := e.run(t, "CLIPVisionLoader", nodes.Inputs{"clip_name": name})[0]
		return e.run(t, "CLIPVisionEncode", nodes.Inputs{"clip_vision": cv, "image": img, "crop": "center"})[0].(*clipvision.Output)
	}
	outL, outS := encode("cv_l.safetensors"), encode("cv_siglip.safetensors")
	t2i := e.run(t, "StyleModelLoader", nodes.Inputs{"style_model_name": "t2i_style.safetensors"})[0]
	redux := e.run(t, "StyleModelLoader", nodes.Inputs{"style_model_name": "redux.safetensors"})[0]
	apply := func(c sd.Conditioning, m any, o *clipvision.Output, strength float64, kind string) sd.Conditioning {
		return e.run(t, "StyleModelApply", nodes.Inputs{"conditioning": c, "style_model": m, "clip_vision_output": o,
			"strength": strength, "strength_type": kind})[0].(sd.Conditioning)
	}
	txt := sd.Conditioning{sd.NewCond(refTensor(t, e.rt, f, "txt"), nil)}
	cases := map[string]sd.Conditioning{
		"t2i_multiply": apply(txt, t2i, outL, 0.7, "multiply"),
		"t2i_bias":     apply(txt, t2i, outL, 0.5, "attn_bias"),
		"redux":        apply(sd.Conditioning{sd.NewCond(refTensor(t, e.rt, f, "t5"), nil)}, redux, outS, 1.0, "multiply"),
	}
	cases["chain"] = apply(cases["t2i_bias"], t2i, outL, 1.2, "multiply")
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			closeTo(t, "cond", data(t, c[0].Embedding), data(t, refTensor(t, e.rt, f, name+".cond")), 1e-5)
			if _, err := f.Tensor(name + ".mask"); err != nil {
				if c[0].AttentionMask != nil {
					t.Error("an attention mask where ComfyUI has none")
				}
				return
			}
			if c[0].AttentionMask == nil {
				t.Fatal("no attention mask")
			}
			closeTo(t, "mask", c[0].AttentionMask.Bias, data(t, refTensor(t, e.rt, f, name+".mask")), 0)
		})
	}
	t.Run("sample", func(t *testing.T) {
		model := e.run(t, "UNETLoader", nodes.Inputs{"unet_name": "patch_unet.safetensors", "weight_dtype": "default"})[0]
		zeros, _ := e.rt.Zeros(gpu.F32, 1, 4, 16, 12)
		out := e.run(t, "KSampler", nodes.Inputs{"model": model, "seed": uint64(21), "steps": 4, "cfg": 5.0, "sampler_name": "euler",
			"scheduler": "normal", "positive": cases["t2i_multiply"], "negative": sd.Conditioning{sd.NewCond(refTensor(t, e.rt, f, "neg"), nil)},
			"latent_image": &sd.Latent{Samples: zeros}, "denoise": 1.0})[0].(*sd.Latent)
		closeTo(t, "latent", data(t, out.Samples), data(t, refTensor(t, e.rt, f, "sample")), 1e-4)
	})
}

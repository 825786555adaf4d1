package sd

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

	"github.com/forgeflow/forgeflow/diffusion/mmdit"
	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// writeSD3SampleModel makes the MMDiT file tools/refpeer/sd3_sample_ref.py samples with.
var writeSD3SampleModel = flag.String("sd.samplemodel", "", "write the tiny SD3 sampling model to this folder")

// sd3SampleModel is the fixture's MMDiT: SD3.5 medium's layout (q/k norms, dual
// attention in block 0), 2 heads, a 64-wide context and a 32-wide pooled vector so that
// the conditionings stay small; float32, seed 51.
func sd3SampleModel(t testing.TB) []byte {
	t.Helper()
	spec := RandomSD3Spec{MMDiT: mmdit.RandomSpec{Depth: 2, InChannels: 16, PatchSize: 2, ADMInChannels: 32,
		ContextInDim: 64, PosEmbedMaxSize: 16, QKNorm: true, XBlockSelfAttn: []int{0}}, DType: weights.F32, Seed: 51}
	var buf bytes.Buffer
	if err := WriteRandomSD3Part(&buf, spec, SD3PartModel); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestWriteSD3SampleModel(t *testing.T) {
	if *writeSD3SampleModel == "" {
		t.Skip("set -sd.samplemodel DIR to write the tiny SD3 sampling model")
	}
	if err := os.WriteFile(filepath.Join(*writeSD3SampleModel, "sd3_sample_mmdit.safetensors"), sd3SampleModel(t), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSD3SampleRefpeer samples the tiny SD3 as KSampler does and compares the latents
// with ComfyUI 0.3.64's (UNETLoader's model, nodes.common_ksampler): discrete flow with
// shift 3 and 6 (ModelSamplingSD3), the SD3 latent format on an img2img latent, the SD3
// example's negative (zeroed after 10 % of the steps), an ancestral sampler's noise, and
// ComfyUI's own SkipLayerGuidanceDiT, SkipLayerGuidanceDiTSimple and CFGNorm patches.
func TestSD3SampleRefpeer(t *testing.T) {
	f, err := tensorfile.Open(filepath.Join("testdata", "sd3_sample_refpeer.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var runs []struct {
		Name      string  `json:"name"`
		Sampler   string  `json:"sampler"`
		Scheduler string  `json:"scheduler"`
		Steps     int     `json:"steps"`
		CFG       float64 `json:"cfg"`
		Denoise   float64 `json:"denoise"`
		Seed      uint64  `json:"seed"`
		Negative  string  `json:"negative"`
		Patches   [][]any `json:"patches"`
	}
	if err := json.Unmarshal([]byte(f.Metadata()["runs"]), &runs); err != nil {
		t.Fatal(err)
	}
	data := sd3SampleModel(t)
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != f.Metadata()["sha256"] {
		t.Fatalf("model sha256 %s, the fixture was made from %s", got, f.Metadata()["sha256"])
	}
	path := filepath.Join(t.TempDir(), "mmdit.safetensors")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	rt := ckRuntime(t)
	ck, err := LoadDiffusionModel(rt, path, DiffusionModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	tensor := func(name string) *gpu.Tensor {
		t.Helper()
		tn, err := f.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := tn.Float32()
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
	if len(runs) == 0 {
		t.Fatal("the fixture lists no runs")
	}
	for _, r := range runs {
		t.Run(r.Name, func(t *testing.T) {
			m := ck.Model
			for _, p := range r.Patches {
				num := func(i int) float64 { return p[i].(float64) }
				switch p[0] {
				case "shift":
					m = m.WithSampling(sampling.NewFlowShift(num(1), 1000, 1000))
				case "slg":
					m = m.WithPostCFG(SkipLayerGuidance{Double: ParseLayers(p[1].(string)), Scale: num(2),
						SigmaStart: m.Sampling.PercentToSigma(num(3)), SigmaEnd: m.Sampling.PercentToSigma(num(4)), Rescale: num(5)})
				case "slg_simple":
					m = m.WithCondBatch(SkipLayerGuidanceSimple{Double: ParseLayers(p[1].(string)),
						SigmaStart: m.Sampling.PercentToSigma(num(2)), SigmaEnd: m.Sampling.PercentToSigma(num(3))})
				case "cfgnorm":
					m = m.WithPostCFG(CFGNorm{Strength: num(1)})
				default:
					t.Fatalf("unknown patch %v", p)
				}
			}
			pos := Conditioning{NewCond(tensor(r.Name+".pos"), tensor(r.Name+".pos_pooled"))}
			nc, np := tensor(r.Name+".neg"), tensor(r.Name+".neg_pooled")
			neg := Conditioning{NewCond(nc, np)}
			if r.Negative == "sd3" {
				// The SD3 example: the negative for the first 10 %, zeroed after.
				zc, _ := rt.Zeros(gpu.F32, nc.Shape()...)
				zp, _ := rt.Zeros(gpu.F32, np.Shape()...)
				first, zero := NewCond(nc, np), NewCond(zc, zp)
				first.EndPercent = 0.1
				zero.StartPercent = 0.1
				neg = Conditioning{first, zero}
			}
			out, err := KSample(context.Background(), m, pos, neg, &Latent{Samples: tensor(r.Name + ".latent")}, KSamplerParams{
				Seed: r.Seed, Steps: r.Steps, CFG: r.CFG, Sampler: r.Sampler, Scheduler: r.Scheduler, Denoise: r.Denoise,
				StartStep: -1, LastStep: -1}, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := out.Samples.Float32()
			want, _ := tensor(r.Name + ".out").Float32()
			if len(got) != len(want) {
				t.Fatalf("%d values, want %d", len(got), len(want))
			}
			maxErr, maxRef := 0.0, 0.0
			for i := range got {
				maxErr = math.Max(maxErr, math.Abs(float64(got[i]-want[i])))
				maxRef = math.Max(maxRef, math.Abs(float64(want[i])))
			}
			if maxErr > 1e-4*math.Max(1, maxRef) {
				t.Errorf("max |Δ| %.3g (values up to %.3g)", maxErr, maxRef)
			}
			t.Logf("max |Δ| %.3g, values up to %.3g", maxErr, maxRef)
		})
	}
}

package sd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// writePatchModel makes the UNet file tools/refpeer/patches_ref.py samples with.
var writePatchModel = flag.String("sd.patchmodel", "", "write the tiny UNet of the model patch reference to this folder")

// patchTestUNet is the patch fixture's UNet: TinyPatchUNet, float32, seed 61, keys
// under model.diffusion_model.
func patchTestUNet(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteRandomUNet(&buf, TinyPatchUNet, unetPrefix, 61, weights.F32); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestWritePatchModel(t *testing.T) {
	if *writePatchModel == "" {
		t.Skip("set -sd.patchmodel DIR to write the tiny UNet of the model patch reference")
	}
	if err := os.WriteFile(filepath.Join(*writePatchModel, "patch_unet.safetensors"), patchTestUNet(t), 0o644); err != nil {
		t.Fatal(err)
	}
}

// refFixture opens a reference fixture in testdata and checks that it was made from
// model (its sha256 metadata).
func refFixture(t *testing.T, name string, model []byte) *tensorfile.File {
	t.Helper()
	f, err := tensorfile.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	sum := sha256.Sum256(model)
	if got := hex.EncodeToString(sum[:]); got != f.Metadata()["sha256"] {
		t.Fatalf("model sha256 %s, the fixture was made from %s", got, f.Metadata()["sha256"])
	}
	return f
}

// fixtureTensor reads one tensor of a fixture onto rt.
func fixtureTensor(t *testing.T, rt *gpu.Runtime, f *tensorfile.File, name string) *gpu.Tensor {
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

// compareRef fails when got is further than tol·max(1, max|want|) from want anywhere
// and logs the largest difference.
func compareRef(t *testing.T, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d values, want %d", len(got), len(want))
	}
	maxErr, maxRef := 0.0, 0.0
	for i := range got {
		maxErr = math.Max(maxErr, math.Abs(float64(got[i]-want[i])))
		maxRef = math.Max(maxRef, math.Abs(float64(want[i])))
	}
	if !(maxErr <= tol*math.Max(1, maxRef)) {
		t.Errorf("max |Δ| %.3g (values up to %.3g)", maxErr, maxRef)
	}
	t.Logf("max |Δ| %.3g, values up to %.3g", maxErr, maxRef)
}

// applyRefPatch applies one patch of the fixture's list as the patch nodes do.
func applyRefPatch(m *Model, p []any, empty Conditioning) (*Model, error) {
	num := func(i int) float64 { return p[i].(float64) }
	switch p[0] {
	case "freeu":
		return m.WithOutputBlockPatch(FreeU{B1: num(1), B2: num(2), S1: num(3), S2: num(4)}), nil
	case "freeu_v2":
		return m.WithOutputBlockPatch(FreeUV2{B1: num(1), B2: num(2), S1: num(3), S2: num(4)}), nil
	case "rescale":
		return m.WithCFGFunc(RescaleCFG{Multiplier: num(1)}, false), nil
	case "pag":
		return m.WithPostCFG(PerturbedAttentionGuidance{Scale: num(1)}), nil
	case "sag":
		return NewSelfAttentionGuidance(num(1), num(2)).Install(m), nil
	case "perpneg":
		return m.WithCFGFunc(PerpNegPatch{Empty: empty, NegScale: num(1)}, false), nil
	case "fresca":
		return m.WithPreCFG(FreSca{ScaleLow: num(1), ScaleHigh: num(2), FreqCutoff: int(num(3))}, false), nil
	case "edm":
		pred := map[string]sampling.Prediction{"eps": sampling.EPS, "edm": sampling.EDM, "v_prediction": sampling.VPrediction}[p[1].(string)]
		ms, err := sampling.NewContinuousEDM(pred, num(3), num(2))
		if err != nil {
			return nil, err
		}
		return m.WithSampling(ms), nil
	case "cont_v":
		ms, err := sampling.NewContinuousV(sampling.VPrediction, num(2), num(1))
		if err != nil {
			return nil, err
		}
		return m.WithSampling(ms), nil
	case "perpneg_guider":
		return m, nil
	}
	return nil, fmt.Errorf("unknown patch %v", p)
}

// TestPatchesRefpeer samples the tiny UNet with each model patch and compares the
// latents with ComfyUI 0.3.64's, made with ComfyUI's own patch nodes
// (tools/refpeer/patches_ref.py): FreeU and FreeU_V2 (odd sizes, batch 2), RescaleCFG,
// PerturbedAttentionGuidance, SelfAttentionGuidance (also at cfg 1), PerpNeg and
// PerpNegGuider, FreSca, ModelSamplingContinuousEDM (eps, edm, v) and
// ModelSamplingContinuousV, and four patches stacked.
func TestPatchesRefpeer(t *testing.T) {
	model := patchTestUNet(t)
	f := refFixture(t, "patches_refpeer.safetensors", model)
	var runs []struct {
		Name      string  `json:"name"`
		Sampler   string  `json:"sampler"`
		Scheduler string  `json:"scheduler"`
		Steps     int     `json:"steps"`
		CFG       float64 `json:"cfg"`
		Seed      uint64  `json:"seed"`
		Shape     []int   `json:"shape"`
		Patches   [][]any `json:"patches"`
	}
	if err := json.Unmarshal([]byte(f.Metadata()["runs"]), &runs); err != nil {
		t.Fatal(err)
	}
	if len(runs) == 0 {
		t.Fatal("the fixture lists no runs")
	}
	path := filepath.Join(t.TempDir(), "unet.safetensors")
	if err := os.WriteFile(path, model, 0o644); err != nil {
		t.Fatal(err)
	}
	rt := ckRuntime(t)
	ck, err := LoadDiffusionModel(rt, path, DiffusionModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	pos := Conditioning{NewCond(fixtureTensor(t, rt, f, "pos"), nil)}
	neg := Conditioning{NewCond(fixtureTensor(t, rt, f, "neg"), nil)}
	empty := Conditioning{NewCond(fixtureTensor(t, rt, f, "empty"), nil)}
	for _, r := range runs {
		t.Run(r.Name, func(t *testing.T) {
			m := ck.Model
			var negScale *float64
			for _, p := range r.Patches {
				if p[0] == "perpneg_guider" {
					v := p[1].(float64)
					negScale = &v
				}
				if m, err = applyRefPatch(m, p, empty); err != nil {
					t.Fatal(err)
				}
			}
			zeros, err := rt.Zeros(gpu.F32, r.Shape...)
			if err != nil {
				t.Fatal(err)
			}
			var out *Latent
			if negScale != nil {
				sampler, err := sampling.LookupSampler(r.Sampler)
				if err != nil {
					t.Fatal(err)
				}
				sigmas, err := sampling.KSamplerSigmas(m.Sampling, r.Scheduler, r.Sampler, r.Steps, 1)
				if err != nil {
					t.Fatal(err)
				}
				g := NewPerpNegGuider(m, pos, neg, empty, r.CFG, *negScale)
				out, _, err = CustomSample(context.Background(), Noise{Seed: r.Seed}, g, sampler, sigmas, &Latent{Samples: zeros}, nil)
				if err != nil {
					t.Fatal(err)
				}
			} else {
				out, err = KSample(context.Background(), m, pos, neg, &Latent{Samples: zeros}, KSamplerParams{
					Seed: r.Seed, Steps: r.Steps, CFG: r.CFG, Sampler: r.Sampler, Scheduler: r.Scheduler, Denoise: 1,
					StartStep: -1, LastStep: -1}, nil)
				if err != nil {
					t.Fatal(err)
				}
			}
			got, _ := out.Samples.Float32()
			want, _ := fixtureTensor(t, rt, f, r.Name+".out").Float32()
			compareRef(t, got, want, 1e-4)
			if len(r.Patches) == 0 || negScale != nil {
				return
			}
			// The patches must matter: the unpatched model lands elsewhere.
			plain, err := KSample(context.Background(), ck.Model, pos, neg, &Latent{Samples: zeros}, KSamplerParams{
				Seed: r.Seed, Steps: r.Steps, CFG: r.CFG, Sampler: r.Sampler, Scheduler: r.Scheduler, Denoise: 1,
				StartStep: -1, LastStep: -1}, nil)
			if err != nil {
				t.Fatal(err)
			}
			pv, _ := plain.Samples.Float32()
			if d := maxAbsDiff(pv, want); d < 1e-2 {
				t.Errorf("the patches change the result by only %.3g", d)
			}
		})
	}
}

func maxAbsDiff(a, b []float32) float64 {
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

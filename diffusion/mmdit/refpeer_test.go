package mmdit_test

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
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// writeModels makes the refpeer cases' model files: tools/refpeer/mmdit_ref.py loads
// them into ComfyUI's own MMDiT and writes testdata/refpeer.safetensors.
var writeModels = flag.String("mmdit.models", "", "write the reference cases' model files to this folder")

// refModels are the tiny models the reference fixture was made with: SD3 medium's
// layout, SD3.5 medium's (RMS q/k norms, dual attention in blocks 0 and 2), and one
// without a position table or pooled-vector embedder (the computed sin-cos table),
// whose one block is both first and last. ComfyUI builds as many blocks as the depth
// (hidden size / 64), so every model here has that many.
var refModels = map[string]mmdit.RandomSpec{
	"sd3":   {Depth: 2, InChannels: 16, PatchSize: 2, ADMInChannels: 32, ContextInDim: 64, PosEmbedMaxSize: 8},
	"sd35m": {Depth: 3, InChannels: 16, PatchSize: 2, ADMInChannels: 32, ContextInDim: 64, PosEmbedMaxSize: 8, QKNorm: true, XBlockSelfAttn: []int{0, 2}},
	"nopos": {Depth: 1, InChannels: 16, PatchSize: 2, ContextInDim: 64},
}

const refSeed = 11

// modelFile returns the safetensors bytes of a reference model (float32, seed 11).
func modelFile(t testing.TB, spec mmdit.RandomSpec) []byte {
	t.Helper()
	ts, err := spec.Tensors("")
	if err != nil {
		t.Fatal(err)
	}
	rs := make([]sd.RandomTensor, len(ts))
	for i, x := range ts {
		rs[i] = sd.RandomTensor{Name: x.Name, Shape: x.Shape, Scale: x.Scale, Offset: x.Offset}
	}
	var buf bytes.Buffer
	if err := sd.WriteRandomTensors(&buf, rs, refSeed, weights.F32); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestWriteRefModels(t *testing.T) {
	if *writeModels == "" {
		t.Skip("set -mmdit.models DIR to write the reference models")
	}
	for name, spec := range refModels {
		if err := os.WriteFile(filepath.Join(*writeModels, "mmdit_"+name+".safetensors"), modelFile(t, spec), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// refRun is one forward pass of the fixture, as mmdit_ref.py records it.
type refRun struct {
	Name  string `json:"name"`
	Model string `json:"model"`
	Skip  []int  `json:"skip"`
	HasY  bool   `json:"y"`
}

func loadModel(t testing.TB, rt *gpu.Runtime, data []byte) *mmdit.Model {
	t.Helper()
	f, err := tensorfile.OpenBytes("model.safetensors", data)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	m, rep, err := mmdit.Load(rt, statedict.NewFileSource(rt, f), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Unused) > 0 {
		t.Fatalf("unused keys: %v", rep.Unused)
	}
	return m
}

// TestRefpeer compares Forward with ComfyUI 0.3.64's own MMDiT (OpenAISignatureMMDITWrapper
// built by detect_unet_config from the same files) on the fixture's inputs: batches of
// two with per-item timesteps, latents that are not whole patches (circular padding
// and the crop back), the position table's centre crop, the computed sin-cos table, no
// pooled vector, and Skip Layer Guidance's skipped blocks.
func TestRefpeer(t *testing.T) {
	f, err := tensorfile.Open(filepath.Join("testdata", "refpeer.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var runs []refRun
	if err := json.Unmarshal([]byte(f.Metadata()["runs"]), &runs); err != nil {
		t.Fatal(err)
	}
	var sums map[string]string
	if err := json.Unmarshal([]byte(f.Metadata()["sha256"]), &sums); err != nil {
		t.Fatal(err)
	}
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	models := map[string]*mmdit.Model{}
	for name, spec := range refModels {
		data := modelFile(t, spec)
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != sums[name] {
			t.Fatalf("model %s: sha256 %s, the fixture was made from %s", name, got, sums[name])
		}
		models[name] = loadModel(t, rt, data)
	}
	tensor := func(name string) *gpu.Tensor {
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
	if len(runs) == 0 {
		t.Fatal("the fixture lists no runs")
	}
	for _, r := range runs {
		t.Run(r.Name, func(t *testing.T) {
			m := models[r.Model]
			if m == nil {
				t.Fatalf("fixture run uses unknown model %q", r.Model)
			}
			in := mmdit.Inputs{X: tensor(r.Name + ".x"), Timesteps: tensor(r.Name + ".t"), Context: tensor(r.Name + ".context"), Skip: r.Skip}
			if r.HasY {
				in.Y = tensor(r.Name + ".y")
			}
			out, err := m.Forward(context.Background(), rt, in)
			if err != nil {
				t.Fatal(err)
			}
			want := tensor(r.Name + ".out")
			if !equalShapes(out.Shape(), want.Shape()) {
				t.Fatalf("out %v, want %v", out.Shape(), want.Shape())
			}
			got, _ := out.Float32()
			exp, _ := want.Float32()
			maxErr, maxRef := 0.0, 0.0
			for i := range got {
				maxErr = math.Max(maxErr, math.Abs(float64(got[i]-exp[i])))
				maxRef = math.Max(maxRef, math.Abs(float64(exp[i])))
			}
			// ComfyUI computes in float32 too; what remains is summation order.
			if maxErr > 1e-4*math.Max(1, maxRef) {
				t.Errorf("max |Δ| %.3g (values up to %.3g)", maxErr, maxRef)
			}
			t.Logf("max |Δ| %.3g, values up to %.3g, PSNR %.1f dB", maxErr, maxRef, psnr(got, exp))
		})
	}
}

func equalShapes(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// psnr is the peak signal-to-noise ratio of got against want, the peak being want's
// largest magnitude.
func psnr(got, want []float32) float64 {
	var se, peak float64
	for i := range got {
		d := float64(got[i] - want[i])
		se += d * d
		peak = math.Max(peak, math.Abs(float64(want[i])))
	}
	if se == 0 {
		return math.Inf(1)
	}
	return 10 * math.Log10(peak*peak/(se/float64(len(got))))
}

package sd

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/detect"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// Widths of TinyRandomSpec's text encoders.
const (
	tinyTextWidth = 64
	tinyProj      = 64
)

func tinySpec(f detect.Family, seed uint64) RandomSpec {
	s := TinyRandomSpec(f)
	s.Seed = seed
	return s
}

func tinySD1(seed uint64) RandomSpec  { return tinySpec(detect.FamilySD1, seed) }
func tinySDXL(seed uint64) RandomSpec { return tinySpec(detect.FamilySDXL, seed) }
func tinySD2(seed uint64, vpred bool) RandomSpec {
	s := tinySpec(detect.FamilySD2, seed)
	s.VPrediction = vpred
	return s
}

// writeSpec writes a random checkpoint to path.
func writeSpec(t *testing.T, path string, s RandomSpec) {
	t.Helper()
	ts, err := s.Tensors()
	if err != nil {
		t.Fatal(err)
	}
	writeTensors(t, path, ts, s.Seed)
}

// writeTensors writes random tensors (F16) to path.
func writeTensors(t *testing.T, path string, ts []RandomTensor, seed uint64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteRandomTensors(f, ts, seed, weights.F16); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// valueTensor is a tensor with explicit values.
type valueTensor struct {
	name  string
	shape []int
	vals  []float32
}

// writeValues writes tensors with given values as F16.
func writeValues(t *testing.T, path string, ts []valueTensor) {
	t.Helper()
	var es []safetensors.Entry
	for _, v := range ts {
		shape := make([]int64, len(v.shape))
		for i, d := range v.shape {
			shape[i] = int64(d)
		}
		data := make([]byte, 2*len(v.vals))
		if err := gpu.EncodeFloat32(gpu.F16, data, v.vals); err != nil {
			t.Fatal(err)
		}
		es = append(es, safetensors.Entry{Name: v.name, DType: weights.F16, Shape: shape, Data: data})
	}
	safetensors.SortEntries(es)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := safetensors.Write(f, es, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// writeTinyVocab writes an OpenAI-format vocabulary (byte symbols and a few merges) to
// dir and returns dir.
func writeTinyVocab(t *testing.T, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	merges := "#version: 0.2\nc a\nca t</w>\np h\no t\no </w>\nph ot\nphot o</w>\n"
	if err := os.WriteFile(filepath.Join(dir, "bpe_simple_vocab_16e6.txt"), []byte(merges), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func ckRuntime(t testing.TB) *gpu.Runtime {
	t.Helper()
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

// ckRandVals draws n values N(0, 1).
func ckRandVals(seed uint64, n int) []float32 {
	return RandomTensor{Name: "x", Shape: []int{n}, Scale: 1}.Values(seed)
}

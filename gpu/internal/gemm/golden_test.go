package gemm

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
)

// ggufSidecar is a sidecar case of the golden gguf family: the raw bytes and
// ComfyUI-GGUF's dequantized values of each tensor of a .gguf file.
type ggufSidecar struct {
	testenv.Case
	GGUFFile    string `json:"gguf_file"`
	TensorsInfo map[string]struct {
		GGMLType string `json:"ggml_type"`
	} `json:"tensors_info"`
}

// TestGoldenGGUF decodes the raw GGUF tensor bytes (every type the
// package supports) of the golden gguf family (written by llama.cpp's gguf-py, dequantized by ComfyUI-GGUF) on
// every path and requires the float32-math reference exactly (the family's
// tolerance is abs 0), then runs Linear on them against a float64 product
// with the reference weights.
func TestGoldenGGUF(t *testing.T) {
	_, cases := testenv.GoldenCases[ggufSidecar](t, "gguf")
	r := rand.New(rand.NewPCG(25, 26))
	n := 0
	for _, c := range cases {
		if c.GGUFFile == "" {
			continue
		}
		ts, _, err := testenv.ReadSafetensors(c.Path())
		if err != nil {
			t.Fatal(err)
		}
		names := make([]string, 0, len(c.TensorsInfo))
		for name := range c.TensorsInfo {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, tensor := range names {
			dtype, known := gemmDType(c.TensorsInfo[tensor].GGMLType)
			if !known {
				t.Fatal(c.FieldError("tensors_info."+tensor+".ggml_type", "%q is not a gemm dtype", c.TensorsInfo[tensor].GGMLType))
			}
			n++
			checkGoldenGGUF(t, r, c.Name+"/"+tensor, tensor, dtype, ts)
		}
	}
	if n == 0 {
		t.Fatal("the gguf family has no sidecar tensors")
	}
}

// gemmDType is the gemm dtype of a ggml type name; false for names it does not know.
func gemmDType(name string) (DType, bool) {
	for d := DType(0); d < dtypeCount; d++ {
		if d.String() == name {
			return d, true
		}
	}
	return 0, false
}

// checkGoldenGGUF decodes one golden tensor on every engine and runs Linear with it.
func checkGoldenGGUF(t *testing.T, r *rand.Rand, sub, tensor string, dtype DType, ts map[string]testenv.RawTensor) {
	raw, ok := ts["in."+tensor+".bytes"]
	if !ok || len(raw.Shape) != 2 {
		t.Fatalf("%s: raw bytes missing or not 2-D", tensor)
	}
	ref, ok := ts["out."+tensor+".dequant_f32"]
	if !ok {
		ref = ts["out."+tensor]
	}
	want, err := ref.Float32()
	if err != nil {
		t.Fatalf("%s: %v", tensor, err)
	}
	n, rowBytes := raw.Shape[0], raw.Shape[1]
	k := len(want) / n
	if rb, err := dtype.RowBytes(k); err != nil || rb != rowBytes {
		t.Fatalf("%s: %d columns give %d bytes a row (%v), fixture has %d", tensor, k, rb, err, rowBytes)
	}
	for _, e := range enginesUnderTest(t) {
		t.Run(engineName(e)+"/"+sub, func(t *testing.T) {
			got := make([]float32, k)
			for j := 0; j < n; j++ {
				e.k.decodeRow(dtype, got, raw.Data[j*rowBytes:], 0)
				for i, g := range got {
					if w := want[j*k+i]; math.Float32bits(g) != math.Float32bits(w) {
						t.Fatalf("row %d col %d: %g, want %g", j, i, g, w)
					}
				}
			}
			for _, m := range []int{1, 3, 30} {
				x, y := randSlice(r, m*k), make([]float32, m*n)
				wantY, mag := refGEMM(false, true, m, n, k, x, k, want, k, y, n, false)
				w := Weight{DType: dtype, N: n, K: k, Data: raw.Data}
				if err := e.Linear(m, x, k, w, y, n, false); err != nil {
					t.Fatal(err)
				}
				checkClose(t, m, n, k, y, n, wantY, mag)
			}
		})
	}
}

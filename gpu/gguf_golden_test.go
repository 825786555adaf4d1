package gpu

import (
	"hash/fnv"
	"maps"
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

// ggufDType is the runtime dtype of a ggml type name; false for names it does not know.
func ggufDType(name string) (DType, bool) {
	for d := DType(0); d < dtypeCount; d++ {
		if d.String() == name {
			return d, true
		}
	}
	return 0, false
}

// TestGoldenGGUFLinear runs Linear on every GGUF block type the runtime declares, with the
// raw tensor bytes of the golden gguf family (written by gguf-py) as the weight, against
// the float64 product with ComfyUI-GGUF's float32 dequantisation of the same bytes. It
// checks the runtime's dtype → kernel mapping end to end (a swapped or missing type
// fails); the decoders themselves are tested bit for bit in gpu/internal/gemm.
func TestGoldenGGUFLinear(t *testing.T) {
	_, cases := testenv.GoldenCases[ggufSidecar](t, "gguf")
	seen := map[DType]bool{}
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
			dtype, known := ggufDType(c.TensorsInfo[tensor].GGMLType)
			if !known {
				t.Fatal(c.FieldError("tensors_info."+tensor+".ggml_type", "%q is not a runtime dtype", c.TensorsInfo[tensor].GGMLType))
			}
			if !dtype.IsQuantized() {
				continue
			}
			seen[dtype] = true
			t.Run(c.Name+"/"+tensor, func(t *testing.T) {
				// Inputs drawn per tensor and runtime in a fixed order, so each check sees
				// the same values however many tensors the set holds.
				h := fnv.New64a()
				h.Write([]byte(tensor))
				r := rand.New(rand.NewPCG(41, h.Sum64()))
				raw, found := ts["in."+tensor+".bytes"]
				if !found || len(raw.Shape) != 2 {
					t.Fatalf("raw bytes missing or not 2-D")
				}
				ref, found := ts["out."+tensor+".dequant_f32"]
				if !found {
					ref = ts["out."+tensor]
				}
				n := raw.Shape[0]
				rv, err := ref.Float32()
				if err != nil {
					t.Fatal(err)
				}
				wv := make([]float64, len(rv))
				for i, v := range rv {
					wv[i] = float64(v)
				}
				k := len(wv) / n
				runtimes := runtimesUnderTest(t)
				for _, name := range slices.Sorted(maps.Keys(runtimes)) {
					rt := runtimes[name]
					if !rt.Backend().Supports(OpLinear, F32, dtype, F32) {
						t.Fatalf("%s: Linear with a %s weight not supported", name, dtype)
					}
					w, err := rt.FromBytes(dtype, raw.Data, n, k)
					if err != nil {
						t.Fatal(err)
					}
					for _, m := range []int{2, 30} { // the dot-product and the packed path
						x, xv := randTensor(t, rt, r, false, m, k)
						checkClose(t, ok(t)(Linear(rt, x, w, nil)), linearRef(xv, wv, nil, m, n, k), 1e-4, 1e-4)
					}
				}
			})
		}
	}
	// The types the golden family lacks are in the reference fixture (TestDequantDType);
	// MXFP4 in neither: the reference kit's gguf-py predates it, so ComfyUI-GGUF cannot
	// read it (TestMXFP4Linear checks it against internal/dtype's decoder).
	_, fixture, _, _ := readDequantFixture(t)
	for _, name := range fixture {
		if d, ok := ggufDType(name); ok {
			seen[d] = true
		}
	}
	for d := DType(0); d < dtypeCount; d++ {
		if d.BlockSize() > 1 && !seen[d] && d != MXFP4 {
			t.Errorf("block type %s has no golden case and no reference fixture", d)
		}
	}
}

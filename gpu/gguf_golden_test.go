package gpu

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
)

// TestGoldenGGUFLinear runs Linear on every GGUF block type the runtime declares, with the
// raw tensor bytes of the golden gguf family (written by gguf-py) as the weight, against
// the float64 product with ComfyUI-GGUF's float32 dequantisation of the same bytes. It
// checks the runtime's dtype → kernel mapping end to end (a swapped or missing type
// fails); the decoders themselves are tested bit for bit in gpu/internal/gemm.
func TestGoldenGGUFLinear(t *testing.T) {
	dir := testenv.GoldenDir(t)
	ts := readGoldenSafetensors(t, filepath.Join(dir, "gguf", "quant_types.expected.safetensors"))
	cases := []struct {
		tensor string
		dtype  DType
	}{
		{"q8_0.weight", Q8_0}, {"q4_0.weight", Q4_0}, {"q4_1.weight", Q4_1},
		{"q5_0.weight", Q5_0}, {"q5_1.weight", Q5_1}, {"q2_k.weight", Q2_K},
		{"q3_k.weight", Q3_K}, {"q4_k.weight", Q4_K}, {"q5_k.weight", Q5_K},
		{"q6_k.weight", Q6_K},
	}
	seen := map[DType]bool{}
	r := rand.New(rand.NewPCG(41, 42))
	for _, tc := range cases {
		seen[tc.dtype] = true
		t.Run(tc.tensor, func(t *testing.T) {
			raw, found := ts["in."+tc.tensor+".bytes"]
			if !found || len(raw.shape) != 2 {
				t.Fatalf("raw bytes missing or not 2-D")
			}
			ref, found := ts["out."+tc.tensor+".dequant_f32"]
			if !found {
				ref = ts["out."+tc.tensor]
			}
			n := raw.shape[0]
			wv := make([]float64, len(ref.data)/4)
			for i := range wv {
				wv[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(ref.data[4*i:])))
			}
			k := len(wv) / n
			for name, rt := range runtimesUnderTest(t) {
				if !rt.Backend().Supports(OpLinear, F32, tc.dtype, F32) {
					t.Fatalf("%s: Linear with a %s weight not supported", name, tc.dtype)
				}
				w, err := rt.FromBytes(tc.dtype, raw.data, n, k)
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
	for d := DType(0); d < dtypeCount; d++ {
		if d.BlockSize() > 1 && !seen[d] {
			t.Errorf("block type %s has no golden case", d)
		}
	}
}

type goldenTensor struct {
	shape []int
	data  []byte
}

// readGoldenSafetensors reads a small safetensors fixture whole (8-byte header length,
// JSON header, data); weights/ has the real reader, which gpu must not import.
func readGoldenSafetensors(t *testing.T, path string) map[string]goldenTensor {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 8 {
		t.Fatalf("%s: too short", path)
	}
	hn := binary.LittleEndian.Uint64(b)
	if hn > uint64(len(b)-8) {
		t.Fatalf("%s: header length %d past the end", path, hn)
	}
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+hn], &hdr); err != nil {
		t.Fatalf("%s: header: %v", path, err)
	}
	data := b[8+hn:]
	out := map[string]goldenTensor{}
	for name, raw := range hdr {
		if name == "__metadata__" {
			continue
		}
		var info struct {
			Shape   []int  `json:"shape"`
			Offsets [2]int `json:"data_offsets"`
		}
		if err := json.Unmarshal(raw, &info); err != nil {
			t.Fatalf("%s: %q: %v", path, name, err)
		}
		if info.Offsets[0] < 0 || info.Offsets[1] < info.Offsets[0] || info.Offsets[1] > len(data) {
			t.Fatalf("%s: %q: bad offsets %v", path, name, info.Offsets)
		}
		out[name] = goldenTensor{info.Shape, data[info.Offsets[0]:info.Offsets[1]]}
	}
	return out
}

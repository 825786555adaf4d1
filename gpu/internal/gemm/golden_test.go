package gemm

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
)

// goldenTensor is one tensor of a safetensors file: its dtype, shape and
// raw little-endian bytes.
type goldenTensor struct {
	dtype string
	shape []int
	data  []byte
}

// readSafetensors reads a whole (small) safetensors file: an 8-byte header
// length, a JSON header of name → {dtype, shape, data_offsets}, then the
// data. It is enough for the golden fixtures; weights/ has the real reader.
func readSafetensors(path string) (map[string]goldenTensor, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) < 8 {
		return nil, fmt.Errorf("%s: too short", path)
	}
	n := binary.LittleEndian.Uint64(b)
	if n > uint64(len(b)-8) {
		return nil, fmt.Errorf("%s: header length %d past the end", path, n)
	}
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+n], &hdr); err != nil {
		return nil, fmt.Errorf("%s: header: %w", path, err)
	}
	data := b[8+n:]
	out := make(map[string]goldenTensor)
	for name, raw := range hdr {
		if name == "__metadata__" {
			continue
		}
		var info struct {
			DType   string `json:"dtype"`
			Shape   []int  `json:"shape"`
			Offsets [2]int `json:"data_offsets"`
		}
		if err := json.Unmarshal(raw, &info); err != nil {
			return nil, fmt.Errorf("%s: tensor %q: %w", path, name, err)
		}
		if info.Offsets[0] < 0 || info.Offsets[1] < info.Offsets[0] || info.Offsets[1] > len(data) {
			return nil, fmt.Errorf("%s: tensor %q: bad offsets %v", path, name, info.Offsets)
		}
		out[name] = goldenTensor{info.DType, info.Shape, data[info.Offsets[0]:info.Offsets[1]]}
	}
	return out, nil
}

func (g goldenTensor) float32s() []float32 {
	f := make([]float32, len(g.data)/4)
	for i := range f {
		f[i] = math.Float32frombits(binary.LittleEndian.Uint32(g.data[4*i:]))
	}
	return f
}

// TestGoldenGGUF decodes the raw GGUF tensor bytes (every type the
// package supports) of the golden gguf family (written by llama.cpp's gguf-py, dequantized by ComfyUI-GGUF) on
// every path and requires the float32-math reference exactly (the family's
// tolerance is abs 0), then runs Linear on them against a float64 product
// with the reference weights.
func TestGoldenGGUF(t *testing.T) {
	dir := testenv.GoldenDir(t)
	ts, err := readSafetensors(filepath.Join(dir, "gguf", "quant_types.expected.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		tensor string
		dtype  DType
	}{
		{"f32.weight", F32}, {"f16.weight", F16}, {"bf16.weight", BF16},
		{"q8_0.weight", Q8_0}, {"q8_0_3d.weight", Q8_0}, {"q4_0.weight", Q4_0},
		{"q4_k.weight", Q4_K}, {"q4_k_wide.weight", Q4_K},
		{"q4_1.weight", Q4_1}, {"q5_0.weight", Q5_0}, {"q5_1.weight", Q5_1},
		{"q2_k.weight", Q2_K}, {"q3_k.weight", Q3_K}, {"q5_k.weight", Q5_K}, {"q6_k.weight", Q6_K},
	}
	r := rand.New(rand.NewPCG(25, 26))
	for _, tc := range cases {
		raw, ok := ts["in."+tc.tensor+".bytes"]
		if !ok || len(raw.shape) != 2 {
			t.Fatalf("%s: raw bytes missing or not 2-D", tc.tensor)
		}
		ref, ok := ts["out."+tc.tensor+".dequant_f32"]
		if !ok {
			ref = ts["out."+tc.tensor]
		}
		want := ref.float32s()
		n, rowBytes := raw.shape[0], raw.shape[1]
		k := len(want) / n
		if rb, err := tc.dtype.RowBytes(k); err != nil || rb != rowBytes {
			t.Fatalf("%s: %d columns give %d bytes a row (%v), fixture has %d", tc.tensor, k, rb, err, rowBytes)
		}
		for _, e := range enginesUnderTest(t) {
			t.Run(engineName(e)+"/"+tc.tensor, func(t *testing.T) {
				got := make([]float32, k)
				for j := 0; j < n; j++ {
					e.k.decodeRow(tc.dtype, got, raw.data[j*rowBytes:], 0)
					for i, g := range got {
						if w := want[j*k+i]; math.Float32bits(g) != math.Float32bits(w) {
							t.Fatalf("row %d col %d: %g, want %g", j, i, g, w)
						}
					}
				}
				for _, m := range []int{1, 3, 30} {
					x, y := randSlice(r, m*k), make([]float32, m*n)
					wantY, mag := refGEMM(false, true, m, n, k, x, k, want, k, y, n, false)
					w := Weight{DType: tc.dtype, N: n, K: k, Data: raw.data}
					if err := e.Linear(m, x, k, w, y, n, false); err != nil {
						t.Fatal(err)
					}
					checkClose(t, m, n, k, y, n, wantY, mag)
				}
			})
		}
	}
}

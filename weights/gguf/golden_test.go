package gguf

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// goldenCase is the part of a gguf manifest case these tests read.
type goldenCase struct {
	Case     string   `json:"case"`
	File     string   `json:"file"`
	Kind     string   `json:"kind"`
	SHA256   string   `json:"sha256"`
	GGUFFile string   `json:"gguf_file"`
	Tensors  []string `json:"-"`
	// TensorsInfo describes each tensor of the sidecar case.
	TensorsInfo map[string]struct {
		GGMLType   string  `json:"ggml_type"`
		GGMLTypeID uint32  `json:"ggml_type_id"`
		BlockSize  int     `json:"block_size"`
		TypeSize   int     `json:"type_size"`
		Shape      []int64 `json:"shape"`
	} `json:"tensors_info"`
	Tolerance struct {
		Abs float64 `json:"abs"`
		Rel float64 `json:"rel"`
	} `json:"tolerance"`
	RawTensors json.RawMessage `json:"tensors"`
}

// TestGolden checks every case of ../shared/golden/gguf/manifest.json: the .gguf file
// parses with the listed tensors, and every tensor dequantizes to ComfyUI-GGUF's
// float32-math values (dequant_dtype=float32, equal to gguf-py) within the case tolerance
// (exact). The raw bytes are also checked against the sidecar's in.<t>.bytes.
func TestGolden(t *testing.T) {
	dir, cases := testenv.GoldenCases[goldenCase](t, "gguf")
	for _, c := range cases {
		t.Run(c.Case, func(t *testing.T) {
			if c.Kind == "gguf" {
				if err := json.Unmarshal(c.RawTensors, &c.Tensors); err != nil {
					t.Fatalf("case %q: tensors: %v", c.Case, err)
				}
				goldenFile(t, dir, c)
				return
			}
			if c.GGUFFile == "" {
				t.Fatalf("case %q: neither a gguf file nor a sidecar of one", c.Case)
			}
			goldenSidecar(t, dir, c)
		})
	}
}

func goldenFile(t *testing.T, dir string, c goldenCase) {
	path := filepath.Join(dir, c.File)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != c.SHA256 {
		t.Fatalf("%s: sha256 differs from the manifest", path)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	for _, ti := range f.Tensors() {
		names = append(names, ti.Name)
	}
	if !slices.Equal(names, c.Tensors) {
		t.Errorf("tensors %v, manifest lists %v", names, c.Tensors)
	}
	if arch, _ := f.Metadata().String("general.architecture"); arch != "flux" {
		t.Errorf("general.architecture = %q, want flux", arch)
	}
	if v := f.Header().Version; v != 2 && v != 3 {
		t.Errorf("version %d", v)
	}
}

func goldenSidecar(t *testing.T, dir string, c goldenCase) {
	f, err := Open(filepath.Join(dir, c.GGUFFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	exp, err := safetensors.Open(filepath.Join(dir, c.File))
	if err != nil {
		t.Fatal(err)
	}
	defer exp.Close()
	if len(c.TensorsInfo) == 0 {
		t.Fatal("case lists no tensors")
	}
	names := make([]string, 0, len(c.TensorsInfo))
	for name := range c.TensorsInfo {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		info := c.TensorsInfo[name]
		t.Run(name, func(t *testing.T) {
			tn, err := f.Tensor(name)
			if err != nil {
				t.Fatal(err)
			}
			if tn.Type.String() != info.GGMLType || uint32(tn.Type) != info.GGMLTypeID ||
				tn.Type.BlockSize() != info.BlockSize || tn.Type.TypeSize() != info.TypeSize {
				t.Errorf("type %s (%d, block %d, %d bytes), manifest %s (%d, block %d, %d bytes)", tn.Type, uint32(tn.Type),
					tn.Type.BlockSize(), tn.Type.TypeSize(), info.GGMLType, info.GGMLTypeID, info.BlockSize, info.TypeSize)
			}
			if !slices.Equal(tn.Shape(), info.Shape) {
				t.Errorf("shape %v, manifest %v", tn.Shape(), info.Shape)
			}
			rawT, err := exp.Tensor("in." + name + ".bytes")
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(rawT.Data, tn.Data) {
				t.Errorf("stored bytes differ from in.%s.bytes", name)
			}
			want, err := exp.Tensor("out." + name + ".dequant_f32")
			if err != nil {
				want, err = exp.Tensor("out." + name)
			}
			if err != nil {
				t.Fatal(err)
			}
			wantV, err := want.Float32()
			if err != nil {
				t.Fatal(err)
			}
			got, err := tn.Float32()
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(wantV) {
				t.Fatalf("%d values, want %d", len(got), len(wantV))
			}
			bad := 0
			for i := range got {
				g, w := float64(got[i]), float64(wantV[i])
				if math.Abs(g-w) > c.Tolerance.Abs+c.Tolerance.Rel*math.Abs(w) || math.IsNaN(g) != math.IsNaN(w) {
					if bad < 5 {
						t.Errorf("[%d] = %g, want %g", i, g, w)
					}
					bad++
				}
			}
			if bad > 0 {
				t.Errorf("%d of %d values differ", bad, len(got))
			}
			// Row access covers the same bytes as the whole tensor.
			row, err := tn.Row(tn.Rows() - 1)
			if err != nil || !bytes.Equal(row, tn.Data[int64(len(tn.Data))-tn.RowSize():]) {
				t.Errorf("last row: %v", err)
			}
		})
	}
}

// TestGoldenQuantize quantizes each golden source tensor (out.<t>.source) and compares the
// bytes with the stored ones (in.<t>.bytes), which gguf-py's quantizers produced.
func TestGoldenQuantize(t *testing.T) {
	dir := filepath.Join(testenv.GoldenDir(t), "gguf")
	f, err := Open(filepath.Join(dir, "quant_types.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	exp, err := safetensors.Open(filepath.Join(dir, "quant_types.expected.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer exp.Close()
	n := 0
	for _, info := range f.Header().Tensors {
		src, err := exp.Tensor("out." + info.Name + ".source")
		if err != nil {
			continue // K-quants: random blocks, no source
		}
		n++
		t.Run(info.Name, func(t *testing.T) {
			if !info.Type.CanQuantize() {
				t.Fatalf("%s has a source but no quantizer", info.Type)
			}
			x, err := src.Float32()
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, info.Size)
			if err := Quantize(got, info.Type, x); err != nil {
				t.Fatal(err)
			}
			want, _ := f.Tensor(info.Name)
			for i := range got {
				if got[i] != want.Data[i] {
					bs := int64(info.Type.TypeSize())
					t.Fatalf("byte %d (block %d) = %#02x, gguf-py wrote %#02x", i, int64(i)/bs, got[i], want.Data[i])
				}
			}
		})
	}
	if n < 8 {
		t.Fatalf("only %d tensors have a source", n)
	}
}

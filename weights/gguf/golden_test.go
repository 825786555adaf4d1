package gguf

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// goldenCase is the part of a gguf manifest case these tests read: either the .gguf
// file itself (kind "gguf", its tensor names in "tensors") or the sidecar of one
// (gguf_file), whose tensors_info describes each tensor and whose file holds the raw
// bytes and ComfyUI-GGUF's dequantized values.
type goldenCase struct {
	testenv.Case
	Kind     string   `json:"kind"`
	GGUFFile string   `json:"gguf_file"`
	Writer   string   `json:"writer"`
	Tensors  []string `json:"-"`
	// TensorsInfo describes each tensor of the sidecar case.
	TensorsInfo map[string]struct {
		GGMLType   string  `json:"ggml_type"`
		GGMLTypeID uint32  `json:"ggml_type_id"`
		BlockSize  int     `json:"block_size"`
		TypeSize   int     `json:"type_size"`
		Shape      []int64 `json:"shape"`
	} `json:"tensors_info"`
	RawTensors json.RawMessage `json:"tensors"`
}

// writerArchRE reads the architecture a sidecar's writer note names
// ("gguf-py GGUFWriter, arch 'flux'").
var writerArchRE = regexp.MustCompile(`arch '([^']+)'`)

// TestGolden checks every case of the golden gguf family: each .gguf file parses with
// the tensors the manifest lists, and every tensor of a sidecar dequantizes to
// ComfyUI-GGUF's float32-math values (dequant_dtype=float32, equal to gguf-py) within
// the case tolerance (exact). The raw bytes are also checked against the sidecar's
// in.<t>.bytes.
func TestGolden(t *testing.T) {
	_, cases := testenv.GoldenCases[goldenCase](t, "gguf")
	arch := map[string]string{} // .gguf file → the architecture its sidecar's writer names
	for _, c := range cases {
		if m := writerArchRE.FindStringSubmatch(c.Writer); m != nil && c.GGUFFile != "" {
			arch[c.GGUFFile] = m[1]
		}
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			switch {
			case c.Kind == "gguf":
				if err := json.Unmarshal(c.RawTensors, &c.Tensors); err != nil {
					t.Fatal(c.FieldError("tensors", "%v", err))
				}
				goldenFile(t, c, arch[c.File])
			case c.Kind != "":
				t.Fatal(c.FieldError("kind", "unknown kind %q", c.Kind))
			case c.GGUFFile == "":
				t.Fatal(c.FieldError("gguf_file", "missing: the case is neither a gguf file nor a sidecar of one"))
			default:
				goldenSidecar(t, c)
			}
		})
	}
}

func goldenFile(t *testing.T, c goldenCase, arch string) {
	data, err := os.ReadFile(c.Path())
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != c.SHA256 {
		t.Fatalf("%s: sha256 differs from the manifest", c.Path())
	}
	f, err := Open(c.Path())
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
	if got, _ := f.Metadata().String("general.architecture"); arch != "" && got != arch {
		t.Errorf("general.architecture = %q, the sidecar's writer names %q", got, arch)
	}
	if v := f.Header().Version; v != 2 && v != 3 {
		t.Errorf("version %d", v)
	}
}

func goldenSidecar(t *testing.T, c goldenCase) {
	f, err := Open(filepath.Join(c.Dir(), c.GGUFFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	exp, err := safetensors.Open(c.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer exp.Close()
	if len(c.TensorsInfo) == 0 {
		t.Fatal(c.FieldError("tensors_info", "lists no tensors"))
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
			testenv.Close(t, name, got, wantV, c.Tolerance)
			// Row access covers the same bytes as the whole tensor.
			row, err := tn.Row(tn.Rows() - 1)
			if err != nil || !bytes.Equal(row, tn.Data[int64(len(tn.Data))-tn.RowSize():]) {
				t.Errorf("last row: %v", err)
			}
		})
	}
}

// TestGoldenQuantize quantizes each golden source tensor (out.<t>.source) of every
// sidecar and compares the bytes with the stored ones (in.<t>.bytes), which gguf-py's
// quantizers produced.
func TestGoldenQuantize(t *testing.T) {
	_, cases := testenv.GoldenCases[goldenCase](t, "gguf")
	n := 0
	for _, c := range cases {
		if c.GGUFFile == "" {
			continue
		}
		f, err := Open(filepath.Join(c.Dir(), c.GGUFFile))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		exp, err := safetensors.Open(c.Path())
		if err != nil {
			t.Fatal(err)
		}
		defer exp.Close()
		for _, info := range f.Header().Tensors {
			if _, ok := c.IO["out."+info.Name+".source"]; !ok {
				continue // K-quants: random blocks, no source
			}
			n++
			t.Run(c.Name+"/"+info.Name, func(t *testing.T) {
				src, err := exp.Tensor("out." + info.Name + ".source")
				if err != nil {
					t.Fatal(err)
				}
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
	}
	if n == 0 {
		t.Fatal("no sidecar of the gguf family holds a source tensor")
	}
}

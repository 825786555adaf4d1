package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/internal/mmap"
)

// raw builds a file from a literal header and data area.
func raw(header string, data []byte) []byte {
	b := make([]byte, 8, 8+len(header)+len(data))
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

func TestHeaderErrors(t *testing.T) {
	okT := `"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}`
	tests := []struct {
		name        string
		file        []byte
		want        string // substring of the error
		unsupported bool
	}{
		{"empty", nil, "shorter than the 8-byte header length", false},
		{"short length", []byte{1, 2, 3}, "shorter than", false},
		{"huge length", append(binary.LittleEndian.AppendUint64(nil, 1<<40), '{', '}'), "exceeds the 100000000-byte limit", false},
		{"length past end", append(binary.LittleEndian.AppendUint64(nil, 100), '{', '}'), "runs past the end", false},
		{"not an object", raw(`[]`, nil), `want "{", got "["`, false},
		{"bad json", raw(`{"a":`, nil), "unexpected end of JSON", false},
		{"invalid utf8", raw("{\"\xff\":1}", nil), "not valid UTF-8", false},
		{"trailing data", raw(`{} x`, nil), "data after the header object", false},
		{"trailing object", raw(`{}{}`, nil), "data after the header object", false},
		{"tensor not object", raw(`{"a":3}`, nil), `tensor "a": offset 13: header: want "{", got number 3`, false},
		{"unknown dtype", raw(`{"a":{"dtype":"F31","shape":[],"data_offsets":[0,4]}}`, make([]byte, 4)), `unknown dtype "F31"`, false},
		{"unsupported dtype", raw(`{"a":{"dtype":"F8_E8M0","shape":[1],"data_offsets":[0,1]}}`, make([]byte, 1)), "unsupported feature", true},
		{"dtype not string", raw(`{"a":{"dtype":4,"shape":[],"data_offsets":[0,4]}}`, make([]byte, 4)), "dtype: want a string", false},
		{"negative dim", raw(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, make([]byte, 4)), "-1 is not a non-negative", false},
		{"float dim", raw(`{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}`, make([]byte, 4)), "1.5 is not a non-negative", false},
		{"missing shape", raw(`{"a":{"dtype":"F32","data_offsets":[0,4]}}`, make([]byte, 4)), "missing shape", false},
		{"missing dtype", raw(`{"a":{"shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), "missing dtype", false},
		{"missing offsets", raw(`{"a":{"dtype":"F32","shape":[1]}}`, make([]byte, 4)), "missing data_offsets", false},
		{"unknown field", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}`, make([]byte, 4)), `unknown field "x"`, false},
		{"three offsets", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, make([]byte, 8)), "has 3 values, want 2", false},
		{"offsets reversed", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}`, make([]byte, 4)), "end before they begin", false},
		{"size mismatch", raw(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, make([]byte, 8)), "needs 12 bytes, data_offsets [0, 8] hold 8", false},
		{"shape overflow", raw(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, make([]byte, 8)), "overflows", false},
		{"duplicate key", raw(`{`+okT+`,`+okT+`}`, make([]byte, 8)), `tensor "a": offset 66: header: duplicate key`, false},
		{"duplicate metadata", raw(`{"__metadata__":{},"__metadata__":{}}`, nil), "duplicate key", false},
		{"metadata value not string", raw(`{"__metadata__":{"k":1}}`, nil), `value of "k": want a string, got number 1`, false},
		{"metadata not object", raw(`{"__metadata__":[]}`, nil), "want an object of strings", false},
		{"truncated data", raw(`{`+okT+`}`, make([]byte, 4)), `tensor "a": offset 62: data_offsets [0, 8] run past the 4-byte data area`, false},
		{"trailing bytes", raw(`{`+okT+`}`, make([]byte, 12)), "tensors cover 8 bytes of the 12-byte data area", false},
		{"gap", raw(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, make([]byte, 2)), "gap of 1 bytes", false},
		{"overlap", raw(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}`, make([]byte, 3)), `tensor "b"`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := OpenBytes("m.safetensors", tc.file)
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "safetensors: ") || !strings.Contains(err.Error(), "m.safetensors: ") {
				t.Errorf("error %q does not name the package and the file", err)
			}
			var fe *weights.FormatError
			var ue *weights.UnsupportedError
			if tc.unsupported && !errors.As(err, &ue) {
				t.Errorf("error %T, want *weights.UnsupportedError", err)
			}
			if !tc.unsupported && !errors.As(err, &fe) {
				t.Errorf("error %T, want *weights.FormatError", err)
			}
		})
	}
}

func TestHeaderAccepts(t *testing.T) {
	tests := []struct {
		name    string
		file    []byte
		tensors int
	}{
		{"empty object", raw(`{}`, nil), 0},
		{"space padding", raw(`{}      `, nil), 0},
		{"null metadata", raw(`{"__metadata__":null}`, nil), 0},
		{"zero-size tensors", raw(`{"b":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"a":{"dtype":"F16","shape":[],"data_offsets":[0,2]}}`, make([]byte, 2)), 2},
		{"unsorted offsets", raw(`{"b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, make([]byte, 2)), 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := OpenBytes("m.safetensors", tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(f.Tensors()); got != tc.tensors {
				t.Fatalf("%d tensors, want %d", got, tc.tensors)
			}
			// Data order: offsets never decrease.
			for i := 1; i < len(f.Tensors()); i++ {
				if f.Tensors()[i].Offset < f.Tensors()[i-1].Offset {
					t.Errorf("tensors not in data order: %v", f.Tensors())
				}
			}
		})
	}
}

// allDTypes writes one tensor of every dtype with known bytes.
func allDTypes() []Entry {
	var es []Entry
	for i, dt := range []weights.DType{weights.F64, weights.F32, weights.F16, weights.BF16, weights.F8_E4M3, weights.F8_E5M2,
		weights.I64, weights.I32, weights.I16, weights.I8, weights.U8, weights.BOOL, weights.U16, weights.U32, weights.U64} {
		shape := []int64{2, 3}
		data := make([]byte, 6*dt.ElemSize())
		for j := range data {
			data[j] = byte(i*7 + j)
		}
		if dt == weights.BOOL {
			data = []byte{0, 1, 1, 0, 1, 0}
		}
		es = append(es, Entry{Name: "t." + strings.ToLower(string(dt)), DType: dt, Shape: shape, Data: data})
	}
	return es
}

func TestRoundTripAllDTypes(t *testing.T) {
	entries := allDTypes()
	entries = append(entries, Entry{Name: "scalar", DType: weights.F32, Shape: []int64{}, Data: []byte{0, 0, 0x80, 0x3f}})
	// A streamed tensor: its bytes come from WriteData.
	entries = append(entries, Entry{Name: "streamed", DType: weights.U8, Shape: []int64{3}, WriteData: func(w io.Writer) error {
		_, err := w.Write([]byte{7, 8, 9})
		return err
	}})
	meta := map[string]string{"format": "pt", "note": "ünïcode \"quoted\""}
	path := filepath.Join(t.TempDir(), "all.safetensors")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(out, entries, meta); err != nil {
		t.Fatal(err)
	}
	out.Close()

	h, err := ReadHeader(path)
	if err != nil {
		t.Fatal(err)
	}
	if h.DataOffset%8 != 0 {
		t.Errorf("data offset %d not 8-aligned", h.DataOffset)
	}
	if len(h.Tensors) != len(entries) || h.Metadata["note"] != meta["note"] {
		t.Fatalf("header: %d tensors, metadata %v", len(h.Tensors), h.Metadata)
	}
	for _, useMmap := range []bool{true, false} {
		f, err := openWith(path, useMmap)
		if err != nil {
			t.Fatal(err)
		}
		if f.Mapped() != useMmap {
			t.Errorf("Mapped() = %v, want %v", f.Mapped(), useMmap)
		}
		for _, e := range entries {
			tn, err := f.Tensor(e.Name)
			if err != nil {
				t.Fatal(err)
			}
			want := e.Data
			if e.Name == "streamed" {
				want = []byte{7, 8, 9}
			}
			if tn.DType != e.DType || !slicesEqual(tn.Shape, e.Shape) || !bytes.Equal(tn.Data, want) {
				t.Errorf("%s: got %s %v %x, want %s %v %x", e.Name, tn.DType, tn.Shape, tn.Data, e.DType, e.Shape, want)
			}
		}
		if _, err := f.Tensor("missing"); err == nil || !strings.Contains(err.Error(), `no tensor "missing"`) {
			t.Errorf("missing tensor: %v", err)
		}
		f.Close()
		if _, err := f.Tensor(entries[0].Name); !errors.Is(err, ErrClosed) {
			t.Errorf("after Close: %v, want ErrClosed", err)
		}
	}
}

// openWith opens path mapped or read into memory, to test both paths.
func openWith(path string, useMmap bool) (*File, error) {
	if useMmap {
		return Open(path)
	}
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	st, _ := fh.Stat()
	r, err := mmap.ReadAll(fh, st.Size())
	if err != nil {
		return nil, err
	}
	return newFile(path, r)
}

func slicesEqual(a, b []int64) bool {
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

func TestFloat32(t *testing.T) {
	le := binary.LittleEndian
	f32 := func(v ...float32) []byte {
		var b []byte
		for _, x := range v {
			b = le.AppendUint32(b, math.Float32bits(x))
		}
		return b
	}
	tests := []struct {
		name string
		dt   weights.DType
		data []byte
		want []float32
	}{
		{"f32", weights.F32, f32(1.5, -2, 1e-40), []float32{1.5, -2, 1e-40}},
		{"f64", weights.F64, le.AppendUint64(le.AppendUint64(nil, math.Float64bits(0.1)), math.Float64bits(-3)), []float32{0.1, -3}},
		{"f16", weights.F16, []byte{0x00, 0x3c, 0x00, 0xc0, 0x01, 0x00, 0xff, 0x7b}, []float32{1, -2, 5.9604645e-08, 65504}},
		{"bf16", weights.BF16, []byte{0x80, 0x3f, 0x49, 0x40}, []float32{1, 3.140625}},
		// e4m3fn: 0x38 = 1.0, 0x7e = 448 (max), 0x01 = 2^-9, 0xb8 = -1.
		{"f8_e4m3", weights.F8_E4M3, []byte{0x38, 0x7e, 0x01, 0xb8}, []float32{1, 448, 1.0 / 512, -1}},
		// e5m2: 0x3c = 1.0, 0x7b = 57344 (max), 0x01 = 2^-16.
		{"f8_e5m2", weights.F8_E5M2, []byte{0x3c, 0x7b, 0x01}, []float32{1, 57344, 1.0 / 65536}},
		{"i8", weights.I8, []byte{0xff, 5}, []float32{-1, 5}},
		{"i64", weights.I64, le.AppendUint64(nil, uint64(0xfffffffffffffffe)), []float32{-2}},
		{"bool", weights.BOOL, []byte{0, 2}, []float32{0, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := int64(len(tc.data) / tc.dt.ElemSize())
			var buf bytes.Buffer
			if err := Write(&buf, []Entry{{Name: "x", DType: tc.dt, Shape: []int64{n}, Data: tc.data}}, nil); err != nil {
				t.Fatal(err)
			}
			f, err := OpenBytes("x.safetensors", buf.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			tn, _ := f.Tensor("x")
			got, err := tn.Float32()
			if err != nil {
				t.Fatal(err)
			}
			for i := range tc.want {
				if got[i] != tc.want[i] {
					t.Errorf("[%d] = %g, want %g", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestWriteErrors(t *testing.T) {
	tests := []struct {
		name string
		e    []Entry
		want string
	}{
		{"duplicate", []Entry{{Name: "a", DType: weights.U8, Shape: []int64{1}, Data: []byte{1}}, {Name: "a", DType: weights.U8, Shape: []int64{1}, Data: []byte{1}}}, "duplicate tensor"},
		{"reserved name", []Entry{{Name: "__metadata__", DType: weights.U8, Shape: []int64{1}, Data: []byte{1}}}, "invalid name"},
		{"bad dtype", []Entry{{Name: "a", DType: "Q4_0", Shape: []int64{1}, Data: []byte{1}}}, "unknown dtype"},
		{"short data", []Entry{{Name: "a", DType: weights.F32, Shape: []int64{2}, Data: []byte{1}}}, "needs 8 bytes, got 1"},
		{"short stream", []Entry{{Name: "a", DType: weights.U8, Shape: []int64{2}, WriteData: func(w io.Writer) error { _, err := w.Write([]byte{1}); return err }}}, "wrote 1 bytes, want 2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Write(io.Discard, tc.e, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// ggufSidecar is a sidecar case of the golden gguf family, written by the Python
// safetensors package: per tensor of a .gguf file its raw bytes (in.<t>.bytes, U8,
// one row per tensor row) and ComfyUI-GGUF's float32 values (out.<t>).
type ggufSidecar struct {
	testenv.Case
	GGUFFile    string `json:"gguf_file"`
	TensorsInfo map[string]struct {
		Shape     []int64 `json:"shape"`
		BlockSize int64   `json:"block_size"`
		TypeSize  int64   `json:"type_size"`
	} `json:"tensors_info"`
}

// TestGoldenFile reads files written by the Python safetensors package, the gguf
// family's sidecars: the case metadata, and each tensor's dtype, shape and size as the
// manifest describes them.
func TestGoldenFile(t *testing.T) {
	_, cases := testenv.GoldenCases[ggufSidecar](t, "gguf")
	n := 0
	for _, c := range cases {
		if c.GGUFFile == "" {
			continue
		}
		n++
		t.Run(c.Name, func(t *testing.T) {
			f, err := Open(c.Path())
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if !strings.Contains(f.Metadata()["case"], `"family"`) {
				t.Errorf("metadata case = %.80q", f.Metadata()["case"])
			}
			for name, info := range c.TensorsInfo {
				if len(info.Shape) == 0 || info.BlockSize <= 0 || info.TypeSize <= 0 {
					t.Fatal(c.FieldError("tensors_info."+name, "needs shape, block_size and type_size"))
				}
				tn, err := f.Tensor("out." + name)
				if err != nil {
					t.Fatal(err)
				}
				if tn.DType != weights.F32 || !slicesEqual(tn.Shape, info.Shape) {
					t.Errorf("out.%s: %v, want F32 %v", name, tn.TensorInfo, info.Shape)
				}
				rows, cols := int64(1), info.Shape[len(info.Shape)-1]
				for _, d := range info.Shape[:len(info.Shape)-1] {
					rows *= d
				}
				b, err := f.Tensor("in." + name + ".bytes")
				if err != nil {
					t.Fatal(err)
				}
				if want := rows * cols / info.BlockSize * info.TypeSize; b.DType != weights.U8 || b.Size != want {
					t.Errorf("in.%s.bytes: %v, want U8 of %d bytes", name, b.TensorInfo, want)
				}
			}
		})
	}
	if n == 0 {
		t.Fatal("the gguf family has no sidecar")
	}
}

// TestSortEntriesAligns writes mixed dtypes in sorted order and checks every tensor
// starts at a multiple of its element size.
func TestSortEntriesAligns(t *testing.T) {
	es := []Entry{
		{Name: "b", DType: weights.U8, Shape: []int64{3}, Data: make([]byte, 3)},
		{Name: "a", DType: weights.F16, Shape: []int64{3}, Data: make([]byte, 6)},
		{Name: "c", DType: weights.F32, Shape: []int64{1}, Data: make([]byte, 4)},
		{Name: "d", DType: weights.F64, Shape: []int64{1}, Data: make([]byte, 8)},
		{Name: "e", DType: weights.F32, Shape: []int64{1}, Data: make([]byte, 4)},
	}
	SortEntries(es)
	var order []string
	for _, e := range es {
		order = append(order, e.Name)
	}
	if got := strings.Join(order, ""); got != "dceab" {
		t.Errorf("order %q, want dceab", got)
	}
	var buf bytes.Buffer
	if err := Write(&buf, es, nil); err != nil {
		t.Fatal(err)
	}
	f, err := OpenBytes("s.safetensors", buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range f.Tensors() {
		if ti.Offset%int64(ti.DType.ElemSize()) != 0 {
			t.Errorf("%s at offset %d", ti, ti.Offset)
		}
	}
}

// TestGoldenCorpus opens every safetensors case file of every golden family (written by
// the Python safetensors package: F16, F32, F64, I64 and U8 tensors, JSON metadata with
// escapes) and converts every tensor: the strict validation must accept all of them, and
// each file's metadata must be its manifest case.
func TestGoldenCorpus(t *testing.T) {
	n := 0
	for _, fam := range testenv.GoldenFamilies(t) {
		_, cases := testenv.GoldenCases[struct {
			testenv.Case
			Kind string `json:"kind"`
		}](t, fam)
		for _, c := range cases {
			switch c.Kind {
			case "":
			case "gguf":
				continue // the gguf family's model file; its sidecar is safetensors
			default:
				t.Fatal(c.FieldError("kind", "unknown kind %q", c.Kind))
			}
			n++
			f, err := Open(c.Path())
			if err != nil {
				t.Error(err)
				continue
			}
			var meta struct {
				Case string `json:"case"`
			}
			if err := json.Unmarshal([]byte(f.Metadata()["case"]), &meta); err != nil || meta.Case != c.Name {
				t.Errorf("%s: metadata case %q (%v), manifest case %q", c.Path(), meta.Case, err, c.Name)
			}
			for _, info := range f.Tensors() {
				tn, err := f.Tensor(info.Name)
				if err == nil {
					_, err = tn.Float32()
				}
				if err != nil {
					t.Errorf("%s: %v", c.Path(), err)
				}
			}
			f.Close()
		}
	}
	if n == 0 {
		t.Error("no golden safetensors file found")
	}
}

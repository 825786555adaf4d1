package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/internal/dtype"
	"github.com/forgeflow/forgeflow/weights"
)

// sampleKVs has one pair of every value type, arrays of every element type and a nested
// array.
func sampleKVs() []KV {
	return []KV{
		{"general.architecture", TypeString, "flux"},
		{"u8", TypeUint8, uint8(200)},
		{"i8", TypeInt8, int8(-5)},
		{"u16", TypeUint16, uint16(60000)},
		{"i16", TypeInt16, int16(-300)},
		{"u32", TypeUint32, uint32(4000000000)},
		{"i32", TypeInt32, int32(-70000)},
		{"f32", TypeFloat32, float32(1.25)},
		{"bool", TypeBool, true},
		{"u64", TypeUint64, uint64(1) << 60},
		{"i64", TypeInt64, int64(-1) << 40},
		{"f64", TypeFloat64, 2.5e-300},
		{"a.u8", TypeArray, Array{TypeUint8, []uint8{1, 2, 3}}},
		{"a.i8", TypeArray, Array{TypeInt8, []int8{-1, 2}}},
		{"a.u16", TypeArray, Array{TypeUint16, []uint16{1, 65535}}},
		{"a.i16", TypeArray, Array{TypeInt16, []int16{-2}}},
		{"a.u32", TypeArray, Array{TypeUint32, []uint32{7}}},
		{"a.i32", TypeArray, Array{TypeInt32, []int32{-7, 7}}},
		{"a.f32", TypeArray, Array{TypeFloat32, []float32{0.5, -0.25}}},
		{"a.bool", TypeArray, Array{TypeBool, []bool{true, false}}},
		{"a.str", TypeArray, Array{TypeString, []string{"a", "", "ü"}}},
		{"a.u64", TypeArray, Array{TypeUint64, []uint64{1 << 63}}},
		{"a.i64", TypeArray, Array{TypeInt64, []int64{-9}}},
		{"a.f64", TypeArray, Array{TypeFloat64, []float64{math.Pi}}},
		{"a.empty", TypeArray, Array{TypeFloat32, []float32{}}},
		{"a.nested", TypeArray, Array{TypeArray, []Array{
			{TypeString, []string{"x"}},
			{TypeArray, []Array{{TypeInt32, []int32{1, 2}}}},
		}}},
	}
}

func q8Block(d float32, q func(i int) int8) []byte {
	b := binary.LittleEndian.AppendUint16(nil, dtype.F32ToF16(d))
	for i := 0; i < 32; i++ {
		b = append(b, byte(q(i)))
	}
	return b
}

func sampleTensors() []WriteTensor {
	f32 := make([]byte, 0, 24)
	for _, v := range []float32{1, 2, 3, 4, 5, 6} {
		f32 = binary.LittleEndian.AppendUint32(f32, math.Float32bits(v))
	}
	q8 := append(q8Block(0.5, func(i int) int8 { return int8(i - 16) }), q8Block(-2, func(i int) int8 { return int8(i) })...)
	return []WriteTensor{
		{Name: "w.f32", Type: TypeF32, Dims: []uint64{3, 2}, Data: f32},
		{Name: "w.q8", Type: TypeQ8_0, Dims: []uint64{32, 2}, Data: q8},
		{Name: "w.i8", Type: TypeI8, Dims: []uint64{3}, Data: []byte{0xff, 0, 1}},
	}
}

func writeSample(t *testing.T, kvs []KV) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(&buf, kvs, sampleTensors()); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version uint32
		align   uint32
	}{{"v3 default alignment", 3, 0}, {"v2", 2, 0}, {"v3 alignment 64", 3, 64}, {"v3 alignment 1", 3, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			kvs := sampleKVs()
			if tc.align != 0 {
				kvs = append(kvs, KV{"general.alignment", TypeUint32, tc.align})
			}
			b := writeSample(t, kvs)
			binary.LittleEndian.PutUint32(b[4:], tc.version)
			path := filepath.Join(t.TempDir(), "x.gguf")
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			h := f.Header()
			if h.Version != tc.version {
				t.Errorf("version %d", h.Version)
			}
			if want := int64(max(tc.align, 1)); tc.align != 0 && h.Alignment != want || tc.align == 0 && h.Alignment != DefaultAlignment {
				t.Errorf("alignment %d", h.Alignment)
			}
			if h.DataOffset%h.Alignment != 0 {
				t.Errorf("data offset %d not aligned to %d", h.DataOffset, h.Alignment)
			}
			if !reflect.DeepEqual([]KV(h.Metadata[:len(sampleKVs())]), sampleKVs()) {
				t.Errorf("metadata differs:\n got %v\nwant %v", h.Metadata, sampleKVs())
			}
			for _, wt := range sampleTensors() {
				tn, err := f.Tensor(wt.Name)
				if err != nil {
					t.Fatal(err)
				}
				if tn.Type != wt.Type || !reflect.DeepEqual(tn.Dims, wt.Dims) || !bytes.Equal(tn.Data, wt.Data) {
					t.Errorf("%s: %v %v", wt.Name, tn.Type, tn.Dims)
				}
				if tn.AbsOffset%h.Alignment != 0 {
					t.Errorf("%s at %d, not aligned", wt.Name, tn.AbsOffset)
				}
			}
			ws := f.Tensors()
			if ws[1].Name != "w.q8" || ws[1].DType != "Q8_0" || !reflect.DeepEqual(ws[1].Shape, []int64{2, 32}) || ws[1].Size != 68 {
				t.Errorf("weights info %+v", ws[1])
			}
			q8, _ := f.Tensor("w.q8")
			v, err := q8.Float32()
			if err != nil {
				t.Fatal(err)
			}
			if v[0] != -8 || v[31] != 7.5 || v[32] != 0 || v[63] != -62 {
				t.Errorf("q8_0 values %v %v %v %v", v[0], v[31], v[32], v[63])
			}
			if r, _ := q8.Row(1); !bytes.Equal(r, q8.Data[34:]) {
				t.Errorf("row 1 differs")
			}
			if _, err := q8.Row(2); err == nil {
				t.Errorf("row 2 of 2: no error")
			}
		})
	}
}

func TestMetadataGetters(t *testing.T) {
	m := Metadata(sampleKVs())
	if v, ok := m.Uint("u8"); !ok || v != 200 {
		t.Errorf("Uint(u8) = %v %v", v, ok)
	}
	if v, ok := m.Int("i16"); !ok || v != -300 {
		t.Errorf("Int(i16) = %v %v", v, ok)
	}
	if _, ok := m.Uint("i8"); ok {
		t.Errorf("Uint of a negative value succeeded")
	}
	if _, ok := m.Int("a.u64"); ok {
		t.Errorf("Int of an array succeeded")
	}
	if v, ok := m.Float("f32"); !ok || v != 1.25 {
		t.Errorf("Float(f32) = %v %v", v, ok)
	}
	if a, ok := m.Array("a.str"); !ok || a.Len() != 3 {
		t.Errorf("Array(a.str) = %v %v", a, ok)
	}
	if s, ok := m.String("general.architecture"); !ok || s != "flux" {
		t.Errorf("String = %q", s)
	}
}

// header builds a GGUF image by hand: magic, version, counts, then body.
func header(version uint32, nTensors, nKV uint64, body ...[]byte) []byte {
	b := append([]byte("GGUF"), binary.LittleEndian.AppendUint32(nil, version)...)
	b = binary.LittleEndian.AppendUint64(b, nTensors)
	b = binary.LittleEndian.AppendUint64(b, nKV)
	for _, p := range body {
		b = append(b, p...)
	}
	return b
}

func gstr(s string) []byte {
	return append(binary.LittleEndian.AppendUint64(nil, uint64(len(s))), s...)
}
func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func u64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// tinfo encodes a tensor info.
func tinfo(name string, typ Type, off uint64, dims ...uint64) []byte {
	b := append(gstr(name), u32(uint32(len(dims)))...)
	for _, d := range dims {
		b = append(b, u64(d)...)
	}
	return append(append(b, u32(uint32(typ))...), u64(off)...)
}

func TestParseErrors(t *testing.T) {
	data := make([]byte, 64)
	tests := []struct {
		name        string
		file        []byte
		want        string
		unsupported bool
	}{
		{"empty", nil, "magic: need 4 bytes", false},
		{"bad magic", []byte("GGML\x03\x00\x00\x00"), `bad magic "GGML"`, false},
		{"version 1", header(1, 0, 0), "GGUF version 1", true},
		{"big endian", append([]byte("GGUF"), 0, 0, 0, 3), "big-endian", true},
		{"version 9", header(9, 0, 0), "unknown version 9", false},
		{"truncated counts", []byte("GGUF\x03\x00\x00\x00\x01"), "tensor count: need 8 bytes", false},
		{"huge counts", header(3, 1<<40, 1<<40), "cannot fit", false},
		{"truncated key", header(3, 0, 1, u64(100), make([]byte, 10)), "metadata key: need 100 bytes", false},
		{"unknown value type", header(3, 0, 1, gstr("k"), u32(13), u64(0)), `tensor "k": offset 37: unknown value type 13`, false},
		{"bad bool", header(3, 0, 1, gstr("k"), u32(uint32(TypeBool)), []byte{2}), "bool value 2", false},
		{"huge array", header(3, 0, 1, gstr("k"), u32(uint32(TypeArray)), u32(uint32(TypeUint64)), u64(1<<61)), "cannot fit", false},
		{"huge string", header(3, 0, 1, gstr("k"), u32(uint32(TypeString)), u64(1<<62)), "string value: need 4611686018427387904 bytes", false},
		{"duplicate key", header(3, 0, 2, gstr("k"), u32(0), []byte{1}, gstr("k"), u32(0), []byte{1}), "duplicate metadata key", false},
		{"bad alignment", header(3, 0, 1, gstr("general.alignment"), u32(uint32(TypeUint32)), u32(24)), "power-of-two uint32", false},
		{"alignment wrong type", header(3, 0, 1, gstr("general.alignment"), u32(uint32(TypeUint64)), u64(32)), "power-of-two uint32", false},
		{"too many dims", header(3, 1, 0, tinfo("t", TypeF32, 0, 1, 1, 1, 1, 1)), "5 dimensions", false},
		{"unknown type", header(3, 1, 0, tinfo("t", Type(31), 0, 4)), "unknown tensor type 31", true},
		{"partial block", header(3, 1, 0, tinfo("t", TypeQ4_0, 0, 16)), "not a whole number of Q4_0 blocks", false},
		{"dims overflow", header(3, 1, 0, tinfo("t", TypeF32, 0, 1<<40, 1<<40)), "overflow", false},
		{"duplicate tensor", header(3, 2, 0, tinfo("t", TypeF32, 0, 1), tinfo("t", TypeF32, 32, 1)), "duplicate tensor name", false},
		{"misaligned offset", append(header(3, 1, 0, tinfo("t", TypeF32, 4, 1), make([]byte, 13)), data...), "not a multiple of the alignment 32", false},
		{"data past end", append(header(3, 1, 0, tinfo("t", TypeF32, 0, 100), make([]byte, 13)), data...), `tensor "t": offset 64: data [0, 400) runs past the 70-byte data section`, false},
		{"offset past end", append(header(3, 1, 0, tinfo("t", TypeF32, 1<<62, 1), make([]byte, 13)), data...), "runs past", false},
		{"overlap", append(header(3, 2, 0, tinfo("a", TypeF32, 0, 16), tinfo("b", TypeF32, 32, 16), make([]byte, 22)), make([]byte, 128)...), "overlaps the previous tensor", false},
		{"truncated tensor info", header(3, 1, 0, gstr("t"), u32(4), u64(1), u64(1)), `tensor "t": offset 53: dimension: need 8 bytes`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := OpenBytes("m.gguf", tc.file)
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "gguf: ") || !strings.Contains(err.Error(), "m.gguf: ") {
				t.Fatalf("error %q, want one naming gguf, the file and %q", err, tc.want)
			}
			var fe *weights.FormatError
			var ue *weights.UnsupportedError
			if tc.unsupported != errors.As(err, &ue) || !tc.unsupported && !errors.As(err, &fe) {
				t.Errorf("error type %T (unsupported wanted: %v)", err, tc.unsupported)
			}
		})
	}
}

// TestTruncations cuts a valid file at every length: each prefix must give an error,
// never a panic (the full file must open).
func TestTruncations(t *testing.T) {
	b := writeSample(t, sampleKVs())
	for n := 0; n < len(b); n++ {
		if _, err := OpenBytes("cut.gguf", b[:n]); err == nil {
			// Cutting only trailing padding of the last tensor cannot happen: the last
			// tensor ends the file.
			t.Fatalf("prefix of %d/%d bytes opened without error", n, len(b))
		}
	}
	if _, err := OpenBytes("full.gguf", b); err != nil {
		t.Fatal(err)
	}
}

func TestDequantizeErrors(t *testing.T) {
	tests := []struct {
		name string
		typ  Type
		src  []byte
		dst  int
		want string
	}{
		{"partial block", TypeQ4_0, make([]byte, 17), 32, "not whole 18-byte blocks"},
		{"dst size", TypeQ4_0, make([]byte, 18), 31, "make 32 values, dst holds 31"},
		{"unimplemented", TypeIQ2_XXS, make([]byte, 66), 256, "unsupported feature: dequantization of IQ2_XXS"},
		{"unknown", Type(99), nil, 0, "unknown tensor type 99"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Dequantize(make([]float32, tc.dst), tc.typ, tc.src)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestTypeTable(t *testing.T) {
	for typ := Type(0); typ < 64; typ++ {
		if !typ.Known() {
			continue
		}
		if bs, ts := typ.BlockSize(), typ.TypeSize(); bs <= 0 || ts <= 0 {
			t.Errorf("%s: block %d, size %d", typ, bs, ts)
		}
		if got, ok := TypeByName(typ.String()); !ok || got != typ {
			t.Errorf("TypeByName(%s) = %v", typ, got)
		}
	}
	if n, err := TypeQ6_K.RowSize(512); err != nil || n != 420 {
		t.Errorf("Q6_K row of 512 = %d, %v", n, err)
	}
	if _, err := TypeQ6_K.RowSize(100); err == nil {
		t.Errorf("Q6_K row of 100: no error")
	}
}

// TestOrigShape covers ComfyUI-GGUF's comfy.gguf.orig_shape.<name> key: a reshaped tensor
// reports its original PyTorch shape; a malformed key is refused.
func TestOrigShape(t *testing.T) {
	data := make([]byte, 4*256*2)
	tensors := []WriteTensor{{Name: "conv.weight", Type: TypeF32, Dims: []uint64{256, 2}, Data: data}}
	tests := []struct {
		name string
		kv   KV
		want []int64
		err  string
	}{
		{"reshaped", KV{OrigShapeKey + "conv.weight", TypeArray, Array{TypeInt32, []int32{8, 4, 4, 4}}}, []int64{8, 4, 4, 4}, ""},
		{"absent", KV{"other", TypeUint8, uint8(1)}, []int64{2, 256}, ""},
		{"wrong type", KV{OrigShapeKey + "conv.weight", TypeArray, Array{TypeInt64, []int64{8, 4, 4, 4}}}, nil, "must be an array of int32"},
		{"wrong count", KV{OrigShapeKey + "conv.weight", TypeArray, Array{TypeInt32, []int32{8, 4, 4}}}, nil, "does not hold the 512 stored elements"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := Write(&buf, []KV{tc.kv}, tensors); err != nil {
				t.Fatal(err)
			}
			f, err := OpenBytes("o.gguf", buf.Bytes())
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Tensors()[0].Shape; !reflect.DeepEqual(got, tc.want) {
				t.Errorf("shape %v, want %v", got, tc.want)
			}
		})
	}
}

package tensorfile_test

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/internal/dtype"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/gguf"
	"github.com/forgeflow/forgeflow/weights/safetensors"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
	"github.com/forgeflow/forgeflow/weights/torch/torchtest"
)

// The same two tensors in each format: "w" a 2×3 F16 matrix, "b" a length-3 F32 vector.
var (
	wVals = []float32{1, -2, 0.5, 3, -0.25, 8}
	bVals = []float32{0.125, -1, 4}
)

func f16Bytes(v []float32) []byte {
	b := make([]byte, 2*len(v))
	dtype.EncodeF16(b, v)
	return b
}

func f32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	dtype.EncodeF32(b, v)
	return b
}

func writeSafetensors(t testing.TB, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = safetensors.Write(f, []safetensors.Entry{
		{Name: "b", DType: weights.F32, Shape: []int64{3}, Data: f32Bytes(bVals)},
		{Name: "w", DType: weights.F16, Shape: []int64{2, 3}, Data: f16Bytes(wVals)},
	}, map[string]string{"format": "pt"})
	if err != nil {
		t.Fatal(err)
	}
}

func writeGGUF(t testing.TB, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = gguf.Write(f, []gguf.KV{{Key: "general.architecture", Type: gguf.TypeString, Value: "test"}}, []gguf.WriteTensor{
		{Name: "w", Type: gguf.TypeF16, Dims: []uint64{3, 2}, Data: f16Bytes(wVals)},
		{Name: "b", Type: gguf.TypeF32, Dims: []uint64{3}, Data: f32Bytes(bVals)},
	})
	if err != nil {
		t.Fatal(err)
	}
}

func writeTorch(t testing.TB, path string) {
	t.Helper()
	b, err := torchtest.Zip([]torchtest.Tensor{
		{Name: "w", DType: weights.F16, Shape: []int64{2, 3}, Data: f16Bytes(wVals)},
		{Name: "b", DType: weights.F32, Shape: []int64{3}, Data: f32Bytes(bVals)},
	}, "state_dict")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestOpenFormats opens one file per format (and a torch file named .safetensors: the
// bytes decide, not the name) and reads the same tensors through the common view.
func TestOpenFormats(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name   string
		write  func(testing.TB, string)
		format tensorfile.Format
		meta   string
	}{
		{"m.safetensors", writeSafetensors, tensorfile.Safetensors, "format=pt"},
		{"m.gguf", writeGGUF, tensorfile.GGUF, "general.architecture=test"},
		{"m.ckpt", writeTorch, tensorfile.Torch, ""},
		{"torch-named.safetensors", writeTorch, tensorfile.Torch, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name)
			tc.write(t, p)
			f, err := tensorfile.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Format() != tc.format || f.Name() != p || !f.Mapped() {
				t.Fatalf("format %s name %s mapped %v, want %s %s true", f.Format(), f.Name(), f.Mapped(), tc.format, p)
			}
			var meta []string
			for k, v := range f.Metadata() {
				meta = append(meta, k+"="+v)
			}
			if strings.Join(meta, ",") != tc.meta {
				t.Errorf("metadata %v, want %q", meta, tc.meta)
			}
			if (f.GGUF() != nil) != (tc.format == tensorfile.GGUF) {
				t.Errorf("GGUF() = %v for a %s file", f.GGUF(), tc.format)
			}
			if len(f.Tensors()) != 2 {
				t.Fatalf("tensors %v", f.Tensors())
			}
			for _, want := range []struct {
				name  string
				dt    weights.DType
				shape []int64
				vals  []float32
			}{{"w", weights.F16, []int64{2, 3}, wVals}, {"b", weights.F32, []int64{3}, bVals}} {
				info, ok := f.Info(want.name)
				if !ok || info.DType != want.dt || !slices.Equal(info.Shape, want.shape) {
					t.Fatalf("info %s = %v, %v", want.name, info, ok)
				}
				tn, err := f.Tensor(want.name)
				if err != nil {
					t.Fatal(err)
				}
				if int64(len(tn.Data)) != info.Size || tn.Name != want.name {
					t.Fatalf("%s: %d bytes, info says %d", want.name, len(tn.Data), info.Size)
				}
				got, err := tn.Float32()
				if err != nil || !slices.Equal(got, want.vals) {
					t.Fatalf("%s values %v, %v; want %v", want.name, got, err, want.vals)
				}
			}
			if _, err := f.Tensor("absent"); err == nil || !strings.Contains(err.Error(), `"absent"`) {
				t.Errorf("absent tensor: %v", err)
			}
		})
	}
}

// TestOpenBytes reads the same images from memory.
func TestOpenBytes(t *testing.T) {
	dir := t.TempDir()
	for name, write := range map[string]func(testing.TB, string){"a.safetensors": writeSafetensors, "a.gguf": writeGGUF, "a.ckpt": writeTorch} {
		p := filepath.Join(dir, name)
		write(t, p)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		f, err := tensorfile.OpenBytes(name, b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		tn, err := f.Tensor("w")
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := tn.Float32(); !slices.Equal(got, wVals) || f.Mapped() {
			t.Errorf("%s: %v, mapped %v", name, got, f.Mapped())
		}
		f.Close()
	}
	if _, err := tensorfile.OpenBytes("x", nil); err == nil || !strings.Contains(err.Error(), "empty file") {
		t.Errorf("empty image: %v", err)
	}
}

// TestSniff covers the magic rules, including the safetensors header whose length's low
// byte is 0x80 (a pickle's protocol opcode).
func TestSniff(t *testing.T) {
	st80 := binary.LittleEndian.AppendUint64(nil, 0x80)
	st80 = append(st80, '{')
	for _, tc := range []struct {
		name  string
		magic []byte
		want  tensorfile.Format
	}{
		{"gguf", []byte("GGUF\x03\x00\x00\x00\x02"), tensorfile.GGUF},
		{"short gguf", []byte("GGUF"), tensorfile.GGUF},
		{"safetensors", []byte("\x10\x00\x00\x00\x00\x00\x00\x00{"), tensorfile.Safetensors},
		{"safetensors 0x80", st80, tensorfile.Safetensors},
		{"zip", []byte("PK\x03\x04\x14\x00\x00\x00\x00"), tensorfile.Torch},
		{"pickle", []byte("\x80\x02}q\x00(X\x05\x00\x00"), tensorfile.Torch},
		{"text", []byte("hello wor"), tensorfile.Safetensors},
	} {
		if got := tensorfile.Sniff(tc.magic); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

// TestOpenErrors checks that each bad file gives the reader's typed error naming the
// file, and that a refused format is reported before parsing.
func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"empty", write("empty.safetensors", nil), "tensorfile: invalid format: "},
		{"garbage", write("junk.safetensors", []byte("not a model at all, just text")), "safetensors: invalid format: "},
		{"truncated gguf", write("t.gguf", []byte("GGUF\x03\x00")), "gguf: invalid format: "},
		{"bad torch zip", write("m.ckpt", []byte("PK\x03\x04 but no archive")), "torch: invalid format: "},
		{"bad legacy torch", write("old.ckpt", []byte("\x80\x02 truncated pickle")), "torch: invalid format: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tensorfile.Open(tc.path)
			var fe *weights.FormatError
			if !errors.As(err, &fe) || !strings.HasPrefix(err.Error(), tc.want+tc.path) {
				t.Fatalf("err = %v, want a FormatError starting %q", err, tc.want+tc.path)
			}
		})
	}
	if _, err := tensorfile.Open(filepath.Join(dir, "absent")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("absent file: %v", err)
	}
	p := write("m.gguf", []byte("GGUF\x03\x00\x00\x00")) // truncated: refused before parsing
	_, err := tensorfile.Open(p, tensorfile.Safetensors, tensorfile.Torch)
	var wf *tensorfile.WrongFormatError
	if !errors.As(err, &wf) || wf.Format != tensorfile.GGUF || err.Error() != "tensorfile: "+p+" is a gguf file, not safetensors or torch" {
		t.Errorf("refused format: %v", err)
	}
	ok := filepath.Join(dir, "ok.safetensors")
	writeSafetensors(t, ok)
	if f, err := tensorfile.Open(ok, tensorfile.Safetensors); err != nil {
		t.Errorf("accepted format: %v", err)
	} else {
		f.Close()
	}
}

// TestDequantized reads a quantized GGUF tensor through the view.
func TestDequantized(t *testing.T) {
	vals := make([]float32, 64)
	for i := range vals {
		vals[i] = float32(math.Sin(float64(i)))
	}
	q := make([]byte, 2*34)
	if err := gguf.Quantize(q, gguf.TypeQ8_0, vals); err != nil {
		t.Fatal(err)
	}
	want := make([]float32, 64)
	dtype.DecodeQ8_0(want, q)
	p := filepath.Join(t.TempDir(), "q.gguf")
	out, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := gguf.Write(out, nil, []gguf.WriteTensor{{Name: "q", Type: gguf.TypeQ8_0, Dims: []uint64{32, 2}, Data: q}}); err != nil {
		t.Fatal(err)
	}
	out.Close()
	f, err := tensorfile.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tn, err := f.Tensor("q")
	if err != nil {
		t.Fatal(err)
	}
	got, err := tn.Float32()
	if err != nil || tn.DType != "Q8_0" || !slices.Equal(tn.Shape, []int64{2, 32}) || !slices.Equal(got, want) {
		t.Fatalf("dtype %s shape %v values %v, %v", tn.DType, tn.Shape, got, err)
	}
}

package torch

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/weights"
)

func f32s(v ...float32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

// sdPickle is {"state_dict": OrderedDict(w: 2x3 F32, wt: its transpose, h: F16[2] at
// offset 1), "global_step": 7} with OrderedDict _metadata state like real checkpoints.
func sdPickle() []byte {
	p := newPickle().op('}').put(0).mark()
	p.str("state_dict").global("collections", "OrderedDict").op(')', 'R').put(1).mark()
	p.str("w").tensor("FloatStorage", "0", 6, 0, []int{2, 3}, []int{3, 1})
	p.str("wt").op('h', 1) // the memoized OrderedDict is irrelevant here; replaced below
	p.op('0')              // POP it again: exercise BINGET/POP
	p.tensor("FloatStorage", "0", 6, 0, []int{3, 2}, []int{1, 3})
	p.str("h").tensor("HalfStorage", "1", 3, 1, []int{2}, []int{1})
	p.op('u')
	// BUILD with the instance state {"_metadata": {}}: attributes, not items.
	p.op('}').str("_metadata").op('}', 's', 'b')
	p.str("global_step").int(7)
	p.op('u')
	return p.stop()
}

func sdStorages() map[string][]byte {
	return map[string][]byte{
		"0": f32s(1, 2, 3, 4, 5, 6),
		"1": {0, 0, 0x00, 0x3c, 0x00, 0xc0}, // F16 0, 1, -2
	}
}

func TestOpenStateDict(t *testing.T) {
	for _, method := range []uint16{zip.Store, zip.Deflate} {
		name := map[uint16]string{zip.Store: "stored", zip.Deflate: "deflated"}[method]
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "m.ckpt")
			if err := os.WriteFile(path, checkpoint(t, sdPickle(), sdStorages(), method), 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			infos := f.Tensors()
			var names []string
			for _, ti := range infos {
				names = append(names, ti.Name)
			}
			if !reflect.DeepEqual(names, []string{"w", "wt", "h"}) {
				t.Fatalf("tensors %v", names)
			}
			if method == zip.Store && infos[0].Offset < 0 || method == zip.Deflate && infos[0].Offset != -1 {
				t.Errorf("w offset %d", infos[0].Offset)
			}
			if infos[1].Offset != -1 {
				t.Errorf("strided wt has offset %d", infos[1].Offset)
			}
			tests := []struct {
				name  string
				dtype weights.DType
				shape []int64
				want  []float32
			}{
				{"w", weights.F32, []int64{2, 3}, []float32{1, 2, 3, 4, 5, 6}},
				{"wt", weights.F32, []int64{3, 2}, []float32{1, 4, 2, 5, 3, 6}},
				{"h", weights.F16, []int64{2}, []float32{1, -2}},
			}
			for _, tc := range tests {
				tn, err := f.Tensor(tc.name)
				if err != nil {
					t.Fatal(err)
				}
				got, err := tn.Float32()
				if err != nil {
					t.Fatal(err)
				}
				if tn.DType != tc.dtype || !reflect.DeepEqual(tn.Shape, tc.shape) || !reflect.DeepEqual(got, tc.want) {
					t.Errorf("%s: %s %v %v, want %s %v %v", tc.name, tn.DType, tn.Shape, got, tc.dtype, tc.shape, tc.want)
				}
			}
			root := f.Root().(*Dict)
			if v, _ := root.Get("global_step"); v != int64(7) {
				t.Errorf("global_step = %v", v)
			}
			sd, _ := root.Get("state_dict")
			if sd.(*Dict).Len() != 3 || sd.(*Dict).Attrs == nil {
				t.Errorf("state_dict: %d items, attrs %v", sd.(*Dict).Len(), sd.(*Dict).Attrs)
			}
			if _, err := f.Tensor("nope"); err == nil {
				t.Error("missing tensor: no error")
			}
		})
	}
}

// TestEmbedding reads a textual-inversion layout: nested dicts flatten with ".".
func TestEmbedding(t *testing.T) {
	p := newPickle().op('}').mark()
	p.str("string_to_token").op('}').str("*").int(265).op('s')
	p.str("string_to_param").op('}').str("*")
	// A Parameter, as torch saves one: _rebuild_parameter(tensor, requires_grad, hooks).
	p.global("torch._utils", "_rebuild_parameter").mark()
	p.tensor("FloatStorage", "0", 4, 0, []int{2, 2}, []int{2, 1})
	p.op(0x88).global("collections", "OrderedDict").op(')', 'R').op('t', 'R')
	p.op('s')
	p.str("name").str("emb").str("step").int(1000)
	p.op('u')
	f, err := OpenBytes("emb.pt", checkpoint(t, p.stop(), map[string][]byte{"0": f32s(1, 2, 3, 4)}, zip.Store))
	if err != nil {
		t.Fatal(err)
	}
	infos := f.Tensors()
	if len(infos) != 1 || infos[0].Name != "string_to_param.*" || !reflect.DeepEqual(infos[0].Shape, []int64{2, 2}) {
		t.Fatalf("tensors %v", infos)
	}
}

func TestUnpickleValues(t *testing.T) {
	p := newPickle().mark()
	p.int(5).int(300).int(-2).int(100000)
	p.op(0x8a, 2, 0x00, 0x80)                                    // LONG1 -32768
	p.op(0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1)                     // LONG1 2^64
	p.op('G', 0x3f, 0xf8, 0, 0, 0, 0, 0, 0)                      // BINFLOAT 1.5
	p.op(0x8c, 2, 'h', 'i')                                      // SHORT_BINUNICODE
	p.op('C', 2, 1, 2)                                           // SHORT_BINBYTES
	p.op('N', 0x88, 0x89)                                        // None, True, False
	p.op(']').put(3).int(1).op('a').mark().int(2).int(3).op('e') // list [1,2,3]
	p.op('h', 3)                                                 // BINGET: the same list again
	p.int(9).op('2', '0')                                        // DUP then POP
	p.op('t')
	v, err := Unpickle("v.pkl", p.stop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	tu := v.(Tuple)
	want := []any{int64(5), int64(300), int64(-2), int64(100000), int64(-32768)}
	if !reflect.DeepEqual([]any(tu[:5]), want) {
		t.Errorf("ints %v", tu[:5])
	}
	if b, ok := tu[5].(*big.Int); !ok || b.Cmp(new(big.Int).Lsh(big.NewInt(1), 64)) != 0 {
		t.Errorf("big int %v", tu[5])
	}
	if tu[6] != 1.5 || tu[7] != "hi" || !bytes.Equal(tu[8].([]byte), []byte{1, 2}) || tu[9] != nil || tu[10] != true || tu[11] != false {
		t.Errorf("scalars %v", tu[6:12])
	}
	l := tu[12].(*List)
	if !reflect.DeepEqual(l.Items, []any{int64(1), int64(2), int64(3)}) || tu[13] != l || tu[14] != int64(9) {
		t.Errorf("list %v, memo %v, dup %v", l.Items, tu[13], tu[14])
	}
}

// TestHostile feeds pickles that try to run code or break the decoder.
func TestHostile(t *testing.T) {
	tests := []struct {
		name      string
		pickle    []byte
		want      string
		forbidden bool
	}{
		{"os.system", newPickle().global("os", "system").str("echo pwned").op(0x85, 'R').stop(), `global "os.system" is not allowed`, true},
		{"builtins.eval", newPickle().global("builtins", "eval").str("1").op(0x85, 'R').stop(), `global "builtins.eval" is not allowed`, true},
		{"stack global", newPickle().op(0x8c, 2, 'o', 's', 0x8c, 6, 's', 'y', 's', 't', 'e', 'm', 0x93).stop(), `global "os.system" is not allowed`, true},
		{"subprocess in dict", newPickle().op('}').str("k").global("subprocess", "Popen").op('s').stop(), `global "subprocess.Popen"`, true},
		{"torch.load nested", newPickle().global("torch", "load").stop(), `global "torch.load"`, true},
		{"torch storage loader", newPickle().global("torch.storage", "_load_from_bytes").stop(), "not allowed", true},
		{"INST", newPickle().op('i').op([]byte("os\nsystem\n")...).stop(), "opcode 0x69 (INST)", true},
		{"OBJ", newPickle().mark().op('o').stop(), "(OBJ)", true},
		{"EXT1", newPickle().op(0x82, 1).stop(), "(EXT1)", true},
		{"text PERSID", newPickle().op('P').op([]byte("0\n")...).stop(), "(PERSID)", true},
		{"call of a placeholder result", newPickle().global("torch", "Size").op(')', 'R', ')', 'R').stop(), "call of *torch.Object", true},
		{"BUILD on a global", newPickle().global("collections", "OrderedDict").op('}', 'b').stop(), "BUILD on torch.Global", true},
		{"persistent id without archive", newPickle().str("x").op('Q').stop(), "persistent id without an archive", true},
		{"truncated", newPickle().str("abc").b[:6], "runs past the end", false},
		{"no stop", newPickle().int(1).b, "without STOP", false},
		{"empty stack", newPickle().op('0').stop(), "pop from an empty stack", false},
		{"missing memo", newPickle().op('h', 7).stop(), "memo key 7 not set", false},
		{"huge LONG4", newPickle().op(0x8b, 0xff, 0xff, 0xff, 0x7f).stop(), "runs past the end", false},
		{"huge string", newPickle().op('X', 0xff, 0xff, 0xff, 0xff).stop(), "runs past the end", false},
		{"setitem on list", newPickle().op(']').int(1).int(2).op('s').stop(), "not a dict", false},
		{"tuple without mark", newPickle().op('t').stop(), "no MARK", false},
		{"protocol 9", []byte{0x80, 9, 'N', '.'}, "protocol 9", false},
		{"reduce args not tuple", newPickle().global("collections", "OrderedDict").int(1).op('R').stop(), "not a tuple", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Unpickle("evil.pkl", tc.pickle, nil)
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "torch: invalid format: evil.pkl: offset ") {
				t.Fatalf("error %q, want %q with file and offset", err, tc.want)
			}
			if errors.Is(err, ErrForbidden) != tc.forbidden {
				t.Errorf("errors.Is(err, ErrForbidden) = %v", !tc.forbidden)
			}
		})
	}
}

func TestArchiveErrors(t *testing.T) {
	one := func(storageClass string, numel, offset int, shape, stride []int) []byte {
		return newPickle().op('}').str("w").tensor(storageClass, "0", numel, offset, shape, stride).op('s').stop()
	}
	good := map[string][]byte{"0": f32s(1, 2, 3, 4)}
	tests := []struct {
		name        string
		file        []byte
		want        string
		unsupported bool
	}{
		{"legacy truncated", []byte{0x80, 2, 0x8a, 0x0a}, "offset 2: pickle: opcode argument of 10 bytes runs past the end", false},
		{"plain pickle", newPickle().int(3).stop(), "pickle file that is not a torch checkpoint", true},
		{"not zip", []byte("hello world"), "not a zip archive", false},
		{"truncated zip", checkpoint(t, one("FloatStorage", 4, 0, []int{4}, []int{1}), good, zip.Store)[:60], "zip:", false},
		{"view past storage", checkpoint(t, one("FloatStorage", 4, 1, []int{4}, []int{1}), good, zip.Store), `tensor "w": view (offset 1, shape [4], stride [1]) reaches element 4 of a 4-element storage`, false},
		{"numel past entry", checkpoint(t, one("FloatStorage", 5, 0, []int{4}, []int{1}), good, zip.Store), "5 elements of F32 need more than its 16 bytes", false},
		{"missing storage", checkpoint(t, one("FloatStorage", 4, 0, []int{4}, []int{1}), nil, zip.Store), `no archive/data/0 in the zip`, false},
		{"unknown storage", checkpoint(t, one("ComplexFloatStorage", 4, 0, []int{4}, []int{1}), good, zip.Store), `global "torch.ComplexFloatStorage" is not allowed`, false},
		{"not a dict", checkpoint(t, newPickle().int(3).stop(), nil, zip.Store), "pickle holds int64, not a dict", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := OpenBytes("m.ckpt", tc.file)
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "m.ckpt: ") {
				t.Fatalf("error %q, want %q naming the file", err, tc.want)
			}
			var ue *weights.UnsupportedError
			if errors.As(err, &ue) != tc.unsupported {
				t.Errorf("error type %T", err)
			}
		})
	}
}

// TestRebuildFromType covers torch._tensor._rebuild_from_type_v2, used by newer torch
// for tensor subclasses.
func TestRebuildFromType(t *testing.T) {
	p := newPickle().op('}').str("w")
	p.global("torch._tensor", "_rebuild_from_type_v2").mark()
	p.global("torch._utils", "_rebuild_tensor_v2")
	p.global("torch.nn.parameter", "Parameter")
	p.mark().mark().str("storage").global("torch", "FloatStorage").str("0").str("cpu").int(4).op('t', 'Q')
	p.int(0).ints(4).ints(1).op(0x89).global("collections", "OrderedDict").op(')', 'R').op('t')
	p.op('}').op('t', 'R', 's') // (func, type, args, state) then SETITEM
	f, err := OpenBytes("m.pt", checkpoint(t, p.stop(), map[string][]byte{"0": f32s(1, 2, 3, 4)}, zip.Store))
	if err != nil {
		t.Fatal(err)
	}
	tn, err := f.Tensor("w")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := tn.Float32(); !reflect.DeepEqual(v, []float32{1, 2, 3, 4}) {
		t.Errorf("values %v", v)
	}
}

// TestVerify flips one byte of a stored storage: Open (zero-copy) does not notice,
// Verify does.
func TestVerify(t *testing.T) {
	file := checkpoint(t, sdPickle(), sdStorages(), zip.Store)
	f, err := OpenBytes("m.ckpt", file)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Verify(); err != nil {
		t.Fatalf("intact file: %v", err)
	}
	w := f.Tensors()[0]
	bad := bytes.Clone(file)
	bad[w.Offset] ^= 0xff
	f, err = OpenBytes("m.ckpt", bad)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Verify(); err == nil || !strings.Contains(err.Error(), "CRC-32") {
		t.Fatalf("corrupt file: %v", err)
	}
}

// TestZipBomb: a deflated storage claiming far more bytes than deflate can produce is
// refused before inflating.
func TestZipBomb(t *testing.T) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, _ := zw.Create("archive/data.pkl")
	w.Write(newPickle().op('}').str("w").tensor("FloatStorage", "0", 4, 0, []int{4}, []int{1}).op('s').stop())
	raw, err := zw.CreateRaw(&zip.FileHeader{Name: "archive/data/0", Method: zip.Deflate, CompressedSize64: 8, UncompressedSize64: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	raw.Write(make([]byte, 8))
	zw.Close()
	f, err := OpenBytes("bomb.ckpt", buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Tensor("w"); err == nil || !strings.Contains(err.Error(), "claims 1099511627776 bytes from 8 compressed") {
		t.Fatalf("error %v", err)
	}
}

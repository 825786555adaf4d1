package torch

import (
	"encoding/binary"
	"reflect"
	"strings"
	"testing"
)

// legacyPID pushes the legacy persistent id ('storage', FloatStorage, key, 'cpu', numel,
// view) where view is nil or {viewKey, offset, size}.
func (p *pk) legacyPID(key string, numel int, view *[3]any) *pk {
	p.mark().str("storage").global("torch", "FloatStorage").str(key).str("cpu").int(numel)
	if view == nil {
		p.op('N')
	} else {
		p.str(view[0].(string)).int(view[1].(int)).int(view[2].(int)).op(0x87)
	}
	return p.op('t', 'Q')
}

func (p *pk) legacyTensor(key string, numel int, view *[3]any, offset int, shape, stride []int) *pk {
	p.global("torch._utils", "_rebuild_tensor_v2").mark()
	p.legacyPID(key, numel, view)
	p.int(offset).ints(shape...).ints(stride...).op(0x89)
	p.global("collections", "OrderedDict").op(')', 'R').op('t', 'R')
	return p
}

// legacyFile lays out a pre-1.6 torch.save file: magic, protocol, sys_info, main pickle,
// key list, then each storage as an int64 count and its bytes.
func legacyFile(main []byte, keys []string, counts []uint64, data [][]byte) []byte {
	magic := newPickle().op(0x8a, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19).stop()
	proto := newPickle().int(1001).stop()
	sys := newPickle().op('}').mark().str("protocol_version").int(1001).str("little_endian").op(0x88).op('u').stop()
	kl := newPickle().op(']').mark()
	for _, k := range keys {
		kl.str(k)
	}
	b := append(append(append(append(magic, proto...), sys...), main...), kl.op('e').stop()...)
	for i := range counts {
		b = binary.LittleEndian.AppendUint64(b, counts[i])
		b = append(b, data[i]...)
	}
	return b
}

func TestLegacy(t *testing.T) {
	main := newPickle().op('}').mark()
	main.str("w").legacyTensor("0", 6, nil, 0, []int{2, 3}, []int{3, 1})
	main.str("v").legacyTensor("0", 6, &[3]any{"0v", 2, 4}, 1, []int{3}, []int{1})
	main.op('u')
	file := legacyFile(main.stop(), []string{"0"}, []uint64{6}, [][]byte{f32s(1, 2, 3, 4, 5, 6)})
	f, err := OpenBytes("old.pth", file)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		shape []int64
		want  []float32
	}{
		{"w", []int64{2, 3}, []float32{1, 2, 3, 4, 5, 6}},
		{"v", []int64{3}, []float32{4, 5, 6}}, // view at element 2, tensor offset 1
	} {
		tn, err := f.Tensor(tc.name)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := tn.Float32()
		if !reflect.DeepEqual(tn.Shape, tc.shape) || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %v %v, want %v %v", tc.name, tn.Shape, got, tc.shape, tc.want)
		}
		if tn.Offset < 0 || string(file[tn.Offset:tn.Offset+4]) != string(f32s(tc.want[0])) {
			t.Errorf("%s: offset %d does not point at its data", tc.name, tn.Offset)
		}
	}
}

func TestLegacyErrors(t *testing.T) {
	main := func() []byte {
		return newPickle().op('}').str("w").legacyTensor("0", 4, nil, 0, []int{4}, []int{1}).op('s').stop()
	}
	tests := []struct {
		name string
		file []byte
		want string
	}{
		{"truncated data", legacyFile(main(), []string{"0"}, []uint64{4}, [][]byte{f32s(1, 2)}), `storage "0": 16 bytes run past the end`},
		{"wrong count", legacyFile(main(), []string{"0"}, []uint64{5}, [][]byte{f32s(1, 2, 3, 4, 5)}), `storage "0" holds 5 elements, the pickle says 4`},
		{"missing data", legacyFile(main(), nil, nil, nil), `storage "0" has no data`},
		{"unknown key", legacyFile(main(), []string{"9"}, []uint64{4}, [][]byte{f32s(1, 2, 3, 4)}), `storage "9" is listed but no tensor uses it`},
		{"module id", legacyFile(newPickle().mark().str("module").str("os").op('t', 'Q').stop(), nil, nil, nil), "is not a legacy ('storage'"},
		{"bad view", legacyFile(newPickle().op('}').str("w").legacyTensor("0", 4, &[3]any{"v", 3, 2}, 0, []int{2}, []int{1}).op('s').stop(), []string{"0"}, []uint64{4}, [][]byte{f32s(1, 2, 3, 4)}), "view"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := OpenBytes("old.pth", tc.file)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "old.pth: ") {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

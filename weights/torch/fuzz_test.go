package torch

import (
	"archive/zip"
	"testing"
)

// FuzzUnpickle runs arbitrary bytes through the restricted unpickler: an error or a
// value, never a panic, never an allowed call of a refused global.
func FuzzUnpickle(f *testing.F) {
	f.Add(sdPickle())
	f.Add(newPickle().global("os", "system").str("id").op(0x85, 'R').stop())
	f.Add(newPickle().op(']').put(0).op('h', 0, 'a').stop()) // a list holding itself
	f.Add(newPickle().mark().int(1).op(0x8a, 3, 1, 2, 3).op('G', 0, 0, 0, 0, 0, 0, 0, 0).op('t').stop())
	f.Fuzz(func(t *testing.T, data []byte) {
		Unpickle("fuzz.pkl", data, func(pid any) (any, error) {
			return &Storage{DType: "F32", Key: "0", Numel: 4}, nil
		})
	})
}

// FuzzOpen runs arbitrary pickles through a whole checkpoint: listing and reading every
// tensor must stay inside the storages.
func FuzzOpen(f *testing.F) {
	f.Add(sdPickle())
	f.Add(newPickle().op('}').str("w").tensor("FloatStorage", "0", 6, 1, []int{2, 2}, []int{1, 2}).op('s').stop())
	f.Fuzz(func(t *testing.T, pickle []byte) {
		file, err := OpenBytes("fuzz.ckpt", checkpoint(t, pickle, sdStorages(), zip.Store))
		if err != nil {
			return
		}
		for _, info := range file.Tensors() {
			tn, err := file.Tensor(info.Name)
			if err != nil {
				t.Fatalf("listed tensor %q: %v", info.Name, err)
			}
			if int64(len(tn.Data)) != info.Size {
				t.Fatalf("tensor %q: %d bytes, want %d", info.Name, len(tn.Data), info.Size)
			}
		}
	})
}

// FuzzOpenLegacy runs arbitrary bytes through OpenBytes, seeded with pre-1.6 files: the
// back-to-back pickles and raw storage records must never be read out of bounds.
func FuzzOpenLegacy(f *testing.F) {
	main := newPickle().op('}').mark()
	main.str("w").legacyTensor("0", 6, nil, 0, []int{2, 3}, []int{3, 1})
	main.str("v").legacyTensor("0", 6, &[3]any{"0v", 2, 4}, 1, []int{3}, []int{1})
	main.op('u')
	f.Add(legacyFile(main.stop(), []string{"0"}, []uint64{6}, [][]byte{f32s(1, 2, 3, 4, 5, 6)}))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := OpenBytes("fuzz.pth", data)
		if err != nil {
			return
		}
		for _, info := range file.Tensors() {
			tn, err := file.Tensor(info.Name)
			if err != nil {
				t.Fatalf("listed tensor %q: %v", info.Name, err)
			}
			if int64(len(tn.Data)) != info.Size {
				t.Fatalf("tensor %q: %d bytes, want %d", info.Name, len(tn.Data), info.Size)
			}
		}
	})
}

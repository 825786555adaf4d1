package gguf

import (
	"bytes"
	"testing"
)

// FuzzParse parses arbitrary bytes as GGUF: an error or a header whose tensors all lie
// inside the file, never a panic; accepted tensors of implemented types dequantize.
func FuzzParse(f *testing.F) {
	var buf bytes.Buffer
	Write(&buf, sampleKVs(), sampleTensors())
	f.Add(buf.Bytes())
	f.Add(header(3, 0, 1, gstr("k"), u32(uint32(TypeArray)), u32(uint32(TypeArray)), u64(1), u32(uint32(TypeString)), u64(1), gstr("x")))
	f.Add(append(header(2, 1, 0, tinfo("t", TypeQ4_K, 0, 256), make([]byte, 30)), make([]byte, 144)...))
	f.Add([]byte("GGUF"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := OpenBytes("fuzz.gguf", data)
		if err != nil {
			return
		}
		for _, info := range file.Header().Tensors {
			tn, err := file.Tensor(info.Name)
			if err != nil {
				t.Fatalf("listed tensor %q: %v", info.Name, err)
			}
			if tn.AbsOffset+tn.Size > int64(len(data)) {
				t.Fatalf("tensor %q past the end", info.Name)
			}
			if tn.Type.CanDequantize() && tn.NumElements() < 1<<20 {
				if _, err := tn.Float32(); err != nil {
					t.Fatalf("tensor %q: %v", info.Name, err)
				}
			}
		}
	})
}

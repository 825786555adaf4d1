package safetensors

import (
	"bytes"
	"testing"
)

// FuzzOpen parses arbitrary bytes as a safetensors file: it must return a file or an
// error, never panic, and every tensor it accepts must lie inside the data.
func FuzzOpen(f *testing.F) {
	var buf bytes.Buffer
	Write(&buf, allDTypes(), map[string]string{"k": "v"})
	f.Add(buf.Bytes())
	f.Add(raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)))
	f.Add(raw(`{"__metadata__":{"a":"b"},"x":{"dtype":"BF16","shape":[0],"data_offsets":[0,0]}}`, nil))
	f.Add(raw(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}`, make([]byte, 3)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := OpenBytes("fuzz.safetensors", data)
		if err != nil {
			return
		}
		for _, info := range file.Tensors() {
			tn, err := file.Tensor(info.Name)
			if err != nil {
				t.Fatalf("listed tensor %q: %v", info.Name, err)
			}
			if int64(len(tn.Data)) != info.Size || info.Offset+info.Size > int64(len(data)) {
				t.Fatalf("tensor %q: %d bytes at %d, file %d", info.Name, len(tn.Data), info.Offset, len(data))
			}
			if info.NumElements()*int64(info.DType.ElemSize()) == info.Size && info.Size < 1<<20 {
				if _, err := tn.Float32(); err != nil {
					t.Fatalf("tensor %q: %v", info.Name, err)
				}
			}
		}
	})
}

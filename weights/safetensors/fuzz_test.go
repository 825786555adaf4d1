package safetensors

import (
	"bytes"
	"encoding/json"
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

// FuzzHeaderJSON checks the hand-written header scanner against encoding/json: whatever
// it accepts must be valid JSON with the same tensors, dtypes, shapes and metadata, and
// invalid JSON must be refused.
func FuzzHeaderJSON(f *testing.F) {
	f.Add(`{"__metadata__":{"a":"\u00e9\ud83d\ude00\n"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 8)
	f.Add(`{"a":{"dtype":"U8","shape":[],"data_offsets":[0,1]} }  `, 1)
	f.Add(`{"\"q\"":{"dtype":"F16","shape":[0],"data_offsets":[0,0]}}`, 0)
	f.Add(`{"x":{"dtype":"I8","shape":[01],"data_offsets":[0,1]}}`, 1)
	f.Fuzz(func(t *testing.T, hdr string, dataLen int) {
		if dataLen < 0 || dataLen > 1<<20 {
			return
		}
		h, err := parseHeader("fuzz", []byte(hdr), 8+int64(len(hdr))+int64(dataLen))
		if err != nil {
			return
		}
		if !json.Valid([]byte(hdr)) {
			t.Fatalf("accepted invalid JSON %q", hdr)
		}
		var ref map[string]json.RawMessage
		if err := json.Unmarshal([]byte(hdr), &ref); err != nil {
			t.Fatalf("encoding/json: %v", err)
		}
		for _, ti := range h.Tensors {
			var e struct {
				DType string  `json:"dtype"`
				Shape []int64 `json:"shape"`
			}
			if err := json.Unmarshal(ref[ti.Name], &e); err != nil || e.DType != string(ti.DType) || !slicesEqual(e.Shape, ti.Shape) {
				t.Fatalf("tensor %q: encoding/json sees %+v (%v), scanner %v", ti.Name, e, err, ti)
			}
		}
		if raw, ok := ref[metadataKey]; ok {
			var m map[string]string
			json.Unmarshal(raw, &m)
			if len(m) != len(h.Metadata) {
				t.Fatalf("metadata %v, encoding/json %v", h.Metadata, m)
			}
			for k, v := range m {
				if h.Metadata[k] != v {
					t.Fatalf("metadata %q = %q, encoding/json %q", k, h.Metadata[k], v)
				}
			}
		}
		keys := len(h.Tensors)
		if _, ok := ref[metadataKey]; ok {
			keys++
		}
		if len(ref) != keys {
			t.Fatalf("%d keys, scanner %d tensors", len(ref), len(h.Tensors))
		}
	})
}

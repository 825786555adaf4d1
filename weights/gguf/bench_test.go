package gguf

import (
	"bytes"
	"fmt"
	"testing"
)

// BenchmarkOpen parses a GGUF image shaped like a quantized text encoder: 32,128 vocabulary
// strings in the metadata and 1,000 Q8_0 tensors (header cost only: OpenBytes maps nothing).
func BenchmarkOpen(b *testing.B) {
	vocab := make([]string, 32128)
	for i := range vocab {
		vocab[i] = fmt.Sprintf("▁token%d", i)
	}
	kvs := []KV{
		{"general.architecture", TypeString, "t5encoder"},
		{"tokenizer.ggml.tokens", TypeArray, Array{TypeString, vocab}},
	}
	var ts []WriteTensor
	for i := 0; i < 1000; i++ {
		ts = append(ts, WriteTensor{Name: fmt.Sprintf("enc.blk.%d.attn_q.weight", i), Type: TypeQ8_0, Dims: []uint64{64, 2}, Data: make([]byte, 2*2*34)})
	}
	var buf bytes.Buffer
	if err := Write(&buf, kvs, ts); err != nil {
		b.Fatal(err)
	}
	b.Run("32kvocab/1000tensors", func(b *testing.B) {
		for b.Loop() {
			if _, err := OpenBytes("bench.gguf", buf.Bytes()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

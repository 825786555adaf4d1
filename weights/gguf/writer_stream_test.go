package gguf

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// TestWriteDataStreams checks that a tensor written through WriteData gives the same
// file as one given as Data, and that a callback writing the wrong size is an error.
func TestWriteDataStreams(t *testing.T) {
	data := make([]byte, 2*18) // two Q4_0 blocks
	for i := range data {
		data[i] = byte(i)
	}
	kvs := []KV{{Key: "general.architecture", Type: TypeString, Value: "flux"}}
	var a, b bytes.Buffer
	if err := Write(&a, kvs, []WriteTensor{{Name: "w", Type: TypeQ4_0, Dims: []uint64{32, 2}, Data: data}}); err != nil {
		t.Fatal(err)
	}
	stream := func(n int) func(w io.Writer) error {
		return func(w io.Writer) error { _, err := w.Write(data[:n]); return err }
	}
	if err := Write(&b, kvs, []WriteTensor{{Name: "w", Type: TypeQ4_0, Dims: []uint64{32, 2}, WriteData: stream(len(data))}}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("WriteData gave another file than Data")
	}
	err := Write(io.Discard, kvs, []WriteTensor{{Name: "w", Type: TypeQ4_0, Dims: []uint64{32, 2}, WriteData: stream(18)}})
	if err == nil || !strings.Contains(err.Error(), "wrote 18 bytes") {
		t.Fatalf("short WriteData: err = %v", err)
	}
}

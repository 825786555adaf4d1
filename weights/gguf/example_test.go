package gguf_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log"

	"github.com/forgeflow/forgeflow/internal/dtype"
	"github.com/forgeflow/forgeflow/weights/gguf"
)

// Example writes a GGUF file with one Q8_0 tensor, then reads its metadata, block layout
// and dequantized values.
func Example() {
	block := binary.LittleEndian.AppendUint16(nil, dtype.F32ToF16(0.5)) // d
	for i := 0; i < 32; i++ {
		block = append(block, byte(int8(i-16))) // qs
	}
	var buf bytes.Buffer
	err := gguf.Write(&buf, []gguf.KV{{Key: "general.architecture", Type: gguf.TypeString, Value: "flux"}},
		[]gguf.WriteTensor{{Name: "w", Type: gguf.TypeQ8_0, Dims: []uint64{32, 1}, Data: block}})
	if err != nil {
		log.Fatal(err)
	}
	f, err := gguf.OpenBytes("example.gguf", buf.Bytes()) // Open(path) maps a file
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	arch, _ := f.Metadata().String("general.architecture")
	t, _ := f.Tensor("w")
	v, _ := t.Float32()
	fmt.Println(arch, t.Type, t.Shape(), t.Type.BlockSize(), t.Type.TypeSize(), t.RowSize())
	fmt.Println(v[0], v[16], v[31])
	// Output:
	// flux Q8_0 [1 32] 32 34 34
	// -8 0 7.5
}

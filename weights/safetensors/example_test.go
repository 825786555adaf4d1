package safetensors_test

import (
	"bytes"
	"fmt"
	"log"

	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// Example writes a small file, then lists and reads it back.
func Example() {
	var buf bytes.Buffer
	err := safetensors.Write(&buf, []safetensors.Entry{
		{Name: "w", DType: weights.F16, Shape: []int64{2}, Data: []byte{0x00, 0x3c, 0x00, 0xc0}},
	}, map[string]string{"format": "pt"})
	if err != nil {
		log.Fatal(err)
	}
	f, err := safetensors.OpenBytes("example.safetensors", buf.Bytes()) // Open(path) maps a file
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	for _, info := range f.Tensors() {
		fmt.Println(info)
	}
	t, _ := f.Tensor("w")
	v, _ := t.Float32()
	fmt.Println(v, f.Metadata()["format"])
	// Output:
	// w F16[2]
	// [1 -2] pt
}

package tensorfile_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// Example opens a checkpoint without knowing its format and reads one tensor as
// stored and as float32.
func Example() {
	dir, err := os.MkdirTemp("", "tensorfile")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "model.safetensors")
	out, err := os.Create(path)
	if err != nil {
		log.Fatal(err)
	}
	half := []byte{0x00, 0x3c, 0x00, 0xc0} // binary16 1 and -2
	if err := safetensors.Write(out, []safetensors.Entry{{Name: "w", DType: weights.F16, Shape: []int64{2}, Data: half}}, nil); err != nil {
		log.Fatal(err)
	}
	out.Close()

	f, err := tensorfile.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	t, err := f.Tensor("w")
	if err != nil {
		log.Fatal(err)
	}
	vals, err := t.Float32()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(f.Format(), t.DType, t.Shape, len(t.Data), "bytes", vals)
	// Output: safetensors F16 [2] 4 bytes [1 -2]
}

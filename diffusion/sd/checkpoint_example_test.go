package sd_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/detect"
)

// Write a tiny random-weight SDXL checkpoint and load it: the family decides the text
// encoders, the model sampling and the latent format.
func ExampleLoadCheckpoint() {
	dir, err := os.MkdirTemp("", "example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "tiny_sdxl.safetensors")
	f, err := os.Create(path)
	if err != nil {
		panic(err)
	}
	if err := sd.WriteRandomCheckpoint(f, sd.TinyRandomSpec(detect.FamilySDXL)); err != nil {
		panic(err)
	}
	f.Close()

	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		panic(err)
	}
	ck, err := sd.LoadCheckpoint(rt, path, sd.LoadOptions{})
	if err != nil {
		panic(err)
	}
	defer ck.Close()
	fmt.Println("family:", ck.Family, "latent:", ck.Model.Latent.Name, "ADM:", ck.Model.ADM)
	for _, te := range ck.CLIP.Encoders {
		fmt.Printf("text encoder %s: %d layers, output layer %d, pads with %d\n",
			te.Name, len(te.Encoder.Model.Layers), te.Encoder.Layer, te.Encoder.Pad)
	}
	// Output:
	// family: sdxl latent: SDXL ADM: true
	// text encoder l: 3 layers, output layer -2, pads with 49407
	// text encoder g: 3 layers, output layer -2, pads with 0
}

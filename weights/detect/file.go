package detect

import (
	"fmt"

	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// DetectFile detects the model in a .safetensors, .gguf or PyTorch (.ckpt, .pt, .pth,
// .bin) file, opened through weights/tensorfile. Only the header (for PyTorch files the
// pickle) is decoded and, for an SD2.x UNet, one bias vector read.
func DetectFile(path string) (*Model, error) {
	f, err := tensorfile.Open(path)
	if err != nil {
		return nil, fmt.Errorf("detect: %w", err)
	}
	defer f.Close()
	m, err := Detect(FileInput(f))
	if err != nil {
		return nil, fmt.Errorf("%w: %s", err, path)
	}
	return m, nil
}

// FileInput is what detection looks at in an open file: its tensors, their values on
// demand and its string metadata.
func FileInput(f *tensorfile.File) Input {
	return Input{
		Tensors:  f.Tensors(),
		Metadata: f.Metadata(),
		Values: func(name string) ([]float32, error) {
			t, err := f.Tensor(name)
			if err != nil {
				return nil, err
			}
			return t.Float32()
		},
	}
}

package detect

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/forgeflow/forgeflow/weights/gguf"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// DetectFile detects the model in a .safetensors or .gguf file (told apart by the GGUF
// magic bytes). Only the header is parsed and, for an SD2.x UNet, one bias vector read.
func DetectFile(path string) (*Model, error) {
	magic, err := readMagic(path)
	if err != nil {
		return nil, fmt.Errorf("detect: %w", err)
	}
	var (
		in     Input
		closer io.Closer
	)
	if bytes.Equal(magic, []byte("GGUF")) {
		f, err := gguf.Open(path)
		if err != nil {
			return nil, fmt.Errorf("detect: %w", err)
		}
		closer = f
		in.Tensors = f.Tensors()
		in.Metadata = map[string]string{}
		if arch, ok := f.Metadata().String("general.architecture"); ok {
			in.Metadata["general.architecture"] = arch
		}
		in.Values = func(name string) ([]float32, error) {
			t, err := f.Tensor(name)
			if err != nil {
				return nil, err
			}
			return t.Float32()
		}
	} else {
		f, err := safetensors.Open(path)
		if err != nil {
			return nil, fmt.Errorf("detect: %w", err)
		}
		closer = f
		in.Tensors = f.Tensors()
		in.Metadata = f.Metadata()
		in.Values = func(name string) ([]float32, error) {
			t, err := f.Tensor(name)
			if err != nil {
				return nil, err
			}
			return t.Float32()
		}
	}
	defer closer.Close()
	m, err := Detect(in)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", err, path)
	}
	return m, nil
}

func readMagic(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, 4)
	n, err := io.ReadFull(f, b)
	if err != nil && err != io.ErrUnexpectedEOF {
		if err == io.EOF {
			return nil, fmt.Errorf("%s: empty file", path)
		}
		return nil, err
	}
	return b[:n], nil
}

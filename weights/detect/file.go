package detect

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/gguf"
	"github.com/forgeflow/forgeflow/weights/safetensors"
	"github.com/forgeflow/forgeflow/weights/torch"
)

// DetectFile detects the model in a .safetensors, .gguf or PyTorch (.ckpt, .pt, .pth,
// .bin) file, told apart by their first bytes. Only the header (for PyTorch files
// the pickle) is decoded and, for an SD2.x UNet, one bias vector read.
func DetectFile(path string) (*Model, error) {
	magic, err := readMagic(path)
	if err != nil {
		return nil, fmt.Errorf("detect: %w", err)
	}
	in, closer, err := openInput(path, magic)
	if err != nil {
		return nil, fmt.Errorf("detect: %w", err)
	}
	defer closer.Close()
	m, err := Detect(in)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", err, path)
	}
	return m, nil
}

// tensorFile is what the three readers have in common.
type tensorFile[T interface{ Float32() ([]float32, error) }] interface {
	Tensors() []weights.TensorInfo
	Tensor(name string) (T, error)
	Close() error
}

func input[T interface{ Float32() ([]float32, error) }](f tensorFile[T]) Input {
	return Input{
		Tensors: f.Tensors(),
		Values: func(name string) ([]float32, error) {
			t, err := f.Tensor(name)
			if err != nil {
				return nil, err
			}
			return t.Float32()
		},
	}
}

func openInput(path string, magic []byte) (Input, io.Closer, error) {
	switch {
	case bytes.Equal(magic[:min(4, len(magic))], []byte("GGUF")):
		f, err := gguf.Open(path)
		if err != nil {
			return Input{}, nil, err
		}
		in := input(f)
		in.Metadata = map[string]string{}
		if arch, ok := f.Metadata().String("general.architecture"); ok {
			in.Metadata["general.architecture"] = arch
		}
		return in, f, nil
	case len(magic) == 9 && magic[8] == '{':
		// safetensors: an 8-byte header length, then the JSON header. Checked before
		// the pickle test because a header length's low byte can be 0x80.
		return openSafetensors(path)
	case bytes.Equal(magic[:min(4, len(magic))], []byte("PK\x03\x04")), len(magic) > 0 && magic[0] == 0x80:
		// A zip archive (torch.save since 1.6) or a bare pickle (the legacy format of
		// older .ckpt files; protocol 2+ pickles start with 0x80).
		f, err := torch.Open(path)
		if err != nil {
			return Input{}, nil, err
		}
		return input(f), f, nil
	default:
		return openSafetensors(path)
	}
}

func openSafetensors(path string) (Input, io.Closer, error) {
	f, err := safetensors.Open(path)
	if err != nil {
		return Input{}, nil, err
	}
	in := input(f)
	in.Metadata = f.Metadata()
	return in, f, nil
}

func readMagic(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, 9)
	n, err := io.ReadFull(f, b)
	switch {
	case err == io.EOF:
		return nil, fmt.Errorf("%s: empty file", path)
	case err != nil && err != io.ErrUnexpectedEOF:
		return nil, err
	}
	return b[:n], nil
}

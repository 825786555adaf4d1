package sd

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// openFile opens a checkpoint through weights/tensorfile: a .safetensors file or a
// PyTorch checkpoint (.ckpt, .pt, .pth, .bin: zip or legacy pickle). A GGUF file is
// refused before it is parsed: GGUF UNets load through a diffusion-model loader.
func openFile(path string) (*tensorfile.File, error) {
	return openFormats(path, "GGUF checkpoints (use a diffusion-model loader for GGUF UNets)", tensorfile.Safetensors, tensorfile.Torch)
}

// openFormats opens path if it is one of formats; another format is an
// UnsupportedError saying what (no format listed: any).
func openFormats(path, what string, formats ...tensorfile.Format) (*tensorfile.File, error) {
	f, err := tensorfile.Open(path, formats...)
	var wrong *tensorfile.WrongFormatError
	var pathErr *fs.PathError
	switch {
	case err == nil:
		return f, nil
	case errors.As(err, &wrong):
		return nil, &UnsupportedError{Path: path, What: what}
	case errors.As(err, &pathErr):
		return nil, fmt.Errorf("sd: %w", err)
	}
	return nil, &FormatError{Path: path, Err: err}
}

// keysUnder lists the stored keys that start with prefix, sorted.
func keysUnder(f *tensorfile.File, prefix string) []string {
	var out []string
	for _, in := range f.Tensors() {
		if strings.HasPrefix(in.Name, prefix) {
			out = append(out, in.Name)
		}
	}
	slices.Sort(out)
	return out
}

// FormatError reports a checkpoint that cannot be read or does not hold what its family
// needs (truncated file, missing tensors, wrong shapes).
type FormatError struct {
	Path string
	Err  error
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("sd: invalid checkpoint %s: %v", e.Path, e.Err)
}
func (e *FormatError) Unwrap() error { return e.Err }

// UnsupportedError reports a valid file that forgeflow cannot load as asked (another
// model family, a variant not implemented).
type UnsupportedError struct {
	Path string
	What string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("sd: unsupported checkpoint %s: %s", e.Path, e.What)
}

package sd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
	"github.com/forgeflow/forgeflow/weights/torch"
)

// tensorFile is an open checkpoint: its tensor list and each tensor's stored bytes.
// safetensors and PyTorch files both fit.
type tensorFile struct {
	name  string
	infos map[string]weights.TensorInfo
	keys  []string
	raw   func(key string) (weights.TensorInfo, []byte, error)
	close func() error
}

// openTensorFile opens a .safetensors file or a PyTorch checkpoint (.ckpt, .pt, .pth,
// .bin: zip or legacy pickle), told apart by their first bytes as detect does.
func openTensorFile(path string) (*tensorFile, error) {
	magic, err := readMagic(path)
	if err != nil {
		return nil, err
	}
	if bytes.HasPrefix(magic, []byte("GGUF")) {
		return nil, &UnsupportedError{Path: path, What: "GGUF checkpoints (use a diffusion-model loader for GGUF UNets)"}
	}
	// A safetensors file starts with its header's length (8 bytes, little-endian) and
	// the header's "{"; its first byte may be 0x80 like a pickle's protocol opcode, so
	// it is recognised first.
	isSafetensors := len(magic) == 9 && magic[8] == '{'
	if !isSafetensors && (bytes.HasPrefix(magic, []byte("PK\x03\x04")) || (len(magic) > 0 && magic[0] == 0x80)) {
		f, err := torch.Open(path)
		if err != nil {
			return nil, &FormatError{Path: path, Err: err}
		}
		return newTensorFile(path, f.Tensors(), func(k string) (weights.TensorInfo, []byte, error) {
			t, err := f.Tensor(k)
			return t.TensorInfo, t.Data, err
		}, f.Close), nil
	}
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, &FormatError{Path: path, Err: err}
	}
	return newTensorFile(path, f.Tensors(), func(k string) (weights.TensorInfo, []byte, error) {
		t, err := f.Tensor(k)
		return t.TensorInfo, t.Data, err
	}, f.Close), nil
}

func readMagic(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("sd: %w", err)
	}
	defer f.Close()
	b := make([]byte, 9)
	n, err := io.ReadFull(f, b)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		if errors.Is(err, io.EOF) {
			return nil, &FormatError{Path: path, Err: errors.New("empty file")}
		}
		return nil, fmt.Errorf("sd: %w", err)
	}
	return b[:n], nil
}

func newTensorFile(name string, infos []weights.TensorInfo, raw func(string) (weights.TensorInfo, []byte, error), closeFn func() error) *tensorFile {
	tf := &tensorFile{name: name, infos: make(map[string]weights.TensorInfo, len(infos)), raw: raw, close: closeFn}
	for _, in := range infos {
		tf.infos[in.Name] = in
		tf.keys = append(tf.keys, in.Name)
	}
	sort.Strings(tf.keys)
	return tf
}

// Close releases the file (unmaps it).
func (f *tensorFile) Close() error {
	if f.close == nil {
		return nil
	}
	return f.close()
}

// source is a statedict.Source over a tensorFile, with optional renames: a key the
// model code asks for (its HF-style name) may be served from another stored name, or
// computed from stored tensors (OpenCLIP's fused in_proj split into q, k, v).
type source struct {
	rt    *gpu.Runtime
	file  *tensorFile
	alias map[string]derived // model key → how to make it
	keys  []string
}

// derived makes one model key from the file: a stored tensor, optionally a row range of
// it (rows [from, from+n) of a fused projection) or its transpose.
type derived struct {
	stored    string
	from, n   int // row range, n == 0: the whole tensor
	transpose bool
	shape     []int // another shape for the same elements (a linear weight as a 1×1 conv), or nil
}

func newSource(rt *gpu.Runtime, f *tensorFile) *source {
	return &source{rt: rt, file: f, alias: map[string]derived{}, keys: f.keys}
}

// Keys implements statedict.Source: the stored keys and every alias.
func (s *source) Keys() []string { return s.keys }

func (s *source) addAlias(key string, d derived) {
	if _, ok := s.alias[key]; !ok {
		s.keys = append(s.keys, key)
	}
	s.alias[key] = d
}

// has reports whether a stored key exists.
func (s *source) has(key string) bool {
	_, ok := s.file.infos[key]
	return ok
}

// Tensor implements statedict.Source.
func (s *source) Tensor(key string) (*gpu.Tensor, error) {
	d, ok := s.alias[key]
	if !ok {
		d = derived{stored: key}
	}
	info, data, err := s.file.raw(d.stored)
	if err != nil {
		return nil, &FormatError{Path: s.file.name, Err: err}
	}
	dt, err := gpuDType(info.DType)
	if err != nil {
		return nil, &FormatError{Path: s.file.name, Err: fmt.Errorf("tensor %q: %w", d.stored, err)}
	}
	shape := make([]int, len(info.Shape))
	for i, v := range info.Shape {
		shape[i] = int(v)
	}
	if d.shape != nil {
		shape = d.shape
	}
	t, err := s.rt.FromBytes(dt, data, shape...)
	if err != nil {
		return nil, &FormatError{Path: s.file.name, Err: fmt.Errorf("tensor %q: %w", d.stored, err)}
	}
	if d.n > 0 {
		if len(shape) == 0 || d.from+d.n > shape[0] {
			t.Release()
			return nil, &FormatError{Path: s.file.name, Err: fmt.Errorf("tensor %q %v has no rows %d…%d", d.stored, shape, d.from, d.from+d.n)}
		}
		v, err := gpu.Narrow(t, 0, d.from, d.n)
		t.Release()
		if err != nil {
			return nil, err
		}
		t = v
	}
	if d.transpose {
		if len(shape) != 2 {
			t.Release()
			return nil, &FormatError{Path: s.file.name, Err: fmt.Errorf("tensor %q %v is not a matrix", d.stored, shape)}
		}
		v, err := gpu.Transpose(t, 0, 1)
		t.Release()
		if err != nil {
			return nil, err
		}
		t = v
	}
	if !t.IsContiguous() {
		c, err := gpu.Contiguous(s.rt, t)
		t.Release()
		if err != nil {
			return nil, fmt.Errorf("sd: %s: %w", key, err)
		}
		t = c
	}
	return t, nil
}

// gpuDType maps a file dtype to the runtime's; integer tensors are not weights.
func gpuDType(d weights.DType) (gpu.DType, error) {
	for g := gpu.F32; g.Valid(); g++ {
		if g.String() == string(d) {
			return g, nil
		}
	}
	return 0, fmt.Errorf("dtype %s is not a weight dtype", d)
}

// keysUnder lists the stored keys that start with prefix.
func (f *tensorFile) keysUnder(prefix string) []string {
	var out []string
	for _, k := range f.keys {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
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

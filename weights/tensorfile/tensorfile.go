package tensorfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/gguf"
	"github.com/forgeflow/forgeflow/weights/safetensors"
	"github.com/forgeflow/forgeflow/weights/torch"
)

// Format is a tensor container format.
type Format uint8

const (
	Safetensors Format = iota + 1 // .safetensors: 8-byte header length, JSON header, data
	GGUF                          // GGUF v2/v3, plain and quantized types
	Torch                         // torch.save zip archive or legacy pickle (.ckpt, .pt, .pth, .bin)
)

func (f Format) String() string {
	switch f {
	case Safetensors:
		return "safetensors"
	case GGUF:
		return "gguf"
	case Torch:
		return "torch"
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

// magicLen is how many leading bytes Sniff needs: a safetensors header length (8 bytes)
// and the "{" that opens its JSON header.
const magicLen = 9

// Sniff tells the format from a file's first bytes (up to 9 are looked at). A
// safetensors file is recognised by the "{" after its 8-byte header length, before the
// pickle test, because that length's low byte may be 0x80 like a pickle's protocol
// opcode. Bytes that match nothing are taken as safetensors, whose reader then says
// what is wrong with them.
func Sniff(magic []byte) Format {
	switch {
	case bytes.HasPrefix(magic, []byte(gguf.Magic)):
		return GGUF
	case len(magic) >= magicLen && magic[8] == '{':
		return Safetensors
	case bytes.HasPrefix(magic, []byte("PK\x03\x04")), len(magic) > 0 && magic[0] == 0x80:
		// torch.save since 1.6 writes a zip archive; older .ckpt files are a bare
		// pickle, whose protocol 2+ opcode is 0x80.
		return Torch
	}
	return Safetensors
}

// WrongFormatError is returned by Open when the file is valid so far but not in one of
// the formats the caller accepts (a GGUF given to a checkpoint loader, say).
type WrongFormatError struct {
	File   string
	Format Format
	Want   []Format
}

func (e *WrongFormatError) Error() string {
	want := make([]string, len(e.Want))
	for i, f := range e.Want {
		want[i] = f.String()
	}
	return fmt.Sprintf("tensorfile: %s is a %s file, not %s", e.File, e.Format, strings.Join(want, " or "))
}

// File is an open tensor file. Its methods are safe for concurrent use; the byte slices
// it returns are valid until Close.
type File struct {
	name   string
	format Format
	infos  []weights.TensorInfo
	index  map[string]int
	meta   map[string]string
	gguf   *gguf.File
	torch  *torch.File
	tensor func(name string) (data []byte, float32 func() ([]float32, error), err error)
	mapped func() bool
	close  func() error
}

// Open opens the file at path in the format its first bytes name. With formats given,
// any other format gives a *WrongFormatError (checked before the file is parsed). A
// missing file gives the *fs.PathError of os.Open; an empty one a *weights.FormatError.
func Open(path string, formats ...Format) (*File, error) {
	magic, err := readMagic(path)
	if err != nil {
		return nil, err
	}
	format := Sniff(magic)
	if len(formats) > 0 && !slices.Contains(formats, format) {
		return nil, &WrongFormatError{File: path, Format: format, Want: formats}
	}
	switch format {
	case GGUF:
		f, err := gguf.Open(path)
		if err != nil {
			return nil, err
		}
		return fromGGUF(f), nil
	case Torch:
		f, err := torch.Open(path)
		if err != nil {
			return nil, err
		}
		return fromTorch(f), nil
	}
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, err
	}
	return fromSafetensors(f), nil
}

// OpenBytes is Open on a file image held in memory; tensor data aliases b.
func OpenBytes(name string, b []byte, formats ...Format) (*File, error) {
	if len(b) == 0 {
		return nil, emptyFile(name)
	}
	format := Sniff(b[:min(len(b), magicLen)])
	if len(formats) > 0 && !slices.Contains(formats, format) {
		return nil, &WrongFormatError{File: name, Format: format, Want: formats}
	}
	switch format {
	case GGUF:
		f, err := gguf.OpenBytes(name, b)
		if err != nil {
			return nil, err
		}
		return fromGGUF(f), nil
	case Torch:
		f, err := torch.OpenBytes(name, b)
		if err != nil {
			return nil, err
		}
		return fromTorch(f), nil
	}
	f, err := safetensors.OpenBytes(name, b)
	if err != nil {
		return nil, err
	}
	return fromSafetensors(f), nil
}

func readMagic(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, magicLen)
	n, err := io.ReadFull(f, b)
	switch {
	case errors.Is(err, io.EOF):
		return nil, emptyFile(path)
	case err != nil && !errors.Is(err, io.ErrUnexpectedEOF):
		return nil, fmt.Errorf("tensorfile: %w", err)
	}
	return b[:n], nil
}

func emptyFile(name string) error {
	return &weights.FormatError{Format: "tensorfile", File: name, Offset: 0, Msg: "empty file"}
}

func newFile(name string, format Format, infos []weights.TensorInfo) *File {
	f := &File{name: name, format: format, infos: infos, index: make(map[string]int, len(infos))}
	for i, in := range infos {
		f.index[in.Name] = i
	}
	return f
}

func fromSafetensors(sf *safetensors.File) *File {
	f := newFile(sf.Name(), Safetensors, sf.Tensors())
	f.meta = sf.Metadata()
	f.tensor = func(name string) ([]byte, func() ([]float32, error), error) {
		t, err := sf.Tensor(name)
		return t.Data, t.Float32, err
	}
	f.mapped, f.close = sf.Mapped, sf.Close
	return f
}

func fromGGUF(gf *gguf.File) *File {
	f := newFile(gf.Name(), GGUF, gf.Tensors())
	f.gguf = gf
	f.meta = map[string]string{}
	for _, kv := range gf.Metadata() {
		if s, ok := kv.Value.(string); ok {
			f.meta[kv.Key] = s
		}
	}
	f.tensor = func(name string) ([]byte, func() ([]float32, error), error) {
		t, err := gf.Tensor(name)
		return t.Data, t.Float32, err
	}
	f.mapped, f.close = gf.Mapped, gf.Close
	return f
}

func fromTorch(tf *torch.File) *File {
	f := newFile(tf.Name(), Torch, tf.Tensors())
	f.torch = tf
	f.tensor = func(name string) ([]byte, func() ([]float32, error), error) {
		t, err := tf.Tensor(name)
		return t.Data, t.Float32, err
	}
	f.mapped, f.close = tf.Mapped, tf.Close
	return f
}

// Name returns the path (or name) the file was opened with.
func (f *File) Name() string { return f.name }

// Format returns the file's container format.
func (f *File) Format() Format { return f.format }

// Tensors lists every tensor in file order: name, the dtype as the file spells it
// (weights.DType: "F16", "Q4_K", ...), the PyTorch-order shape, the absolute offset (-1
// where the data is not one stored run) and the byte size. It must not be modified.
func (f *File) Tensors() []weights.TensorInfo { return f.infos }

// Info returns the description of the named tensor.
func (f *File) Info(name string) (weights.TensorInfo, bool) {
	i, ok := f.index[name]
	if !ok {
		return weights.TensorInfo{}, false
	}
	return f.infos[i], true
}

// Tensor returns the named tensor with its stored bytes: in place (no copy) except a
// torch tensor that is a strided view or lies in a compressed entry.
func (f *File) Tensor(name string) (Tensor, error) {
	info, ok := f.Info(name)
	if !ok {
		return Tensor{}, fmt.Errorf("%s: %s: no tensor %q", f.format, f.name, name)
	}
	data, decode, err := f.tensor(name)
	if err != nil {
		return Tensor{}, err
	}
	return Tensor{TensorInfo: info, Data: data, decode: decode}, nil
}

// Metadata returns the file's string metadata: safetensors' "__metadata__", a GGUF
// file's string-valued keys (general.architecture, ...); nil for torch files. It must
// not be modified.
func (f *File) Metadata() map[string]string { return f.meta }

// GGUF returns the underlying GGUF file, for its typed metadata and block layouts; nil
// for the other formats.
func (f *File) GGUF() *gguf.File { return f.gguf }

// Torch returns the underlying PyTorch file, for what its pickle holds beside the state
// dict (Root); nil for the other formats.
func (f *File) Torch() *torch.File { return f.torch }

// Mapped reports whether the data is memory-mapped rather than read into memory.
func (f *File) Mapped() bool { return f.mapped() }

// Close releases the file; tensors returned earlier become invalid.
func (f *File) Close() error { return f.close() }

// Tensor is one tensor's description and its bytes as stored (little-endian; GGUF
// tensors as whole blocks of their type).
type Tensor struct {
	weights.TensorInfo
	Data   []byte
	decode func() ([]float32, error)
}

// Float32 converts the tensor into a new float32 slice: every float, integer and BOOL
// dtype converts, GGUF block types are dequantized (ggml's float32 arithmetic).
func (t Tensor) Float32() ([]float32, error) { return t.decode() }

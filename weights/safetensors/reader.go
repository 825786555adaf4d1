package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/internal/mmap"
)

// MaxHeaderSize bounds the JSON header, as the reference implementation does (100 MB):
// a hostile length cannot make the reader allocate more than that.
const MaxHeaderSize = 100_000_000

// metadataKey is the reserved header key holding the free-form string map.
const metadataKey = "__metadata__"

// Header is the decoded, validated header of a file.
type Header struct {
	// Metadata is the "__metadata__" map; nil when the file has none.
	Metadata map[string]string
	// Tensors lists every tensor in data order (by offset, then name). Offset is absolute.
	Tensors []weights.TensorInfo
	// DataOffset is where the data area starts (8 + header length).
	DataOffset int64
	// FileSize is the size of the whole file.
	FileSize int64
}

// Unsupported dtypes that the reference implementation knows but this package does not
// convert; they give an UnsupportedError rather than a FormatError.
var knownUnsupported = map[string]bool{"F4": true, "F6_E2M3": true, "F6_E3M2": true, "F8_E8M0": true, "C64": true}

// ReadHeader reads and validates only the header of the named file: 8 + N bytes, however
// large the file.
func ReadHeader(path string) (*Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	return DecodeHeader(path, f, st.Size())
}

// DecodeHeader reads and validates the header of a safetensors file of the given size from
// r. name is used in errors only.
func DecodeHeader(name string, r io.ReaderAt, size int64) (*Header, error) {
	var lenBuf [8]byte
	if size < 8 {
		return nil, formatErr(name, "", 0, "file of %d bytes is shorter than the 8-byte header length", size)
	}
	if _, err := r.ReadAt(lenBuf[:], 0); err != nil {
		return nil, formatErr(name, "", 0, "reading header length: %v", err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > MaxHeaderSize {
		return nil, formatErr(name, "", 0, "header length %d exceeds the %d-byte limit", n, MaxHeaderSize)
	}
	if int64(n) > size-8 {
		return nil, formatErr(name, "", 0, "header length %d runs past the end of the %d-byte file", n, size)
	}
	buf := make([]byte, n)
	if _, err := r.ReadAt(buf, 8); err != nil {
		return nil, formatErr(name, "", 8, "reading %d-byte header: %v", n, err)
	}
	return parseHeader(name, buf, size)
}

func formatErr(file, tensor string, off int64, format string, args ...any) error {
	return &weights.FormatError{Format: "safetensors", File: file, Tensor: tensor, Offset: off, Msg: fmt.Sprintf(format, args...)}
}

// File is an open safetensors file. Its methods are safe for concurrent use; the byte
// slices it returns are valid until Close.
type File struct {
	name   string
	region *mmap.Region
	header *Header
	index  map[string]int
}

// Open maps the named file and validates its header.
func Open(path string) (*File, error) {
	r, err := mmap.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	f, err := newFile(path, r)
	if err != nil {
		r.Close()
		return nil, err
	}
	return f, nil
}

// OpenBytes reads a safetensors image held in memory; Tensor data aliases b.
func OpenBytes(name string, b []byte) (*File, error) {
	return newFile(name, &mmap.Region{Data: b})
}

func newFile(name string, r *mmap.Region) (*File, error) {
	h, err := DecodeHeader(name, bytes.NewReader(r.Data), int64(len(r.Data)))
	if err != nil {
		return nil, err
	}
	f := &File{name: name, region: r, header: h, index: make(map[string]int, len(h.Tensors))}
	for i, t := range h.Tensors {
		f.index[t.Name] = i
	}
	return f, nil
}

// Name returns the path the file was opened with.
func (f *File) Name() string { return f.name }

// Header returns the validated header. It must not be modified.
func (f *File) Header() *Header { return f.header }

// Metadata returns the "__metadata__" map (nil when absent). It must not be modified.
func (f *File) Metadata() map[string]string { return f.header.Metadata }

// Tensors lists every tensor in data order. The slice must not be modified.
func (f *File) Tensors() []weights.TensorInfo { return f.header.Tensors }

// Info returns the description of the named tensor.
func (f *File) Info(name string) (weights.TensorInfo, bool) {
	i, ok := f.index[name]
	if !ok {
		return weights.TensorInfo{}, false
	}
	return f.header.Tensors[i], true
}

// Mapped reports whether the data is memory-mapped rather than read into memory.
func (f *File) Mapped() bool { return f.region.Mapped() }

// ErrClosed is returned by Tensor after Close.
var ErrClosed = errors.New("safetensors: file is closed")

// Tensor returns the named tensor. Its Data aliases the mapping (no copy) and is valid
// until Close.
func (f *File) Tensor(name string) (Tensor, error) {
	i, ok := f.index[name]
	if !ok {
		return Tensor{}, fmt.Errorf("safetensors: %s: no tensor %q", f.name, name)
	}
	if f.region.Data == nil {
		return Tensor{}, ErrClosed
	}
	t := f.header.Tensors[i]
	return Tensor{TensorInfo: t, Data: f.region.Data[t.Offset : t.Offset+t.Size : t.Offset+t.Size]}, nil
}

// Close releases the mapping; tensors returned earlier become invalid.
func (f *File) Close() error { return f.region.Close() }

// Tensor is one tensor's description and its bytes as stored (little-endian).
type Tensor struct {
	weights.TensorInfo
	Data []byte
}

// Float32 returns the values converted to float32 in a new slice. Every float, integer
// and BOOL dtype converts (see weights.ToFloat32).
func (t Tensor) Float32() ([]float32, error) {
	out := make([]float32, t.NumElements())
	if err := weights.ToFloat32(out, t.Data, t.DType); err != nil {
		return nil, fmt.Errorf("safetensors: tensor %q: %w", t.Name, err)
	}
	return out, nil
}

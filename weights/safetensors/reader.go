package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"unicode/utf8"

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

// parseHeader decodes the JSON header buf of a file of fileSize bytes and validates it.
func parseHeader(name string, buf []byte, fileSize int64) (*Header, error) {
	if !utf8.Valid(buf) {
		return nil, formatErr(name, "", 8, "header is not valid UTF-8")
	}
	h := &Header{DataOffset: 8 + int64(len(buf)), FileSize: fileSize}
	p := &headerParser{name: name, dec: json.NewDecoder(bytes.NewReader(buf))}
	p.dec.UseNumber()
	if err := p.expectDelim('{', ""); err != nil {
		return nil, err
	}
	type span struct {
		begin, end int64
		idx        int
	}
	var spans []span
	seen := map[string]bool{}
	for p.dec.More() {
		key, err := p.key("")
		if err != nil {
			return nil, err
		}
		if seen[key] {
			return nil, p.errorf(key, "duplicate key")
		}
		seen[key] = true
		if key == metadataKey {
			if h.Metadata, err = p.metadata(); err != nil {
				return nil, err
			}
			continue
		}
		info, begin, end, err := p.tensor(key)
		if err != nil {
			return nil, err
		}
		spans = append(spans, span{begin, end, len(h.Tensors)})
		h.Tensors = append(h.Tensors, info)
	}
	if err := p.expectDelim('}', ""); err != nil {
		return nil, err
	}
	// Only whitespace may follow the object: writers pad the header with spaces.
	if _, err := p.dec.Token(); err != io.EOF {
		return nil, p.errorf("", "data after the header object")
	}

	// The tensors must tile [0, dataLen) exactly: sorted by offset, each starting where the
	// previous one ended (Metadata::validate in the reference implementation).
	dataLen := fileSize - h.DataOffset
	slices.SortStableFunc(spans, func(a, b span) int {
		if a.begin != b.begin {
			return cmpInt(a.begin, b.begin)
		}
		if a.end != b.end {
			return cmpInt(a.end, b.end)
		}
		return cmpStr(h.Tensors[a.idx].Name, h.Tensors[b.idx].Name)
	})
	pos := int64(0)
	sorted := make([]weights.TensorInfo, 0, len(spans))
	for _, s := range spans {
		t := h.Tensors[s.idx]
		switch {
		case s.begin < pos:
			return nil, formatErr(name, t.Name, h.DataOffset+s.begin, "data_offsets [%d, %d] overlap the previous tensor, which ends at %d", s.begin, s.end, pos)
		case s.begin > pos:
			return nil, formatErr(name, t.Name, h.DataOffset+pos, "gap of %d bytes before data_offsets [%d, %d]", s.begin-pos, s.begin, s.end)
		case s.end > dataLen:
			return nil, formatErr(name, t.Name, h.DataOffset+s.begin, "data_offsets [%d, %d] run past the %d-byte data area (file truncated?)", s.begin, s.end, dataLen)
		}
		pos = s.end
		t.Offset = h.DataOffset + s.begin
		sorted = append(sorted, t)
	}
	if pos != dataLen {
		return nil, formatErr(name, "", h.DataOffset+pos, "tensors cover %d bytes of the %d-byte data area", pos, dataLen)
	}
	h.Tensors = sorted
	return h, nil
}

type headerParser struct {
	name string
	dec  *json.Decoder
}

func (p *headerParser) errorf(tensor, format string, args ...any) error {
	return formatErr(p.name, tensor, 8+p.dec.InputOffset(), "header: "+format, args...)
}

func (p *headerParser) token(tensor string) (json.Token, error) {
	tok, err := p.dec.Token()
	if err != nil {
		if err == io.EOF {
			return nil, p.errorf(tensor, "unexpected end of JSON")
		}
		return nil, p.errorf(tensor, "bad JSON: %v", err)
	}
	return tok, nil
}

func (p *headerParser) expectDelim(d json.Delim, tensor string) error {
	tok, err := p.token(tensor)
	if err != nil {
		return err
	}
	if got, ok := tok.(json.Delim); !ok || got != d {
		return p.errorf(tensor, "want %q, got %v", d, describe(tok))
	}
	return nil
}

func (p *headerParser) key(tensor string) (string, error) {
	tok, err := p.token(tensor)
	if err != nil {
		return "", err
	}
	s, ok := tok.(string)
	if !ok {
		return "", p.errorf(tensor, "want an object key, got %v", describe(tok))
	}
	return s, nil
}

func (p *headerParser) str(tensor, what string) (string, error) {
	tok, err := p.token(tensor)
	if err != nil {
		return "", err
	}
	s, ok := tok.(string)
	if !ok {
		return "", p.errorf(tensor, "%s: want a string, got %v", what, describe(tok))
	}
	return s, nil
}

// metadata decodes the "__metadata__" object: string keys to string values.
func (p *headerParser) metadata() (map[string]string, error) {
	tok, err := p.token(metadataKey)
	if err != nil {
		return nil, err
	}
	if tok == nil { // "__metadata__": null is accepted, as by the reference reader
		return nil, nil
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, p.errorf(metadataKey, "want an object of strings, got %v", describe(tok))
	}
	m := map[string]string{}
	for p.dec.More() {
		k, err := p.key(metadataKey)
		if err != nil {
			return nil, err
		}
		if _, dup := m[k]; dup {
			return nil, p.errorf(metadataKey, "duplicate metadata key %q", k)
		}
		v, err := p.str(metadataKey, "value of "+strconv.Quote(k))
		if err != nil {
			return nil, err
		}
		m[k] = v
	}
	return m, p.expectDelim('}', metadataKey)
}

// uints decodes an array of non-negative integers.
func (p *headerParser) uints(tensor, what string) ([]int64, error) {
	if err := p.expectDelim('[', tensor); err != nil {
		return nil, err
	}
	out := []int64{}
	for p.dec.More() {
		tok, err := p.token(tensor)
		if err != nil {
			return nil, err
		}
		num, ok := tok.(json.Number)
		if !ok {
			return nil, p.errorf(tensor, "%s: want an integer, got %v", what, describe(tok))
		}
		v, err := strconv.ParseInt(string(num), 10, 64)
		if err != nil || v < 0 {
			return nil, p.errorf(tensor, "%s: %s is not a non-negative 64-bit integer", what, num)
		}
		out = append(out, v)
	}
	return out, p.expectDelim(']', tensor)
}

// tensor decodes one tensor entry {"dtype", "shape", "data_offsets"} and checks its size.
func (p *headerParser) tensor(name string) (info weights.TensorInfo, begin, end int64, err error) {
	info.Name = name
	if err = p.expectDelim('{', name); err != nil {
		return
	}
	var haveDType, haveShape, haveOffsets bool
	var offsets []int64
	for p.dec.More() {
		var k string
		if k, err = p.key(name); err != nil {
			return
		}
		switch k {
		case "dtype":
			if haveDType {
				err = p.errorf(name, "duplicate field %q", k)
				return
			}
			haveDType = true
			var s string
			if s, err = p.str(name, "dtype"); err != nil {
				return
			}
			info.DType = weights.DType(s)
			if info.DType.ElemSize() == 0 {
				if knownUnsupported[s] {
					err = &weights.UnsupportedError{Format: "safetensors", File: p.name, Tensor: name, Offset: 8 + p.dec.InputOffset(), Msg: "dtype " + s}
				} else {
					err = p.errorf(name, "unknown dtype %q", s)
				}
				return
			}
		case "shape":
			if haveShape {
				err = p.errorf(name, "duplicate field %q", k)
				return
			}
			haveShape = true
			if info.Shape, err = p.uints(name, "shape"); err != nil {
				return
			}
		case "data_offsets":
			if haveOffsets {
				err = p.errorf(name, "duplicate field %q", k)
				return
			}
			haveOffsets = true
			if offsets, err = p.uints(name, "data_offsets"); err != nil {
				return
			}
			if len(offsets) != 2 {
				err = p.errorf(name, "data_offsets has %d values, want 2", len(offsets))
				return
			}
		default:
			err = p.errorf(name, "unknown field %q", k)
			return
		}
	}
	if err = p.expectDelim('}', name); err != nil {
		return
	}
	switch {
	case !haveDType:
		err = p.errorf(name, "missing dtype")
	case !haveShape:
		err = p.errorf(name, "missing shape")
	case !haveOffsets:
		err = p.errorf(name, "missing data_offsets")
	}
	if err != nil {
		return
	}
	begin, end = offsets[0], offsets[1]
	if end < begin {
		err = p.errorf(name, "data_offsets [%d, %d] end before they begin", begin, end)
		return
	}
	size := int64(info.DType.ElemSize())
	n, ok := weights.ShapeElements(info.Shape, (1<<62)/size)
	if !ok {
		err = p.errorf(name, "shape %v overflows", info.Shape)
		return
	}
	if n*size != end-begin {
		err = p.errorf(name, "shape %v of %s needs %d bytes, data_offsets [%d, %d] hold %d", info.Shape, info.DType, n*size, begin, end, end-begin)
		return
	}
	info.Size = end - begin
	return
}

func describe(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		return strconv.Quote(v.String())
	case string:
		return "string " + strconv.Quote(v)
	case json.Number:
		return "number " + string(v)
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T %v", tok, tok)
}

func formatErr(file, tensor string, off int64, format string, args ...any) error {
	return &weights.FormatError{Format: "safetensors", File: file, Tensor: tensor, Offset: off, Msg: fmt.Sprintf(format, args...)}
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
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

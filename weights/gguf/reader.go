package gguf

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/forgeflow/forgeflow/weights"
)

// Magic is the first four bytes of every GGUF file.
const Magic = "GGUF"

// DefaultAlignment is the data alignment when general.alignment is absent.
const DefaultAlignment = 32

// maxDims is GGML_MAX_DIMS: ggml refuses tensors with more dimensions.
const maxDims = 4

// maxNesting bounds nested metadata arrays so that a hostile file cannot recurse deeply.
const maxNesting = 32

// TensorInfo is one tensor's entry in the GGUF header.
type TensorInfo struct {
	Name string
	Type Type
	// Dims is ggml's ne[]: Dims[0] is the number of elements of a row (contiguous).
	Dims []uint64
	// Offset is relative to the start of the data section, as stored.
	Offset uint64
	// Size is the number of data bytes.
	Size int64
}

// Shape returns the dims in PyTorch order (outermost first), as ComfyUI-GGUF reports them.
func (t TensorInfo) Shape() []int64 {
	s := make([]int64, len(t.Dims))
	for i, d := range t.Dims {
		s[len(s)-1-i] = int64(d)
	}
	return s
}

// NumElements returns the product of the dims.
func (t TensorInfo) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Dims {
		n *= int64(d)
	}
	return n
}

// Header is a decoded, validated GGUF header.
type Header struct {
	Version   uint32
	Metadata  Metadata
	Tensors   []TensorInfo // in header order
	Alignment int64
	// DataOffset is the absolute offset of the data section.
	DataOffset int64
	FileSize   int64
}

// parser reads little-endian values from the whole file image b, bounds-checked.
type parser struct {
	name   string
	b      []byte
	off    int
	tensor string // the tensor or key being read, for errors
}

func (p *parser) fail(format string, args ...any) error {
	return &weights.FormatError{Format: "gguf", File: p.name, Tensor: p.tensor, Offset: int64(p.off), Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) unsupported(format string, args ...any) error {
	return &weights.UnsupportedError{Format: "gguf", File: p.name, Tensor: p.tensor, Offset: int64(p.off), Msg: fmt.Sprintf(format, args...)}
}

// take returns the next n bytes or a truncation error.
func (p *parser) take(n uint64, what string) ([]byte, error) {
	if n > uint64(len(p.b)-p.off) {
		return nil, p.fail("%s: need %d bytes, file ends after %d (truncated)", what, n, len(p.b)-p.off)
	}
	s := p.b[p.off : p.off+int(n)]
	p.off += int(n)
	return s, nil
}

func (p *parser) u32(what string) (uint32, error) {
	b, err := p.take(4, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (p *parser) u64(what string) (uint64, error) {
	b, err := p.take(8, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

func (p *parser) str(what string) (string, error) {
	n, err := p.u64(what + " length")
	if err != nil {
		return "", err
	}
	b, err := p.take(n, what)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// Parse decodes and validates the header of a GGUF file image b (the whole file: tensor
// offsets are checked against its length). name is used in errors only.
func Parse(name string, b []byte) (*Header, error) {
	p := &parser{name: name, b: b}
	magic, err := p.take(4, "magic")
	if err != nil {
		return nil, err
	}
	if string(magic) != Magic {
		p.off = 0
		return nil, p.fail("bad magic %q, want %q", magic, Magic)
	}
	h := &Header{FileSize: int64(len(b)), Alignment: DefaultAlignment}
	if h.Version, err = p.u32("version"); err != nil {
		return nil, err
	}
	switch {
	case h.Version == 1:
		p.off -= 4
		return nil, p.unsupported("GGUF version 1 (32-bit counts); convert it to version 3")
	case h.Version != 2 && h.Version != 3:
		p.off -= 4
		if v := h.Version; v&0xffff == 0 && (v>>24 == 2 || v>>24 == 3) {
			return nil, p.unsupported("big-endian GGUF (version %d byte-swapped)", v>>24)
		}
		return nil, p.fail("unknown version %d", h.Version)
	}
	nTensors, err := p.u64("tensor count")
	if err != nil {
		return nil, err
	}
	nKV, err := p.u64("metadata count")
	if err != nil {
		return nil, err
	}
	// Each pair needs at least 12 bytes (key length and type) and each tensor info 24:
	// counts the file cannot hold are refused before anything is allocated.
	if rest := uint64(len(b) - p.off); nKV > rest/12 || nTensors > rest/24 {
		return nil, p.fail("%d tensors and %d metadata pairs cannot fit in %d bytes", nTensors, nKV, rest)
	}
	h.Metadata = make(Metadata, 0, nKV)
	keys := make(map[string]bool, nKV)
	for i := uint64(0); i < nKV; i++ {
		p.tensor = ""
		at := p.off
		key, err := p.str("metadata key")
		if err != nil {
			return nil, err
		}
		p.tensor = key
		if keys[key] {
			p.off = at
			return nil, p.fail("duplicate metadata key")
		}
		keys[key] = true
		vt, err := p.u32("value type")
		if err != nil {
			return nil, err
		}
		v, err := p.value(ValueType(vt), 0)
		if err != nil {
			return nil, err
		}
		h.Metadata = append(h.Metadata, KV{Key: key, Type: ValueType(vt), Value: v})
	}
	if kv, ok := h.Metadata.Get("general.alignment"); ok {
		p.tensor = "general.alignment"
		a, isU32 := kv.Value.(uint32)
		if !isU32 || a == 0 || a&(a-1) != 0 {
			return nil, p.fail("general.alignment must be a power-of-two uint32, got %s %v", kv.Type, kv.Value)
		}
		h.Alignment = int64(a)
	}
	h.Tensors = make([]TensorInfo, 0, nTensors)
	names := make(map[string]bool, nTensors)
	for i := uint64(0); i < nTensors; i++ {
		t, err := p.tensorInfo()
		if err != nil {
			return nil, err
		}
		if names[t.Name] {
			return nil, p.fail("duplicate tensor name")
		}
		names[t.Name] = true
		h.Tensors = append(h.Tensors, t)
	}
	p.tensor = ""
	h.DataOffset = (int64(p.off) + h.Alignment - 1) / h.Alignment * h.Alignment
	if len(h.Tensors) > 0 && h.DataOffset > int64(len(b)) {
		return nil, p.fail("data section at %d starts past the end of the %d-byte file", h.DataOffset, len(b))
	}
	return h, checkData(name, h)
}

// tensorInfo reads one tensor info: name, n_dims, ne[n_dims], type, offset.
func (p *parser) tensorInfo() (TensorInfo, error) {
	var t TensorInfo
	var err error
	p.tensor = ""
	if t.Name, err = p.str("tensor name"); err != nil {
		return t, err
	}
	p.tensor = t.Name
	nd, err := p.u32("n_dims")
	if err != nil {
		return t, err
	}
	if nd > maxDims {
		return t, p.fail("%d dimensions, ggml allows at most %d", nd, maxDims)
	}
	t.Dims = make([]uint64, nd)
	n := uint64(1)
	for i := range t.Dims {
		if t.Dims[i], err = p.u64("dimension"); err != nil {
			return t, err
		}
		d := t.Dims[i]
		if d > math.MaxInt64 || (d != 0 && n > math.MaxInt64/d) {
			return t, p.fail("dims %v overflow", t.Dims[:i+1])
		}
		n *= d
	}
	typ, err := p.u32("type")
	if err != nil {
		return t, err
	}
	t.Type = Type(typ)
	if !t.Type.Known() {
		return t, p.unsupported("unknown tensor type %d", typ)
	}
	bs := uint64(t.Type.BlockSize())
	if nd == 0 && bs != 1 {
		return t, p.fail("a scalar cannot be of block type %s", t.Type)
	}
	if nd > 0 && t.Dims[0]%bs != 0 {
		return t, p.fail("row of %d elements is not a whole number of %s blocks of %d", t.Dims[0], t.Type, bs)
	}
	if n/bs > math.MaxInt64/uint64(t.Type.TypeSize()) {
		return t, p.fail("dims %v of %s overflow", t.Dims, t.Type)
	}
	t.Size = int64(n / bs * uint64(t.Type.TypeSize()))
	if t.Offset, err = p.u64("offset"); err != nil {
		return t, err
	}
	return t, nil
}

// checkData checks every tensor's data lies aligned inside the file with no overlap.
func checkData(name string, h *Header) error {
	fail := func(t TensorInfo, off int64, format string, args ...any) error {
		return &weights.FormatError{Format: "gguf", File: name, Tensor: t.Name, Offset: off, Msg: fmt.Sprintf(format, args...)}
	}
	dataLen := h.FileSize - h.DataOffset
	order := make([]int, len(h.Tensors))
	for i := range order {
		order[i] = i
	}
	for _, i := range order {
		t := h.Tensors[i]
		if t.Offset%uint64(h.Alignment) != 0 {
			return fail(t, -1, "data offset %d is not a multiple of the alignment %d", t.Offset, h.Alignment)
		}
		if t.Offset > uint64(dataLen) || uint64(t.Size) > uint64(dataLen)-t.Offset {
			return fail(t, h.DataOffset+int64(min(t.Offset, uint64(dataLen))), "data [%d, %d) runs past the %d-byte data section (file truncated?)", t.Offset, t.Offset+uint64(t.Size), dataLen)
		}
	}
	slices.SortFunc(order, func(a, b int) int {
		ta, tb := h.Tensors[a], h.Tensors[b]
		switch {
		case ta.Offset < tb.Offset:
			return -1
		case ta.Offset > tb.Offset:
			return 1
		}
		return int(ta.Size - tb.Size)
	})
	end := uint64(0)
	for k, i := range order {
		t := h.Tensors[i]
		if k > 0 && t.Size > 0 && t.Offset < end {
			return fail(t, h.DataOffset+int64(t.Offset), "data [%d, %d) overlaps the previous tensor, which ends at %d", t.Offset, t.Offset+uint64(t.Size), end)
		}
		end = max(end, t.Offset+uint64(t.Size))
	}
	return nil
}

// value reads one metadata value of type vt.
func (p *parser) value(vt ValueType, depth int) (any, error) {
	switch vt {
	case TypeString:
		return p.str("string value")
	case TypeArray:
		return p.array(depth)
	}
	size := vt.scalarSize()
	if size == 0 {
		return nil, p.fail("unknown value type %d", uint32(vt))
	}
	b, err := p.take(uint64(size), vt.String()+" value")
	if err != nil {
		return nil, err
	}
	v, err := scalar(vt, b)
	if err != nil {
		p.off -= size
		return nil, p.fail("%v", err)
	}
	return v, nil
}

func scalar(vt ValueType, b []byte) (any, error) {
	le := binary.LittleEndian
	switch vt {
	case TypeUint8:
		return b[0], nil
	case TypeInt8:
		return int8(b[0]), nil
	case TypeUint16:
		return le.Uint16(b), nil
	case TypeInt16:
		return int16(le.Uint16(b)), nil
	case TypeUint32:
		return le.Uint32(b), nil
	case TypeInt32:
		return int32(le.Uint32(b)), nil
	case TypeFloat32:
		return math.Float32frombits(le.Uint32(b)), nil
	case TypeBool:
		if b[0] > 1 {
			return nil, fmt.Errorf("bool value %d", b[0])
		}
		return b[0] == 1, nil
	case TypeUint64:
		return le.Uint64(b), nil
	case TypeInt64:
		return int64(le.Uint64(b)), nil
	case TypeFloat64:
		return math.Float64frombits(le.Uint64(b)), nil
	}
	return nil, fmt.Errorf("unknown value type %d", vt)
}

// array reads an array: element type, count, elements (arrays may nest).
func (p *parser) array(depth int) (any, error) {
	if depth >= maxNesting {
		return nil, p.fail("arrays nested deeper than %d", maxNesting)
	}
	et, err := p.u32("array element type")
	if err != nil {
		return nil, err
	}
	elem := ValueType(et)
	count, err := p.u64("array length")
	if err != nil {
		return nil, err
	}
	// The smallest encoding of an element bounds the count by the bytes left.
	minSize := uint64(elem.scalarSize())
	switch elem {
	case TypeString:
		minSize = 8
	case TypeArray:
		minSize = 12
	}
	if minSize == 0 {
		return nil, p.fail("unknown array element type %d", et)
	}
	if count > uint64(len(p.b)-p.off)/minSize {
		return nil, p.fail("array of %d %s cannot fit in the %d bytes left", count, elem, len(p.b)-p.off)
	}
	n := int(count)
	switch elem {
	case TypeString:
		out := make([]string, n)
		for i := range out {
			if out[i], err = p.str("string element"); err != nil {
				return nil, err
			}
		}
		return Array{elem, out}, nil
	case TypeArray:
		out := make([]Array, n)
		for i := range out {
			v, err := p.array(depth + 1)
			if err != nil {
				return nil, err
			}
			out[i] = v.(Array)
		}
		return Array{elem, out}, nil
	}
	raw, _ := p.take(count*minSize, "array")
	return decodeScalars(elem, raw, n, p)
}

func decodeScalars(elem ValueType, raw []byte, n int, p *parser) (any, error) {
	le := binary.LittleEndian
	switch elem {
	case TypeUint8:
		return Array{elem, slices.Clone(raw)}, nil
	case TypeInt8:
		out := make([]int8, n)
		for i := range out {
			out[i] = int8(raw[i])
		}
		return Array{elem, out}, nil
	case TypeBool:
		out := make([]bool, n)
		for i := range out {
			if raw[i] > 1 {
				return nil, p.fail("bool array element %d is %d", i, raw[i])
			}
			out[i] = raw[i] == 1
		}
		return Array{elem, out}, nil
	case TypeUint16:
		out := make([]uint16, n)
		for i := range out {
			out[i] = le.Uint16(raw[2*i:])
		}
		return Array{elem, out}, nil
	case TypeInt16:
		out := make([]int16, n)
		for i := range out {
			out[i] = int16(le.Uint16(raw[2*i:]))
		}
		return Array{elem, out}, nil
	case TypeUint32:
		out := make([]uint32, n)
		for i := range out {
			out[i] = le.Uint32(raw[4*i:])
		}
		return Array{elem, out}, nil
	case TypeInt32:
		out := make([]int32, n)
		for i := range out {
			out[i] = int32(le.Uint32(raw[4*i:]))
		}
		return Array{elem, out}, nil
	case TypeFloat32:
		out := make([]float32, n)
		for i := range out {
			out[i] = math.Float32frombits(le.Uint32(raw[4*i:]))
		}
		return Array{elem, out}, nil
	case TypeUint64:
		out := make([]uint64, n)
		for i := range out {
			out[i] = le.Uint64(raw[8*i:])
		}
		return Array{elem, out}, nil
	case TypeInt64:
		out := make([]int64, n)
		for i := range out {
			out[i] = int64(le.Uint64(raw[8*i:]))
		}
		return Array{elem, out}, nil
	case TypeFloat64:
		out := make([]float64, n)
		for i := range out {
			out[i] = math.Float64frombits(le.Uint64(raw[8*i:]))
		}
		return Array{elem, out}, nil
	}
	return nil, p.fail("unknown array element type %d", elem)
}

package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
)

// WriteTensor is one tensor to write: its bytes are whole blocks of Type, Dims in ggml's
// ne order (Dims[0] contiguous).
type WriteTensor struct {
	Name string
	Type Type
	Dims []uint64
	Data []byte
	// WriteData, used when Data is nil, writes the tensor's bytes (exactly what Dims and
	// Type need) while the file is written, so a large model need not sit in memory.
	WriteData func(w io.Writer) error
}

// Write writes a GGUF version 3 file with the metadata pairs and tensors, in order, to w.
// Tensor data is aligned to general.alignment when the metadata sets it (a uint32), or to
// DefaultAlignment. Each KV's Value must be the Go type of its Type (see KV).
func Write(w io.Writer, kvs []KV, tensors []WriteTensor) error {
	align := uint64(DefaultAlignment)
	for _, kv := range kvs {
		if kv.Key == "general.alignment" {
			a, ok := kv.Value.(uint32)
			if !ok || a == 0 || a&(a-1) != 0 {
				return fmt.Errorf("gguf: write: general.alignment must be a power-of-two uint32")
			}
			align = uint64(a)
		}
	}
	e := &encoder{}
	e.buf = append(e.buf, Magic...)
	e.u32(3)
	e.u64(uint64(len(tensors)))
	e.u64(uint64(len(kvs)))
	seen := map[string]bool{}
	for _, kv := range kvs {
		if seen[kv.Key] {
			return fmt.Errorf("gguf: write: duplicate metadata key %q", kv.Key)
		}
		seen[kv.Key] = true
		e.str(kv.Key)
		e.u32(uint32(kv.Type))
		if err := e.value(kv.Type, kv.Value); err != nil {
			return fmt.Errorf("gguf: write: metadata %q: %w", kv.Key, err)
		}
	}
	offsets := make([]uint64, len(tensors))
	sizes := make([]uint64, len(tensors))
	off := uint64(0)
	names := map[string]bool{}
	for i, t := range tensors {
		if names[t.Name] {
			return fmt.Errorf("gguf: write: duplicate tensor %q", t.Name)
		}
		names[t.Name] = true
		if len(t.Dims) == 0 || len(t.Dims) > maxDims {
			return fmt.Errorf("gguf: write: tensor %q: %d dims, want 1 to %d", t.Name, len(t.Dims), maxDims)
		}
		rows := uint64(1)
		for _, d := range t.Dims[1:] {
			rows *= d
		}
		rs, err := t.Type.RowSize(int64(t.Dims[0]))
		if err != nil {
			return fmt.Errorf("gguf: write: tensor %q: %w", t.Name, err)
		}
		want := uint64(rs) * rows
		if t.Data == nil && t.WriteData != nil {
			sizes[i] = want
		} else if sizes[i] = uint64(len(t.Data)); sizes[i] != want {
			return fmt.Errorf("gguf: write: tensor %q: dims %v of %s need %d bytes, got %d", t.Name, t.Dims, t.Type, want, len(t.Data))
		}
		e.str(t.Name)
		e.u32(uint32(len(t.Dims)))
		for _, d := range t.Dims {
			e.u64(d)
		}
		e.u32(uint32(t.Type))
		e.u64(off)
		offsets[i] = off
		off = pad(off+sizes[i], align)
	}
	e.buf = append(e.buf, make([]byte, pad(uint64(len(e.buf)), align)-uint64(len(e.buf)))...)
	bw := bufio.NewWriterSize(w, 1<<20)
	bw.Write(e.buf)
	pos := uint64(0)
	for i, t := range tensors {
		bw.Write(make([]byte, offsets[i]-pos))
		if t.Data == nil && t.WriteData != nil {
			cw := &countingWriter{w: bw}
			if err := t.WriteData(cw); err != nil {
				return fmt.Errorf("gguf: write: tensor %q: %w", t.Name, err)
			}
			if cw.n != sizes[i] {
				return fmt.Errorf("gguf: write: tensor %q: wrote %d bytes, its dims need %d", t.Name, cw.n, sizes[i])
			}
		} else {
			bw.Write(t.Data)
		}
		pos = offsets[i] + sizes[i]
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("gguf: write: %w", err)
	}
	return nil
}

// countingWriter counts the bytes a WriteData callback writes.
type countingWriter struct {
	w io.Writer
	n uint64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += uint64(n)
	return n, err
}

func pad(n, align uint64) uint64 { return (n + align - 1) / align * align }

type encoder struct{ buf []byte }

func (e *encoder) u32(v uint32) { e.buf = binary.LittleEndian.AppendUint32(e.buf, v) }
func (e *encoder) u64(v uint64) { e.buf = binary.LittleEndian.AppendUint64(e.buf, v) }
func (e *encoder) str(s string) { e.u64(uint64(len(s))); e.buf = append(e.buf, s...) }

func (e *encoder) value(t ValueType, v any) error {
	le := binary.LittleEndian
	bad := func() error { return fmt.Errorf("value %T does not match type %s", v, t) }
	switch t {
	case TypeUint8:
		x, ok := v.(uint8)
		if !ok {
			return bad()
		}
		e.buf = append(e.buf, x)
	case TypeInt8:
		x, ok := v.(int8)
		if !ok {
			return bad()
		}
		e.buf = append(e.buf, byte(x))
	case TypeUint16:
		x, ok := v.(uint16)
		if !ok {
			return bad()
		}
		e.buf = le.AppendUint16(e.buf, x)
	case TypeInt16:
		x, ok := v.(int16)
		if !ok {
			return bad()
		}
		e.buf = le.AppendUint16(e.buf, uint16(x))
	case TypeUint32:
		x, ok := v.(uint32)
		if !ok {
			return bad()
		}
		e.u32(x)
	case TypeInt32:
		x, ok := v.(int32)
		if !ok {
			return bad()
		}
		e.u32(uint32(x))
	case TypeFloat32:
		x, ok := v.(float32)
		if !ok {
			return bad()
		}
		e.u32(math.Float32bits(x))
	case TypeBool:
		x, ok := v.(bool)
		if !ok {
			return bad()
		}
		if x {
			e.buf = append(e.buf, 1)
		} else {
			e.buf = append(e.buf, 0)
		}
	case TypeString:
		x, ok := v.(string)
		if !ok {
			return bad()
		}
		e.str(x)
	case TypeUint64:
		x, ok := v.(uint64)
		if !ok {
			return bad()
		}
		e.u64(x)
	case TypeInt64:
		x, ok := v.(int64)
		if !ok {
			return bad()
		}
		e.u64(uint64(x))
	case TypeFloat64:
		x, ok := v.(float64)
		if !ok {
			return bad()
		}
		e.u64(math.Float64bits(x))
	case TypeArray:
		a, ok := v.(Array)
		if !ok {
			return bad()
		}
		return e.array(a)
	default:
		return fmt.Errorf("unknown value type %d", uint32(t))
	}
	return nil
}

func (e *encoder) array(a Array) error {
	e.u32(uint32(a.Elem))
	e.u64(uint64(a.Len()))
	each := func(n int, at func(i int) any) error {
		for i := 0; i < n; i++ {
			if err := e.value(a.Elem, at(i)); err != nil {
				return err
			}
		}
		return nil
	}
	switch v := a.Values.(type) {
	case []uint8:
		return each(len(v), func(i int) any { return v[i] })
	case []int8:
		return each(len(v), func(i int) any { return v[i] })
	case []uint16:
		return each(len(v), func(i int) any { return v[i] })
	case []int16:
		return each(len(v), func(i int) any { return v[i] })
	case []uint32:
		return each(len(v), func(i int) any { return v[i] })
	case []int32:
		return each(len(v), func(i int) any { return v[i] })
	case []float32:
		return each(len(v), func(i int) any { return v[i] })
	case []bool:
		return each(len(v), func(i int) any { return v[i] })
	case []string:
		return each(len(v), func(i int) any { return v[i] })
	case []uint64:
		return each(len(v), func(i int) any { return v[i] })
	case []int64:
		return each(len(v), func(i int) any { return v[i] })
	case []float64:
		return each(len(v), func(i int) any { return v[i] })
	case []Array:
		return each(len(v), func(i int) any { return v[i] })
	}
	return fmt.Errorf("array values of type %T", a.Values)
}

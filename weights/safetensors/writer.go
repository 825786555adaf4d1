package safetensors

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/forgeflow/forgeflow/weights"
)

// Entry is one tensor to write. Exactly one of Data and WriteData supplies the bytes
// (little-endian, product(Shape) × dtype size of them); WriteData lets a caller stream a
// tensor (for instance converting it on the fly) without holding it in memory.
type Entry struct {
	Name      string
	DType     weights.DType
	Shape     []int64
	Data      []byte
	WriteData func(w io.Writer) error
}

// Write writes a safetensors file holding tensors, in the given order, and metadata (may
// be nil) to w. The header is padded with spaces to a multiple of 8 bytes, so every tensor
// of a file written with 8-byte-aligned sizes starts aligned, as the reference writer does.
func Write(w io.Writer, tensors []Entry, metadata map[string]string) error {
	sizes := make([]int64, len(tensors))
	seen := map[string]bool{}
	for i, e := range tensors {
		if e.Name == "" || e.Name == metadataKey {
			return fmt.Errorf("safetensors: write: tensor %d: invalid name %q", i, e.Name)
		}
		if seen[e.Name] {
			return fmt.Errorf("safetensors: write: duplicate tensor %q", e.Name)
		}
		seen[e.Name] = true
		es := int64(e.DType.ElemSize())
		if es == 0 {
			return fmt.Errorf("safetensors: write: tensor %q: unknown dtype %q", e.Name, e.DType)
		}
		n, ok := weights.ShapeElements(e.Shape, (1<<62)/es)
		if !ok {
			return fmt.Errorf("safetensors: write: tensor %q: bad shape %v", e.Name, e.Shape)
		}
		sizes[i] = n * es
		if (e.Data == nil) == (e.WriteData == nil) && sizes[i] != 0 {
			return fmt.Errorf("safetensors: write: tensor %q: set exactly one of Data and WriteData", e.Name)
		}
		if e.WriteData == nil && int64(len(e.Data)) != sizes[i] {
			return fmt.Errorf("safetensors: write: tensor %q: shape %v of %s needs %d bytes, got %d", e.Name, e.Shape, e.DType, sizes[i], len(e.Data))
		}
	}
	hdr, err := encodeHeader(tensors, sizes, metadata)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(hdr)))
	bw.Write(lenBuf[:])
	bw.Write(hdr)
	for i, e := range tensors {
		if e.WriteData == nil {
			if _, err := bw.Write(e.Data); err != nil {
				return fmt.Errorf("safetensors: write: tensor %q: %w", e.Name, err)
			}
			continue
		}
		cw := &countWriter{w: bw}
		if err := e.WriteData(cw); err != nil {
			return fmt.Errorf("safetensors: write: tensor %q: %w", e.Name, err)
		}
		if cw.n != sizes[i] {
			return fmt.Errorf("safetensors: write: tensor %q: WriteData wrote %d bytes, want %d", e.Name, cw.n, sizes[i])
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("safetensors: write: %w", err)
	}
	return nil
}

func encodeHeader(tensors []Entry, sizes []int64, metadata map[string]string) ([]byte, error) {
	buf := []byte{'{'}
	first := true
	comma := func() {
		if !first {
			buf = append(buf, ',')
		}
		first = false
	}
	if metadata != nil {
		comma()
		m, err := json.Marshal(metadata) // sorted keys: deterministic output
		if err != nil {
			return nil, fmt.Errorf("safetensors: write: metadata: %w", err)
		}
		buf = append(buf, `"__metadata__":`...)
		buf = append(buf, m...)
	}
	off := int64(0)
	for i, e := range tensors {
		comma()
		name, _ := json.Marshal(e.Name)
		shape := e.Shape
		if shape == nil {
			shape = []int64{}
		}
		sh, _ := json.Marshal(shape)
		buf = append(buf, name...)
		buf = fmt.Appendf(buf, `:{"dtype":%q,"shape":%s,"data_offsets":[%d,%d]}`, string(e.DType), sh, off, off+sizes[i])
		off += sizes[i]
	}
	buf = append(buf, '}')
	for len(buf)%8 != 0 {
		buf = append(buf, ' ')
	}
	if len(buf) > MaxHeaderSize {
		return nil, fmt.Errorf("safetensors: write: header of %d bytes exceeds %d", len(buf), MaxHeaderSize)
	}
	return buf, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// SortEntries orders entries by element size, largest first, then by name, as the
// reference writer orders its data (safetensors' prepare: Reverse(dtype), then name). With
// the 8-byte-padded header this keeps every tensor aligned to its element size, so readers
// can view stored data in place (weights.AsFloat32).
func SortEntries(es []Entry) {
	slices.SortStableFunc(es, func(a, b Entry) int {
		if sa, sb := a.DType.ElemSize(), b.DType.ElemSize(); sa != sb {
			return sb - sa
		}
		return strings.Compare(a.Name, b.Name)
	})
}

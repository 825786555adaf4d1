package gpu

import (
	"fmt"
	"slices"
	"sync/atomic"
	"unsafe"
)

// Buffer is one allocation of a backend. Tensors and their views share a Buffer; it goes
// back to the Runtime's pool when the last of them is released.
type Buffer struct {
	// Host is the storage when the backend's memory is host memory (cpu), else nil.
	Host []byte
	// Handle is the backend's own reference (a device pointer for cuda); nil for cpu.
	Handle any

	size    int
	backend Backend
	pool    *pool // nil: not pooled (wrapped caller memory)
	refs    atomic.Int32
	packs   atomic.Pointer[packSet] // weight panels of an unpooled buffer (pack.go)
}

// Size is the buffer's size in bytes.
func (b *Buffer) Size() int { return b.size }

// Tensor is an n-dimensional array: a dtype, a shape, element strides into a shared
// Buffer, and an element offset. Views (Reshape of a contiguous tensor, Permute,
// Narrow, Chunk) share the buffer; ops write fresh tensors. Quantized dtypes are kept
// as contiguous rows of blocks and only support whole-row views.
//
// A Tensor is not safe for concurrent mutation; concurrent reads are fine.
//
// Headers are recycled: Release hands t's header to its Runtime's free list (headers.go),
// and a later op may return the same *Tensor for a new tensor. While it waits there it
// is poisoned (no buffer, no shape), so using a released tensor fails loudly.
type Tensor struct {
	dtype   DType
	shape   []int
	strides []int
	offset  int
	buf     *Buffer
	rt      *Runtime
	// deq is the arithmetic a GGUF block weight is decoded in (WithDequantDType): F32,
	// the zero value, or F16 / BF16.
	deq DType
	// dims and steps hold shape and strides up to inlineRank dims, so that a header
	// and its layout are one object; larger ranks use heap slices.
	dims, steps [inlineRank]int
}

// DType returns the element type.
func (t *Tensor) DType() DType { return t.dtype }

// Shape returns a copy of the shape.
func (t *Tensor) Shape() []int { return slices.Clone(t.shape) }

// Dim returns size of dimension i (negative counts from the end).
func (t *Tensor) Dim(i int) int {
	if i < 0 {
		i += len(t.shape)
	}
	return t.shape[i]
}

// Rank is the number of dimensions.
func (t *Tensor) Rank() int { return len(t.shape) }

// Strides returns a copy of the element strides.
func (t *Tensor) Strides() []int { return slices.Clone(t.strides) }

// Numel is the number of elements.
func (t *Tensor) Numel() int { return numel(t.shape) }

// Buffer returns the underlying storage (shared with views).
func (t *Tensor) Buffer() *Buffer { return t.buf }

// Offset is the element offset of t's first element in its buffer.
func (t *Tensor) Offset() int { return t.offset }

// Runtime returns the runtime that owns t.
func (t *Tensor) Runtime() *Runtime { return t.rt }

// String describes the tensor, e.g. "F32[2 4 64 64]".
func (t *Tensor) String() string {
	if t == nil {
		return "<nil tensor>"
	}
	s := fmt.Sprintf("%s%v", t.dtype, t.shape)
	if !t.IsContiguous() {
		s += fmt.Sprintf(" strides %v", t.strides)
	}
	return s
}

// IsContiguous reports whether t is laid out row-major without gaps.
func (t *Tensor) IsContiguous() bool {
	want := 1
	for i := len(t.shape) - 1; i >= 0; i-- {
		if t.shape[i] != 1 && t.strides[i] != want {
			return false
		}
		want *= t.shape[i]
	}
	return true
}

// Release returns t's buffer to the runtime's pool once no other view holds it, and t's
// header to the runtime's free list. Using t afterwards is a programming error: until
// the header is reused it fails loudly (no buffer, no shape), and a second Release is
// a no-op; once an op has reused it, t is another tensor. Release of nil is a no-op.
func (t *Tensor) Release() {
	if t == nil || t.buf == nil {
		return
	}
	b := t.buf
	t.buf = nil
	if b.refs.Add(-1) == 0 && b.pool != nil {
		b.pool.put(b)
	}
	if t.rt != nil {
		t.rt.headers.put(t)
	}
}

func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// contiguousStrides writes the row-major strides of shape into st (of the same length).
func contiguousStrides(st, shape []int) {
	s := 1
	for i := len(shape) - 1; i >= 0; i-- {
		st[i] = s
		s *= shape[i]
	}
}

// checkShape validates a shape. Its errors format a copy of shape, so that shape does
// not escape and the callers' variadic shapes stay on their stacks.
func checkShape(shape []int) error {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return fmt.Errorf("gpu: negative dimension in shape %v", slices.Clone(shape))
		}
		n *= int64(d)
		if n > 1<<40 {
			return fmt.Errorf("gpu: shape %v is too large", slices.Clone(shape))
		}
	}
	return nil
}

// view returns a tensor sharing t's buffer (a new reference) with a copy of the layout
// shape, strides, offset.
func (t *Tensor) view(shape, strides []int, offset int) *Tensor {
	v := t.viewHeader(len(shape), offset)
	copy(v.shape, shape)
	copy(v.strides, strides)
	return v
}

// viewHeader returns a header sharing t's buffer (a new reference) with rank dims at
// offset, whose shape and strides the caller fills in.
func (t *Tensor) viewHeader(rank, offset int) *Tensor {
	t.buf.refs.Add(1)
	v := t.rt.headers.get(rank)
	v.dtype, v.offset, v.buf, v.rt, v.deq = t.dtype, offset, t.buf, t.rt, t.deq
	return v
}

// f32 returns the host float32 elements of a cpu F32 tensor, starting at its offset.
// The slice spans the buffer to its end; callers index it with the strides.
func (t *Tensor) f32() []float32 {
	h := t.buf.Host
	if len(h) < 4 {
		return nil
	}
	all := unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(h))), len(h)/4)
	return all[t.offset:]
}

// f32c returns exactly the Numel host elements of a contiguous cpu F32 tensor.
func (t *Tensor) f32c() []float32 {
	n := t.Numel()
	if n == 0 {
		return nil
	}
	return t.f32()[:n]
}

// bytes returns the host storage of a contiguous tensor of any dtype.
func (t *Tensor) bytes() []byte {
	n, _ := t.dtype.StorageBytes(t.Numel())
	off, _ := t.dtype.StorageBytes(t.offset - t.offset%t.dtype.BlockSize())
	return t.buf.Host[off : off+n]
}

package gguf

import (
	"fmt"
	"math"
	"runtime"
	"sync"

	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/internal/mmap"
)

// File is an open GGUF file. The byte slices it returns are valid until Close.
type File struct {
	name   string
	region *mmap.Region
	header *Header
	index  map[string]int
	shapes map[string][]int64 // OrigShapeKey overrides, validated
}

// OrigShapeKey prefixes the metadata key (OrigShapeKey + tensor name, an array of int32)
// in which ComfyUI-GGUF's converter records the PyTorch shape of a tensor it reshaped
// before quantizing (tools/convert.py; read by get_orig_shape in loader.py).
const OrigShapeKey = "comfy.gguf.orig_shape."

// Open maps the named file and validates its header and tensor table.
func Open(path string) (*File, error) {
	r, err := mmap.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	f, err := newFile(path, r)
	if err != nil {
		r.Close()
		return nil, err
	}
	return f, nil
}

// OpenBytes reads a GGUF image held in memory; tensor data aliases b.
func OpenBytes(name string, b []byte) (*File, error) { return newFile(name, &mmap.Region{Data: b}) }

// ReadHeader returns the validated header of the named file. The file is mapped, so only
// the pages holding the header are read from disk.
func ReadHeader(path string) (*Header, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.header, nil
}

func newFile(name string, r *mmap.Region) (*File, error) {
	h, err := Parse(name, r.Data)
	if err != nil {
		return nil, err
	}
	f := &File{name: name, region: r, header: h, index: make(map[string]int, len(h.Tensors)), shapes: map[string][]int64{}}
	for i, t := range h.Tensors {
		f.index[t.Name] = i
		kv, ok := h.Metadata.Get(OrigShapeKey + t.Name)
		if !ok {
			continue
		}
		// ComfyUI-GGUF refuses anything but an array of int32 here; so do we, and the
		// element count must match the stored tensor's.
		a, isArr := kv.Value.(Array)
		dims, isI32 := a.Values.([]int32)
		if !isArr || !isI32 {
			return nil, &weights.FormatError{Format: "gguf", File: name, Tensor: t.Name, Offset: -1, Msg: fmt.Sprintf("%s%s must be an array of int32", OrigShapeKey, t.Name)}
		}
		shape := make([]int64, len(dims))
		for j, d := range dims {
			shape[j] = int64(d)
		}
		if n, ok := weights.ShapeElements(shape, math.MaxInt64); !ok || n != t.NumElements() {
			return nil, &weights.FormatError{Format: "gguf", File: name, Tensor: t.Name, Offset: -1, Msg: fmt.Sprintf("original shape %v does not hold the %d stored elements", shape, t.NumElements())}
		}
		f.shapes[t.Name] = shape
	}
	return f, nil
}

// TorchShape returns the tensor's PyTorch shape as ComfyUI-GGUF loads it: the recorded
// original shape (OrigShapeKey) when present, else the dims reversed.
func (f *File) TorchShape(t TensorInfo) []int64 {
	if s, ok := f.shapes[t.Name]; ok {
		return append([]int64(nil), s...)
	}
	return t.Shape()
}

// Name returns the path the file was opened with.
func (f *File) Name() string { return f.name }

// Header returns the validated header. It must not be modified.
func (f *File) Header() *Header { return f.header }

// Metadata returns the key/value pairs in file order.
func (f *File) Metadata() Metadata { return f.header.Metadata }

// Tensors lists every tensor in header order as weights.TensorInfo: the PyTorch shape
// (TorchShape), the ggml type name as DType, absolute offset and byte size.
func (f *File) Tensors() []weights.TensorInfo {
	out := make([]weights.TensorInfo, len(f.header.Tensors))
	for i, t := range f.header.Tensors {
		out[i] = f.weightsInfo(t)
	}
	return out
}

func (f *File) weightsInfo(t TensorInfo) weights.TensorInfo {
	return weights.TensorInfo{Name: t.Name, DType: t.Type.DType(), Shape: f.TorchShape(t), Offset: f.header.DataOffset + int64(t.Offset), Size: t.Size}
}

// Info returns the GGUF tensor info of the named tensor.
func (f *File) Info(name string) (TensorInfo, bool) {
	i, ok := f.index[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.header.Tensors[i], true
}

// Mapped reports whether the data is memory-mapped rather than read into memory.
func (f *File) Mapped() bool { return f.region.Mapped() }

// Tensor returns the named tensor with its stored bytes (no copy), valid until Close.
func (f *File) Tensor(name string) (Tensor, error) {
	i, ok := f.index[name]
	if !ok {
		return Tensor{}, fmt.Errorf("gguf: %s: no tensor %q", f.name, name)
	}
	if f.region.Data == nil {
		return Tensor{}, fmt.Errorf("gguf: %s: file is closed", f.name)
	}
	t := f.header.Tensors[i]
	off := f.header.DataOffset + int64(t.Offset)
	return Tensor{TensorInfo: t, File: f.name, AbsOffset: off, Data: f.region.Data[off : off+t.Size : off+t.Size]}, nil
}

// Close releases the mapping; tensors returned earlier become invalid.
func (f *File) Close() error { return f.region.Close() }

// Tensor is one tensor's info and its stored bytes: whole blocks of Type, row after row.
type Tensor struct {
	TensorInfo
	File      string // for errors
	AbsOffset int64  // absolute offset of Data in the file
	Data      []byte
}

// RowSize returns the bytes of one row (Dims[0] elements).
func (t Tensor) RowSize() int64 {
	if len(t.Dims) == 0 {
		return t.Size
	}
	n, _ := t.Type.RowSize(int64(t.Dims[0]))
	return n
}

// Rows returns the number of rows (the product of Dims[1:]).
func (t Tensor) Rows() int64 {
	n := int64(1)
	for _, d := range t.Dims[min(1, len(t.Dims)):] {
		n *= int64(d)
	}
	return n
}

// Row returns the raw blocks of row i, for kernels that work on quantized rows.
func (t Tensor) Row(i int64) ([]byte, error) {
	if i < 0 || i >= t.Rows() {
		return nil, fmt.Errorf("gguf: %s: tensor %q: row %d out of range [0, %d)", t.File, t.Name, i, t.Rows())
	}
	rs := t.RowSize()
	return t.Data[i*rs : (i+1)*rs : (i+1)*rs], nil
}

// Float32 dequantizes the whole tensor into a new slice (ne order: row after row).
// Large tensors are split across GOMAXPROCS goroutines by whole blocks.
func (t Tensor) Float32() ([]float32, error) {
	out := make([]float32, t.NumElements())
	if err := DequantizeParallel(out, t.Type, t.Data, runtime.GOMAXPROCS(0)); err != nil {
		if ue, ok := err.(*weights.UnsupportedError); ok {
			ue.File, ue.Tensor, ue.Offset = t.File, t.Name, t.AbsOffset
			return nil, ue
		}
		return nil, fmt.Errorf("gguf: %s: tensor %q: %w", t.File, t.Name, err)
	}
	return out, nil
}

// parallelMin is the number of values below which DequantizeParallel stays on one
// goroutine: smaller tensors finish before a goroutine is worth starting.
const parallelMin = 1 << 18

// DequantizeParallel is Dequantize split over up to workers goroutines, each taking a
// contiguous run of whole blocks. The result is identical to Dequantize's.
func DequantizeParallel(dst []float32, t Type, src []byte, workers int) error {
	bs, ts := t.BlockSize(), t.TypeSize()
	if workers < 2 || len(dst) < parallelMin || bs == 0 || len(src)%ts != 0 || len(dst) != len(src)/ts*bs || !t.CanDequantize() {
		return Dequantize(dst, t, src) // also reports every size or type error
	}
	blocks := len(src) / ts
	per := (blocks + workers - 1) / workers
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := 0; w < workers; w++ {
		lo, hi := w*per, min((w+1)*per, blocks)
		if lo >= hi {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[w] = Dequantize(dst[lo*bs:hi*bs], t, src[lo*ts:hi*ts])
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

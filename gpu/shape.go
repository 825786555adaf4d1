package gpu

import (
	"errors"
	"fmt"
	"slices"
	"unsafe"
)

// View operations. They share the input's buffer (no copy) and need no backend; the
// result must be released like any tensor.

// live refuses a released tensor (whose header is poisoned until it is reused).
func live(t *Tensor) error {
	if t.buf == nil {
		return errors.New("gpu: view of a released tensor")
	}
	return nil
}

// normDim resolves a possibly negative dim against rank.
func normDim(d, rank int) (int, error) {
	if d < 0 {
		d += rank
	}
	if d < 0 || d >= rank {
		return 0, fmt.Errorf("gpu: dim %d out of range for rank %d", d, rank)
	}
	return d, nil
}

// Reshape returns t with a new shape of the same element count; one dimension may be -1.
// A contiguous tensor is reshaped as a view; a strided one is copied first.
// (Errors format copies of shape and perm below: a slice handed to fmt escapes, and the
// callers' variadic arguments would then be heap-allocated on every call.)
func Reshape(rt *Runtime, t *Tensor, shape ...int) (*Tensor, error) {
	if err := live(t); err != nil {
		return nil, err
	}
	infer := -1
	known := 1
	for i, d := range shape {
		switch {
		case d == -1 && infer < 0:
			infer = i
		case d < 0:
			return nil, fmt.Errorf("gpu: reshape %v to %v: bad dimension", t.shape, slices.Clone(shape))
		default:
			known *= d
		}
	}
	n := t.Numel()
	inferred := 0
	if infer >= 0 {
		if known == 0 || n%known != 0 {
			return nil, fmt.Errorf("gpu: reshape %v to %v: cannot infer -1", t.shape, slices.Clone(shape))
		}
		inferred = n / known
	} else if known != n {
		return nil, fmt.Errorf("gpu: reshape %v (%d elements) to %v", t.shape, n, slices.Clone(shape))
	}
	if r := len(shape); t.dtype.IsQuantized() && r > 0 {
		last := shape[r-1]
		if infer == r-1 {
			last = inferred
		}
		if last%t.dtype.BlockSize() != 0 {
			return nil, fmt.Errorf("gpu: reshape %s%v to %v splits a block", t.dtype, t.shape, slices.Clone(shape))
		}
	}
	src := t
	if !t.IsContiguous() {
		c, err := Contiguous(rt, t)
		if err != nil {
			return nil, err
		}
		defer c.Release()
		src = c
	}
	v := src.viewHeader(len(shape), src.offset)
	copy(v.shape, shape)
	if infer >= 0 {
		v.shape[infer] = inferred
	}
	contiguousStrides(v.strides, v.shape)
	return v, nil
}

// Permute returns a view with dimensions reordered: result dim i is t's dim perm[i].
func Permute(t *Tensor, perm ...int) (*Tensor, error) {
	if err := live(t); err != nil {
		return nil, err
	}
	if len(perm) != len(t.shape) {
		return nil, fmt.Errorf("gpu: permute %v needs %d dims, got %v", t.shape, len(t.shape), slices.Clone(perm))
	}
	if t.dtype.IsQuantized() {
		return nil, fmt.Errorf("gpu: permute of %s blocks", t.dtype)
	}
	for i, p := range perm {
		d, err := normDim(p, len(perm))
		repeated := false
		for _, q := range perm[:i] {
			if e, _ := normDim(q, len(perm)); err == nil && e == d {
				repeated = true
			}
		}
		if err != nil || repeated {
			return nil, fmt.Errorf("gpu: permute %v: %v is not a permutation", t.shape, slices.Clone(perm))
		}
	}
	v := t.viewHeader(len(perm), t.offset)
	for i, p := range perm {
		d, _ := normDim(p, len(perm))
		v.shape[i], v.strides[i] = t.shape[d], t.strides[d]
	}
	return v, nil
}

// Transpose swaps two dims (a view).
func Transpose(t *Tensor, a, b int) (*Tensor, error) {
	var pb [inlineRank]int
	perm := pb[:0]
	if len(t.shape) > inlineRank {
		perm = make([]int, 0, len(t.shape))
	}
	perm = perm[:len(t.shape)]
	for i := range perm {
		perm[i] = i
	}
	a, err := normDim(a, len(perm))
	if err != nil {
		return nil, err
	}
	b, err = normDim(b, len(perm))
	if err != nil {
		return nil, err
	}
	perm[a], perm[b] = perm[b], perm[a]
	return Permute(t, perm...)
}

// Narrow returns the view t[..., start:start+length, ...] along dim.
func Narrow(t *Tensor, dim, start, length int) (*Tensor, error) {
	if err := live(t); err != nil {
		return nil, err
	}
	d, err := normDim(dim, len(t.shape))
	if err != nil {
		return nil, err
	}
	if start < 0 || length < 0 || start+length > t.shape[d] {
		return nil, fmt.Errorf("gpu: narrow dim %d of %v to [%d, %d)", d, t.shape, start, start+length)
	}
	if t.dtype.IsQuantized() && d == len(t.shape)-1 {
		return nil, fmt.Errorf("gpu: narrow of %s blocks along the row", t.dtype)
	}
	v := t.view(t.shape, t.strides, t.offset+start*t.strides[d])
	v.shape[d] = length
	return v, nil
}

// Split cuts t along dim into pieces of the given sizes (views), as torch.split with a
// list of sizes.
func Split(t *Tensor, dim int, sizes ...int) ([]*Tensor, error) {
	return SplitInto(nil, t, dim, sizes...)
}

// SplitInto is Split appending the pieces to dst, which may be an array on the caller's
// stack (var parts [2]*Tensor; SplitInto(parts[:0], …)): a steady-state loop then
// allocates nothing for the result.
func SplitInto(dst []*Tensor, t *Tensor, dim int, sizes ...int) ([]*Tensor, error) {
	d, err := normDim(dim, len(t.shape))
	if err != nil {
		return nil, err
	}
	total := 0
	for _, s := range sizes {
		if s < 0 {
			return nil, fmt.Errorf("gpu: split %v: negative size in %v", t.shape, slices.Clone(sizes))
		}
		total += s
	}
	if total != t.shape[d] {
		return nil, fmt.Errorf("gpu: split dim %d of %v into %v: sizes sum to %d", d, t.shape, slices.Clone(sizes), total)
	}
	out := slices.Grow(dst, len(sizes))
	at := 0
	for _, s := range sizes {
		v, err := Narrow(t, d, at, s)
		if err != nil {
			for _, o := range out[len(dst):] {
				o.Release()
			}
			return nil, err
		}
		out = append(out, v)
		at += s
	}
	return out, nil
}

// Chunk splits t along dim into n pieces as torch.chunk does: each of ceil(size/n),
// the last one smaller, and fewer than n pieces when the size runs out.
func Chunk(t *Tensor, n, dim int) ([]*Tensor, error) { return ChunkInto(nil, t, n, dim) }

// ChunkInto is Chunk appending the pieces to dst, as SplitInto.
func ChunkInto(dst []*Tensor, t *Tensor, n, dim int) ([]*Tensor, error) {
	d, err := normDim(dim, len(t.shape))
	if err != nil {
		return nil, err
	}
	if n <= 0 {
		return nil, fmt.Errorf("gpu: chunk into %d pieces", n)
	}
	size := t.shape[d]
	step := (size + n - 1) / n
	var sb [4]int
	sizes := sb[:0]
	if step == 0 {
		sizes = append(sizes, 0)
	}
	for at := 0; at < size; at += step {
		sizes = append(sizes, min(step, size-at))
	}
	return SplitInto(dst, t, d, sizes...)
}

// Contiguous returns t itself (with a new reference) when it is contiguous, else a
// row-major copy (OpCopy).
func Contiguous(rt *Runtime, t *Tensor) (*Tensor, error) {
	if err := live(t); err != nil {
		return nil, err
	}
	if t.IsContiguous() {
		return t.view(t.shape, t.strides, t.offset), nil
	}
	out, err := rt.Empty(t.dtype, t.shape...)
	if err != nil {
		return nil, err
	}
	if err := rt.exec(OpCopy, rt.call(out, t)); err != nil {
		out.Release()
		return nil, err
	}
	return out, nil
}

// Cast converts a plain float tensor to dtype d (rounding to nearest even; see convert.go).
func Cast(rt *Runtime, t *Tensor, d DType) (*Tensor, error) {
	if !t.dtype.IsFloat() || !d.IsFloat() {
		return nil, fmt.Errorf("gpu: cast %s to %s: only plain float dtypes convert", t.dtype, d)
	}
	src, err := Contiguous(rt, t)
	if err != nil {
		return nil, err
	}
	defer src.Release()
	out, err := rt.Empty(d, t.shape...)
	if err != nil {
		return nil, err
	}
	if err := rt.exec(OpCast, rt.call(out, src)); err != nil {
		out.Release()
		return nil, err
	}
	return out, nil
}

// Concat joins tensors of equal dtype and equal shape except along dim.
func Concat(rt *Runtime, dim int, ts ...*Tensor) (*Tensor, error) {
	if len(ts) == 0 {
		return nil, fmt.Errorf("gpu: concat of no tensors")
	}
	d, err := normDim(dim, len(ts[0].shape))
	if err != nil {
		return nil, err
	}
	var sb [inlineRank]int
	shape := append(sb[:0], ts[0].shape...)
	shape[d] = 0
	for _, t := range ts {
		if t.dtype != F32 || len(t.shape) != len(shape) {
			return nil, fmt.Errorf("gpu: concat %s with %s", ts[0], t)
		}
		for i := range shape {
			if i != d && t.shape[i] != shape[i] {
				return nil, fmt.Errorf("gpu: concat along %d: shapes %v and %v differ", d, ts[0].shape, t.shape)
			}
		}
		shape[d] += t.shape[d]
	}
	out, err := rt.Empty(F32, shape...)
	if err != nil {
		return nil, err
	}
	c := rt.call(out, ts...)
	c.params.concat = ConcatParams{Dim: d}
	c.Params = &c.params.concat
	if err := rt.exec(OpConcat, c); err != nil {
		out.Release()
		return nil, err
	}
	return out, nil
}

// cpuCopy copies a strided tensor of any dtype into the contiguous output. Quantized
// tensors only reach here as whole-row views, copied row by row.
func cpuCopy(c *CPU, call *Call) error {
	in, out := call.In[0], call.Out
	if in.dtype.IsQuantized() {
		return fmt.Errorf("gpu: cpu: copy of strided %s blocks", in.dtype)
	}
	es := in.dtype.BlockBytes()
	src, dst := in.buf.Host, out.bytes()
	rank := len(in.shape)
	if rank == 0 || in.Numel() == 0 {
		copy(dst, src[in.offset*es:in.offset*es+es*in.Numel()])
		return nil
	}
	inner := in.shape[rank-1]
	is := in.strides[rank-1]
	rows := in.Numel() / inner
	if es == 4 && rank >= 2 && is != 1 && in.strides[rank-2] == 1 && is >= in.shape[rank-2] && inner > 1 {
		return c.copyTransposed(in, out)
	}
	l := copyLoop{src: src, dst: dst, es: es, inner: inner, is: is, off: in.offset, shape: in.shape[:rank-1], strides: in.strides[:rank-1]}
	return forEach(c, rows, max(1, 4096/max(inner, 1)), l, func(l *copyLoop, _, lo, hi int) error {
		es, inner, is := l.es, l.inner, l.is
		for r := lo; r < hi; r++ {
			off := l.off + rowOffset(r, l.shape, l.strides)
			d := l.dst[r*inner*es : (r+1)*inner*es]
			if is == 1 {
				copy(d, l.src[off*es:(off+inner)*es])
				continue
			}
			for j := 0; j < inner; j++ {
				copy(d[j*es:(j+1)*es], l.src[(off+j*is)*es:(off+j*is+1)*es])
			}
		}
		return nil
	})
}

// copyLoop is cpuCopy's loop over rows of inner elements of es bytes (stride is), the
// rows' offsets given by shape and strides (the outer dims) from off.
type copyLoop struct {
	src, dst       []byte
	es, inner, is  int
	off            int
	shape, strides []int
}

// transposeChunk is how many i values one work item of copyTransposed covers.
const transposeChunk = 256

// copyTransposed copies a 4-byte tensor whose last two dims are a transposed view (the
// second-last has stride 1, the last a stride ≥ its extent: a Permute of the last two
// dims, as the UNet's NCHW ↔ tokens moves make) with the GEMM package's register-block
// transposer: out[…, i, j] = in[…, j·is + i]. A Go loop moved one element per call.
func (c *CPU) copyTransposed(in, out *Tensor) error {
	rank := len(in.shape)
	ni, nj := in.shape[rank-2], in.shape[rank-1]
	is := in.strides[rank-1]
	outer := in.Numel() / (ni * nj)
	per := (ni + transposeChunk - 1) / transposeChunk
	src := unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(in.buf.Host))), len(in.buf.Host)/4)
	dst := unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(out.bytes()))), out.Numel())
	l := transposeLoop{mm: c.mm, src: src, dst: dst, ni: ni, nj: nj, is: is, per: per, off: in.offset,
		shape: in.shape[:rank-2], strides: in.strides[:rank-2]}
	return forEach(c, outer*per, 1, l, func(l *transposeLoop, _, lo, hi int) error {
		ni, nj := l.ni, l.nj
		for it := lo; it < hi; it++ {
			o, i0 := it/l.per, (it%l.per)*transposeChunk
			i1 := min(ni, i0+transposeChunk)
			off := l.off + rowOffset(o, l.shape, l.strides) + i0
			d := l.dst[o*ni*nj+i0*nj:]
			if err := l.mm.transpose(nj, i1-i0, l.src[off:], l.is, d, nj); err != nil {
				return err
			}
		}
		return nil
	})
}

// transposeLoop is copyTransposed's loop: per items of chunk i values for each outer
// index (whose offset shape and strides give, from off).
type transposeLoop struct {
	mm              *matmuler
	src, dst        []float32
	ni, nj, is, per int
	off             int
	shape, strides  []int
}

// rowOffset maps a linear index over shape (row-major) to an element offset by strides.
func rowOffset(r int, shape, strides []int) int {
	off := 0
	for i := len(shape) - 1; i >= 0; i-- {
		if shape[i] == 0 {
			return 0
		}
		off += (r % shape[i]) * strides[i]
		r /= shape[i]
	}
	return off
}

func cpuCast(c *CPU, call *Call) error {
	in, out := call.In[0], call.Out
	n := in.Numel()
	if in.dtype == out.dtype {
		copy(out.bytes(), in.bytes())
		return nil
	}
	tmp := c.scratch.get(n)
	defer c.scratch.put(tmp)
	if err := DecodeFloat32(in.dtype, tmp, in.bytes()); err != nil {
		return err
	}
	return EncodeFloat32(out.dtype, out.bytes(), tmp)
}

func cpuConcat(c *CPU, call *Call) error {
	d := call.Params.(*ConcatParams).Dim
	out := call.Out
	outer := numel(out.shape[:d])
	inner := numel(out.shape[d+1:])
	o := out.f32c()
	at := 0
	for _, t := range call.In {
		seg := t.shape[d] * inner
		if seg == 0 || outer == 0 {
			continue
		}
		src := t.f32()
		// view t as (outer·size_d) rows of inner elements when its tail is contiguous
		l := concatLoop{o: o, src: src, t: t, seg: seg, at: at * inner, row: out.shape[d] * inner, tail: t.IsContiguous()}
		if err := forEach(c, outer, 1, l, func(l *concatLoop, _, lo, hi int) error {
			seg := l.seg
			for b := lo; b < hi; b++ {
				dst := l.o[b*l.row+l.at:][:seg]
				if l.tail {
					copy(dst, l.src[b*seg:(b+1)*seg])
					continue
				}
				for e := 0; e < seg; e++ {
					dst[e] = l.src[rowOffset(b*seg+e, l.t.shape, l.t.strides)]
				}
			}
			return nil
		}); err != nil {
			return err
		}
		at += t.shape[d]
	}
	return nil
}

// concatLoop is cpuConcat's loop for one input t: outer rows of seg values into the
// output rows of row values, at offset at.
type concatLoop struct {
	o, src       []float32
	t            *Tensor
	seg, at, row int
	tail         bool
}

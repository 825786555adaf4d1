package cuda

import (
	"fmt"
	"math"
	"slices"

	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/gpu/resample"
	"github.com/forgeflow/forgeflow/internal/sleef"
)

// dtCode maps a gpu.DType to kernels/common.cuh's DT_* code.
func dtCode(d gpu.DType) (int, bool) {
	switch d {
	case gpu.F32:
		return 0, true
	case gpu.F16:
		return 1, true
	case gpu.BF16:
		return 2, true
	case gpu.F8E4M3FN:
		return 3, true
	case gpu.F8E5M2:
		return 4, true
	case gpu.Q4_0:
		return 10, true
	case gpu.Q4_1:
		return 11, true
	case gpu.Q5_0:
		return 12, true
	case gpu.Q5_1:
		return 13, true
	case gpu.Q8_0:
		return 14, true
	case gpu.Q2_K:
		return 15, true
	case gpu.Q3_K:
		return 16, true
	case gpu.Q4_K:
		return 17, true
	case gpu.Q5_K:
		return 18, true
	case gpu.Q6_K:
		return 19, true
	}
	return 0, false
}

// Supports implements gpu.Backend: the cpu backend's dtype rules (F32 activations,
// weights of Linear and Embedding tables in any dtype the kernels decode, of Conv2D in a
// plain float dtype), for the ops that have kernels. Variants that need more than dtypes to
// decide (an upscale method, a head width) are declined by Run with gpu.ErrNotSupported.
func (b *Backend) Supports(op gpu.Op, dtypes ...gpu.DType) bool {
	if _, ok := opKernels[op]; !ok {
		return false
	}
	allF32 := func(ds []gpu.DType) bool {
		for _, d := range ds {
			if d != gpu.F32 {
				return false
			}
		}
		return true
	}
	switch op {
	case gpu.OpCopy:
		return len(dtypes) == 2 && dtypes[0] == dtypes[1] && dtypes[0].IsFloat()
	case gpu.OpCast:
		for _, d := range dtypes {
			if !d.IsFloat() {
				return false
			}
		}
		return true
	case gpu.OpEmbedding:
		if len(dtypes) != 2 {
			return false
		}
		_, ok := dtCode(dtypes[0])
		return ok && dtypes[1] == gpu.F32
	case gpu.OpLinear, gpu.OpConv2D:
		for i, d := range dtypes {
			if i == 1 {
				if _, ok := dtCode(d); !ok || (op == gpu.OpConv2D && !d.IsFloat()) {
					return false
				}
			} else if d != gpu.F32 {
				return false
			}
		}
		return true
	}
	return allF32(dtypes)
}

// operand is a tensor as a kernel sees it: the device address of its buffer (element
// offsets are added by the kernels or by at) and its layout.
type operand struct {
	base    uint64
	dtype   gpu.DType
	shape   []int
	strides []int
	offset  int
}

// at is the device address of the operand's first element (whole blocks for GGUF).
func (o operand) at() uint64 {
	n, _ := o.dtype.StorageBytes(o.offset - o.offset%o.dtype.BlockSize())
	return o.base + uint64(n)
}

// runCall holds what one Run needs to give back: temporary device blocks for operands
// that lived in host memory (streamed weights) or small tables.
type runCall struct {
	b     *Backend
	temps [][2]uint64
}

func (rc *runCall) release() {
	for _, t := range rc.temps {
		rc.b.pool.put(t[0], t[1])
	}
}

// upload copies host bytes into a temporary device block (freed after the op's kernels
// are queued: later work on the stream runs after them).
func (rc *runCall) upload(data []byte) (uint64, error) {
	p, c, err := rc.b.pool.get(uint64(len(data)))
	if err != nil {
		return 0, err
	}
	rc.temps = append(rc.temps, [2]uint64{p, c})
	return p, rc.b.stage.upload(p, data)
}

func (rc *runCall) operand(t *gpu.Tensor) (operand, error) {
	if t == nil {
		return operand{}, nil
	}
	o := operand{dtype: t.DType(), shape: t.Shape(), strides: t.Strides(), offset: t.Offset()}
	buf := t.Buffer()
	if p, ok := devPtr(buf); ok {
		o.base = p
		return o, nil
	}
	if buf.Host == nil {
		return o, fmt.Errorf("cuda: operand %s is in no memory this device reads", t)
	}
	p, err := rc.upload(buf.Host[:buf.Size()])
	o.base = p
	return o, err
}

// Run implements gpu.Backend.
func (b *Backend) Run(op gpu.Op, c *gpu.Call) error {
	ks, ok := opKernels[op]
	if !ok {
		return fmt.Errorf("cuda: no kernel for %s: %w", op, gpu.ErrNotSupported)
	}
	return b.do(func() error {
		rc := &runCall{b: b}
		defer rc.release()
		in := make([]operand, len(c.In))
		for i, t := range c.In {
			o, err := rc.operand(t)
			if err != nil {
				return err
			}
			in[i] = o
		}
		out, err := rc.operand(c.Out)
		if err != nil {
			return err
		}
		return b.dispatch(rc, op, ks, in, out, c)
	})
}

func (b *Backend) dispatch(rc *runCall, op gpu.Op, ks []kernelRef, in []operand, out operand, c *gpu.Call) error {
	n := numel(out.shape)
	switch op {
	case gpu.OpCopy:
		sh, st := mergeDims(in[0].shape, in[0].strides)
		d, err := descOf(sh, st[0], in[0].offset)
		if err != nil {
			return err
		}
		return b.launch(ks[0], b.gridFor(n), 256, new(args).ptr(out.at()).ptr(in[0].base).desc(d).i64(n).i32(in[0].dtype.BlockBytes()))
	case gpu.OpCast:
		from, _ := dtCode(in[0].dtype)
		to, _ := dtCode(out.dtype)
		return b.launch(ks[0], b.gridFor(n), 256, new(args).ptr(out.at()).ptr(in[0].at()).i64(n).i32(from).i32(to))
	case gpu.OpMatMul:
		return b.matmul(ks[0], in[0], in[1], out)
	case gpu.OpLinear:
		return b.linear(ks[0], in[0], in[1], in[2], out)
	case gpu.OpConv2D:
		return b.conv2d(ks[0], in[0], in[1], in[2], out, *c.Params.(*gpu.ConvParams))
	case gpu.OpGroupNorm:
		p := *c.Params.(*gpu.NormParams)
		ch := in[0].shape[1]
		spatial := numel(in[0].shape[2:])
		if n == 0 {
			return nil
		}
		return b.launch(ks[0], [3]int{in[0].shape[0] * p.Groups, 1, 1}, 256,
			new(args).ptr(out.at()).ptr(in[0].at()).ptr(optAt(in[1])).ptr(optAt(in[2])).i32(ch).i32(p.Groups).i64(spatial).f64(p.Eps))
	case gpu.OpLayerNorm, gpu.OpRMSNorm, gpu.OpSoftmax:
		d := in[0].shape[len(in[0].shape)-1]
		if n == 0 || d == 0 {
			return nil
		}
		a := new(args).ptr(out.at()).ptr(in[0].at())
		switch op {
		case gpu.OpLayerNorm:
			a.ptr(optAt(in[1])).ptr(optAt(in[2])).i64(d).f64(c.Params.(*gpu.NormParams).Eps)
		case gpu.OpRMSNorm:
			a.ptr(optAt(in[1])).i64(d).f64(c.Params.(*gpu.NormParams).Eps)
		default:
			a.i64(d)
		}
		return b.launch(ks[0], [3]int{n / d, 1, 1}, 256, a)
	case gpu.OpAttention:
		return b.attention(ks, in[0], in[1], in[2], in[3], out, *c.Params.(*gpu.AttentionParams))
	case gpu.OpGELU, gpu.OpGELUTanh, gpu.OpQuickGELU, gpu.OpSiLU:
		code := map[gpu.Op]int{gpu.OpGELU: 0, gpu.OpGELUTanh: 1, gpu.OpQuickGELU: 2, gpu.OpSiLU: 3}[op]
		sh, st := mergeDims(in[0].shape, in[0].strides)
		d, err := descOf(sh, st[0], in[0].offset)
		if err != nil {
			return err
		}
		return b.launch(ks[0], b.gridFor(n), 256, new(args).ptr(out.at()).ptr(in[0].base).desc(d).i64(n).i32(code))
	case gpu.OpAdd, gpu.OpSub, gpu.OpMul, gpu.OpDiv:
		code := map[gpu.Op]int{gpu.OpAdd: 0, gpu.OpSub: 1, gpu.OpMul: 2, gpu.OpDiv: 3}[op]
		sa := broadcastStrides(in[0], out.shape)
		sb := broadcastStrides(in[1], out.shape)
		sh, st := mergeDims(out.shape, sa, sb)
		da, err := descOf(sh, st[0], in[0].offset)
		if err != nil {
			return err
		}
		db, err := descOf(sh, st[1], in[1].offset)
		if err != nil {
			return err
		}
		return b.launch(ks[0], b.gridFor(n), 256, new(args).ptr(out.at()).ptr(in[0].base).ptr(in[1].base).desc(da).desc(db).i64(n).i32(code))
	case gpu.OpConcat:
		dim := c.Params.(*gpu.ConcatParams).Dim
		inner := numel(out.shape[dim+1:])
		at := 0
		for _, t := range in {
			seg := t.shape[dim] * inner
			cnt := numel(t.shape)
			if cnt > 0 {
				sh, st := mergeDims(t.shape, t.strides)
				d, err := descOf(sh, st[0], t.offset)
				if err != nil {
					return err
				}
				if err := b.launch(ks[0], b.gridFor(cnt), 256, new(args).ptr(out.at()).ptr(t.base).desc(d).i64(cnt).i64(seg).i64(out.shape[dim]*inner).i64(at*inner)); err != nil {
					return err
				}
			}
			at += t.shape[dim]
		}
		return nil
	case gpu.OpRoPE:
		x, pe := in[0], in[1]
		return b.launch(ks[0], b.gridFor(n/2), 256, new(args).ptr(out.at()).ptr(x.at()).ptr(pe.at()).i64(n/2).
			i32(x.shape[1]).i32(x.shape[2]).i32(x.shape[3]).i32(pe.shape[0]))
	case gpu.OpTimestepEmbedding:
		return b.timestep(rc, ks[0], in[0], out, *c.Params.(*gpu.TimestepParams))
	case gpu.OpPatchify, gpu.OpUnpatchify:
		p := *c.Params.(*gpu.PatchParams)
		img, to := in[0], 1
		if op == gpu.OpUnpatchify {
			img, to = out, 0
		}
		return b.launch(ks[0], b.gridFor(n), 256, new(args).ptr(out.at()).ptr(in[0].at()).
			i32(img.shape[0]).i32(img.shape[1]).i32(p.H).i32(p.W).i32(p.P).i32(to))
	case gpu.OpUpscale:
		return b.upscale(rc, ks[0], in[0], out, *c.Params.(*gpu.UpscaleParams))
	case gpu.OpEmbedding:
		ids := c.Params.(*gpu.EmbeddingParams).IDs
		if len(ids) == 0 || n == 0 {
			return nil
		}
		raw := make([]byte, 4*len(ids))
		for i, id := range ids {
			v := uint32(int32(id))
			raw[4*i], raw[4*i+1], raw[4*i+2], raw[4*i+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
		}
		p, err := rc.upload(raw)
		if err != nil {
			return err
		}
		dt, _ := dtCode(in[0].dtype)
		rowBytes, err := in[0].dtype.StorageBytes(in[0].shape[1])
		if err != nil {
			return err
		}
		return b.launch(ks[0], b.gridFor(n), 256, new(args).ptr(out.at()).ptr(in[0].at()).ptr(p).i32(len(ids)).i32(in[0].shape[1]).i64(rowBytes).i32(dt))
	}
	return fmt.Errorf("cuda: %s: %w", op, gpu.ErrNotSupported)
}

func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

func optAt(o operand) uint64 {
	if o.base == 0 {
		return 0
	}
	return o.at()
}

// broadcastStrides is o's element strides against shape (0 where o broadcasts).
func broadcastStrides(o operand, shape []int) []int {
	st := make([]int, len(shape))
	off := len(shape) - len(o.shape)
	for i := range o.shape {
		if o.shape[i] != 1 {
			st[off+i] = o.strides[i]
		}
	}
	return st
}

// batchStride is the single element stride between consecutive matrices of o over the
// broadcast batch dims (0 when shared), or −1; gpu.MatMul makes inputs for which it
// exists.
func batchStride(o operand, batch []int) int {
	st := broadcastStrides(operand{shape: o.shape[:len(o.shape)-2], strides: o.strides[:len(o.strides)-2]}, batch)
	s, prod := -1, 1
	for i := len(batch) - 1; i >= 0; i-- {
		if batch[i] == 1 {
			continue
		}
		if s < 0 {
			s, prod = st[i], batch[i]
			continue
		}
		if st[i] != s*prod {
			return -1
		}
		prod *= batch[i]
	}
	return max(s, 0)
}

func (b *Backend) matmul(k kernelRef, a, bm, out operand) error {
	ra, rb := len(a.shape), len(bm.shape)
	m, kk := a.shape[ra-2], a.shape[ra-1]
	n := bm.shape[rb-1]
	batch := out.shape[:len(out.shape)-2]
	count := numel(batch)
	if count == 0 || m == 0 || n == 0 {
		return nil
	}
	sa, sb := batchStride(a, batch), batchStride(bm, batch)
	if sa < 0 || sb < 0 {
		return fmt.Errorf("cuda: matmul batch layout: %w", gpu.ErrNotSupported)
	}
	esz := uint64(4)
	for z0 := 0; z0 < count; z0 += 65535 {
		nz := min(65535, count-z0)
		ag := new(args).ptr(a.at() + uint64(z0*sa)*esz).ptr(bm.at() + uint64(z0*sb)*esz).ptr(out.at() + uint64(z0*m*n)*esz).
			i32(m).i32(n).i32(kk).
			i64(a.strides[ra-2]).i64(a.strides[ra-1]).i64(sa).
			i64(bm.strides[rb-2]).i64(bm.strides[rb-1]).i64(sb).i64(m * n)
		if err := b.launch(k, [3]int{(n + 63) / 64, (m + 63) / 64, nz}, 256, ag); err != nil {
			return err
		}
	}
	return nil
}

func (b *Backend) linear(k kernelRef, x, w, bias, out operand) error {
	n, kk := w.shape[0], w.shape[1]
	rows := numel(x.shape[:len(x.shape)-1])
	if rows == 0 || n == 0 {
		return nil
	}
	rowBytes, err := w.dtype.StorageBytes(kk)
	if err != nil {
		return err
	}
	dt, _ := dtCode(w.dtype)
	const chunk = 65535 * 64
	for r0 := 0; r0 < rows; r0 += chunk {
		nr := min(chunk, rows-r0)
		ag := new(args).ptr(x.at() + uint64(r0*kk*4)).ptr(w.at()).ptr(optAt(bias)).ptr(out.at() + uint64(r0*n*4)).
			i32(nr).i32(n).i32(kk).i64(rowBytes).i32(dt)
		if err := b.launch(k, [3]int{(n + 63) / 64, (nr + 63) / 64, 1}, 256, ag); err != nil {
			return err
		}
	}
	return nil
}

func (b *Backend) conv2d(k kernelRef, x, w, bias, out operand, p gpu.ConvParams) error {
	nimg, cin, h, wd := x.shape[0], x.shape[1], x.shape[2], x.shape[3]
	cout, kh, kw := w.shape[0], w.shape[2], w.shape[3]
	oh, ow := out.shape[2], out.shape[3]
	pix := nimg * oh * ow
	if pix == 0 || cout == 0 {
		return nil
	}
	if cout > 65535*64 || int64(cin)*int64(kh)*int64(kw) > math.MaxInt32 {
		return fmt.Errorf("cuda: conv2d of %d channels: %w", cout, gpu.ErrNotSupported)
	}
	dt, _ := dtCode(w.dtype)
	ag := new(args).ptr(x.at()).ptr(w.at()).ptr(optAt(bias)).ptr(out.at()).
		i32(nimg).i32(cin).i32(h).i32(wd).i32(cout).i32(kh).i32(kw).i32(p.Stride).i32(p.Top).i32(p.Left).i32(oh).i32(ow).i32(dt)
	return b.launch(k, [3]int{(pix + 63) / 64, (cout + 63) / 64, 1}, 256, ag)
}

// attentionWidths are the head-width classes of ff_attention_*, in opKernels' order.
var attentionWidths = []int{64, 80, 128, 160}

func (b *Backend) attention(ks []kernelRef, q, k, v, mask, out operand, p gpu.AttentionParams) error {
	bs, h, lq, d := q.shape[0], q.shape[1], q.shape[2], q.shape[3]
	lk, dv := k.shape[2], v.shape[3]
	if numel(out.shape) == 0 {
		return nil
	}
	if lk == 0 { // softmax over no keys: NaN rows, as PyTorch (0xff… is a NaN)
		return b.drv.check(b.drv.cuMemsetD8Async(out.at(), 0xff, uint64(4*numel(out.shape)), b.stream), "cuMemsetD8Async")
	}
	i := slices.IndexFunc(attentionWidths, func(w int) bool { return w >= max(d, dv) })
	if i < 0 {
		return fmt.Errorf("cuda: attention head width %d: %w", max(d, dv), gpu.ErrNotSupported)
	}
	for _, t := range []operand{q, k, v} {
		if t.strides[3] != 1 && t.shape[3] > 1 {
			return fmt.Errorf("cuda: attention operand with a strided last dim: %w", gpu.ErrNotSupported)
		}
	}
	if bs*h > 65535 {
		return fmt.Errorf("cuda: attention over %d heads: %w", bs*h, gpu.ErrNotSupported)
	}
	var ms [4]int
	var mp uint64
	if mask.base != 0 {
		st := broadcastStrides(mask, []int{bs, h, lq, lk})
		copy(ms[:], st)
		mp = mask.base + uint64(4*mask.offset)
	}
	ag := new(args).ptr(q.base + uint64(4*q.offset)).ptr(k.base + uint64(4*k.offset)).ptr(v.base + uint64(4*v.offset)).ptr(mp).ptr(out.at()).
		i32(h).i32(lq).i32(lk).i32(d).i32(dv).
		i64(q.strides[0]).i64(q.strides[1]).i64(q.strides[2]).
		i64(k.strides[0]).i64(k.strides[1]).i64(k.strides[2]).
		i64(v.strides[0]).i64(v.strides[1]).i64(v.strides[2]).
		i64(ms[0]).i64(ms[1]).i64(ms[2]).i64(ms[3]).f32(p.Scale)
	causal := 0
	if p.Causal {
		causal = 1
	}
	ag.i32(causal)
	return b.launch(ks[i], [3]int{(lq + 31) / 32, bs * h, 1}, 128, ag)
}

func (b *Backend) timestep(rc *runCall, k kernelRef, t, out operand, p gpu.TimestepParams) error {
	n := t.shape[0]
	if n == 0 || p.Dim == 0 {
		return nil
	}
	half := p.Dim / 2
	// the frequencies exactly as the cpu backend computes them (PyTorch's float32 chain
	// with SLEEF's expf), so both take cos/sin of the same arguments
	raw := make([]byte, 4*max(half, 1))
	nl := float32(-math.Log(p.MaxPeriod))
	for j := 0; j < half; j++ {
		f := math.Float32bits(sleef.Expf(float32(nl*float32(j)) / float32(half)))
		raw[4*j], raw[4*j+1], raw[4*j+2], raw[4*j+3] = byte(f), byte(f>>8), byte(f>>16), byte(f>>24)
	}
	fp, err := rc.upload(raw)
	if err != nil {
		return err
	}
	scaled := 0
	if p.Scale != 1 {
		scaled = 1
	}
	return b.launch(k, b.gridFor(n*p.Dim), 256, new(args).ptr(out.at()).ptr(t.at()).ptr(fp).i32(n).i32(p.Dim).f32(p.Scale).i32(scaled))
}

func (b *Backend) upscale(rc *runCall, k kernelRef, x, out operand, p gpu.UpscaleParams) error {
	if p.Crop != "disabled" {
		return fmt.Errorf("cuda: upscale crop %q: %w", p.Crop, gpu.ErrNotSupported)
	}
	h, w := x.shape[2], x.shape[3]
	ys, ok1 := resample.GatherIndices(p.Method, h, p.Height)
	xs, ok2 := resample.GatherIndices(p.Method, w, p.Width)
	if !ok1 || !ok2 {
		return fmt.Errorf("cuda: upscale method %q: %w", p.Method, gpu.ErrNotSupported)
	}
	planes := x.shape[0] * x.shape[1]
	if planes == 0 {
		return nil
	}
	if h == 0 || w == 0 {
		return fmt.Errorf("cuda: upscale of an empty image: %w", gpu.ErrNotSupported)
	}
	idx := make([]byte, 4*(len(ys)+len(xs)))
	for i, v := range append(ys, xs...) {
		u := uint32(int32(v))
		idx[4*i], idx[4*i+1], idx[4*i+2], idx[4*i+3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
	}
	ip, err := rc.upload(idx)
	if err != nil {
		return err
	}
	ag := new(args).ptr(out.at()).ptr(x.at()).ptr(ip).ptr(ip + uint64(4*len(ys))).i64(planes).i32(h).i32(w).i32(p.Height).i32(p.Width)
	return b.launch(k, b.gridFor(numel(out.shape)), 256, ag)
}

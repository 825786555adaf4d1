package gpu

import (
	"fmt"
	"slices"
)

// broadcastShape is NumPy/PyTorch broadcasting: align at the end, sizes equal or 1. The
// result is appended to dst[:0] (pass an array on the caller's stack).
func broadcastShape(dst, a, b []int) ([]int, error) {
	n := max(len(a), len(b))
	out := dst[:0]
	for range n {
		out = append(out, 0)
	}
	for i := 0; i < n; i++ {
		da, db := 1, 1
		if j := len(a) - n + i; j >= 0 {
			da = a[j]
		}
		if j := len(b) - n + i; j >= 0 {
			db = b[j]
		}
		switch {
		case da == db || db == 1:
			out[i] = da
		case da == 1:
			out[i] = db
		default:
			return nil, fmt.Errorf("gpu: shapes %v and %v do not broadcast", slices.Clone(a), slices.Clone(b))
		}
	}
	return out, nil
}

// broadcastStrides returns t's element strides against the broadcast shape (0 where t
// has size 1 or lacks the dim), appended to dst[:0].
func broadcastStrides(dst []int, t *Tensor, shape []int) []int {
	st := dst[:0]
	for range shape {
		st = append(st, 0)
	}
	off := len(shape) - len(t.shape)
	for i := range t.shape {
		if t.shape[i] != 1 {
			st[off+i] = t.strides[i]
		}
	}
	return st
}

func binaryOp(rt *Runtime, op Op, a, b *Tensor) (*Tensor, error) {
	if a.dtype != F32 || b.dtype != F32 {
		return nil, fmt.Errorf("gpu: %s of %s and %s: activations must be F32", op, a, b)
	}
	var sb [inlineRank]int
	shape, err := broadcastShape(sb[:], a.shape, b.shape)
	if err != nil {
		return nil, fmt.Errorf("gpu: %s: %w", op, err)
	}
	out, err := rt.Empty(F32, shape...)
	if err != nil {
		return nil, err
	}
	if err := rt.exec(op, rt.call(out, a, b)); err != nil {
		out.Release()
		return nil, err
	}
	return out, nil
}

// Add returns a + b with broadcasting; a and b may be strided views.
func Add(rt *Runtime, a, b *Tensor) (*Tensor, error) { return binaryOp(rt, OpAdd, a, b) }

// Sub returns a − b with broadcasting.
func Sub(rt *Runtime, a, b *Tensor) (*Tensor, error) { return binaryOp(rt, OpSub, a, b) }

// Mul returns a · b with broadcasting.
func Mul(rt *Runtime, a, b *Tensor) (*Tensor, error) { return binaryOp(rt, OpMul, a, b) }

// Div returns a / b with broadcasting.
func Div(rt *Runtime, a, b *Tensor) (*Tensor, error) { return binaryOp(rt, OpDiv, a, b) }

func unaryOp(rt *Runtime, op Op, x *Tensor) (*Tensor, error) {
	if x.dtype != F32 {
		return nil, fmt.Errorf("gpu: %s of %s: activations must be F32", op, x)
	}
	out, err := rt.Empty(F32, x.shape...)
	if err != nil {
		return nil, err
	}
	if err := rt.exec(op, rt.call(out, x)); err != nil {
		out.Release()
		return nil, err
	}
	return out, nil
}

// GELU is x·Φ(x) with the exact erf (torch.nn.functional.gelu, approximate="none").
func GELU(rt *Runtime, x *Tensor) (*Tensor, error) { return unaryOp(rt, OpGELU, x) }

// GELUTanh is GELU's tanh approximation (approximate="tanh"):
// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
func GELUTanh(rt *Runtime, x *Tensor) (*Tensor, error) { return unaryOp(rt, OpGELUTanh, x) }

// QuickGELU is x·σ(1.702·x), CLIP's activation (comfy/clip_model.py).
func QuickGELU(rt *Runtime, x *Tensor) (*Tensor, error) { return unaryOp(rt, OpQuickGELU, x) }

// SiLU is x·σ(x).
func SiLU(rt *Runtime, x *Tensor) (*Tensor, error) { return unaryOp(rt, OpSiLU, x) }

// geluErf follows PyTorch's CPU float kernel (aten/src/ATen/native/cpu/Activation.cpp,
// GeluKernelImpl, which evaluates Vectorized<float>::erf): x·½·(1 + erf(x/√2)) with erf
// from Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7) in float32. Using the same formula
// keeps ComfyUI's numerics and is several times cheaper than math.Erf.
func geluErf(x float32) float32 {
	return x * 0.5 * (1 + erfAS(x*0.70710678))
}

// erfAS is Abramowitz & Stegun 7.1.26: erf(|x|) ≈ 1 − t·(p1 + t·(p2 + t·(p3 + t·(p4 + t·p5))))·e^(−x²)
// with t = 1/(1 + p·|x|), sign restored.
func erfAS(x float32) float32 {
	const (
		p  = 0.3275911
		p1 = 0.254829592
		p2 = -0.284496736
		p3 = 1.421413741
		p4 = -1.453152027
		p5 = 1.061405429
	)
	a := x
	if a < 0 {
		a = -a
	}
	t := 1 / (p*a + 1)
	poly := p1 + t*(p2+t*(p3+t*(p4+t*p5)))
	r := 1 - t*poly*expf(-a*a)
	if x < 0 {
		return -r
	}
	return r
}

// geluTanh is ½x(1 + tanh(u)), u = √(2/π)(x + 0.044715x³), evaluated as the identical
// x·σ(2u) = x / (1 + e^(−2u)) in float32: no cancellation in 1 + tanh for negative x,
// and one exp instead of a tanh.
func geluTanh(x float32) float32 {
	u := 0.7978846 * x * (1 + 0.044715*x*x)
	return x / (1 + expf(-2*u))
}

// quickGELU and silu are x·σ(a·x) = x / (1 + e^(−a·x)) in float32 with expf (≤ 2 ulp),
// the form PyTorch's float kernels evaluate.
func quickGELU(x float32) float32 { return x / (1 + expf(-1.702*x)) }

func silu(x float32) float32 { return x / (1 + expf(-x)) }

// cpuUnary applies f elementwise; vec, when non-nil, picks the backend's vector form for
// contiguous inputs (which must compute the same function as f).
func cpuUnary(f func(float32) float32, vec func(*CPU) func(dst, src []float32)) cpuKernel {
	return func(c *CPU, call *Call) error {
		in, out := call.In[0], call.Out
		o := out.f32c()
		n := len(o)
		if n == 0 {
			return nil
		}
		u := unaryLoop{f: f, o: o, src: in.f32()}
		if vec != nil {
			u.v = vec(c)
		}
		if in.IsContiguous() {
			return forEach(c, n, 16384, u, func(u *unaryLoop, _, lo, hi int) error {
				if u.v != nil {
					u.v(u.o[lo:hi], u.src[lo:hi])
					return nil
				}
				for i := lo; i < hi; i++ {
					u.o[i] = u.f(u.src[i])
				}
				return nil
			})
		}
		rank := len(in.shape)
		u.inner, u.is = in.shape[rank-1], in.strides[rank-1]
		u.shape, u.strides = in.shape[:rank-1], in.strides[:rank-1]
		if u.is != 1 && u.inner != 1 {
			// rows of a view with a contiguous last dim (GEGLU's gate half, a Chunk of
			// the projection) still take the vector form, one row at a time
			u.v = nil
		}
		return forEach(c, n/u.inner, max(1, 16384/u.inner), u, func(u *unaryLoop, _, lo, hi int) error {
			inner, is := u.inner, u.is
			for r := lo; r < hi; r++ {
				off := rowOffset(r, u.shape, u.strides)
				d := u.o[r*inner : (r+1)*inner]
				if u.v != nil {
					u.v(d, u.src[off:off+inner])
					continue
				}
				for j := range d {
					d[j] = u.f(u.src[off+j*is])
				}
			}
			return nil
		})
	}
}

// unaryLoop is cpuUnary's loop: o = f(src), with the vector form v where set; a strided
// input goes by rows of inner elements (stride is), whose offsets shape and strides (the
// outer dims) give.
type unaryLoop struct {
	f              func(float32) float32
	v              func(dst, src []float32)
	o, src         []float32
	inner, is      int
	shape, strides []int
}

// binSeg computes d[j] = a[j·ia] op b[j·ib] for one row. The common stride patterns get
// their own plain loops (no call per element; bounds checks hoisted by the reslicing).
func binSeg(op Op, d, a, b []float32, ia, ib int) {
	n := len(d)
	switch {
	case ia == 1 && ib == 1:
		a, b = a[:n], b[:n]
		switch op {
		case OpAdd:
			for j := range d {
				d[j] = a[j] + b[j]
			}
		case OpSub:
			for j := range d {
				d[j] = a[j] - b[j]
			}
		case OpMul:
			for j := range d {
				d[j] = a[j] * b[j]
			}
		case OpDiv:
			for j := range d {
				d[j] = a[j] / b[j]
			}
		}
	case ia == 1 && ib == 0:
		a = a[:n]
		s := b[0]
		switch op {
		case OpAdd:
			for j := range d {
				d[j] = a[j] + s
			}
		case OpSub:
			for j := range d {
				d[j] = a[j] - s
			}
		case OpMul:
			for j := range d {
				d[j] = a[j] * s
			}
		case OpDiv:
			for j := range d {
				d[j] = a[j] / s
			}
		}
	case ia == 0 && ib == 1:
		b = b[:n]
		s := a[0]
		switch op {
		case OpAdd:
			for j := range d {
				d[j] = s + b[j]
			}
		case OpSub:
			for j := range d {
				d[j] = s - b[j]
			}
		case OpMul:
			for j := range d {
				d[j] = s * b[j]
			}
		case OpDiv:
			for j := range d {
				d[j] = s / b[j]
			}
		}
	default:
		for j := range d {
			x, y := a[j*ia], b[j*ib]
			switch op {
			case OpAdd:
				d[j] = x + y
			case OpSub:
				d[j] = x - y
			case OpMul:
				d[j] = x * y
			case OpDiv:
				d[j] = x / y
			}
		}
	}
}

func cpuBinary(op Op) cpuKernel {
	return func(c *CPU, call *Call) error {
		a, b, out := call.In[0], call.In[1], call.Out
		o := out.f32c()
		n := len(o)
		if n == 0 {
			return nil
		}
		l := binaryLoop{op: op, o: o, as: a.f32(), bs: b.f32()}
		if a.IsContiguous() && b.IsContiguous() && slices.Equal(a.shape, b.shape) {
			return forEach(c, n, 16384, l, func(l *binaryLoop, _, lo, hi int) error {
				binSeg(l.op, l.o[lo:hi], l.as[lo:], l.bs[lo:], 1, 1)
				return nil
			})
		}
		shape := out.shape
		rank := len(shape)
		st := c.ints.get(2 * rank)
		defer c.ints.put(st)
		sa, sb := broadcastStrides(st[:0], a, shape), broadcastStrides(st[rank:rank], b, shape)
		l.inner = shape[rank-1]
		l.shape, l.sa, l.sb = shape[:rank-1], sa, sb
		return forEach(c, n/l.inner, max(1, 16384/l.inner), l, func(l *binaryLoop, _, lo, hi int) error {
			inner, k := l.inner, len(l.shape)
			for r := lo; r < hi; r++ {
				offA := rowOffset(r, l.shape, l.sa[:k])
				offB := rowOffset(r, l.shape, l.sb[:k])
				binSeg(l.op, l.o[r*inner:(r+1)*inner], l.as[offA:], l.bs[offB:], l.sa[k], l.sb[k])
			}
			return nil
		})
	}
}

// binaryLoop is cpuBinary's loop: o = as op bs, by rows of inner elements when the
// operands broadcast or are strided (sa, sb: their strides against the output's shape,
// whose outer dims are shape).
type binaryLoop struct {
	op            Op
	o, as, bs     []float32
	inner         int
	shape, sa, sb []int
}

package gpu

import (
	"fmt"
	"math"
)

// The norms accumulate statistics in float64 (PyTorch accumulates float32 with cascaded
// sums; float64 is at least as accurate) and normalise in float32, as PyTorch does.

func checkAffine(name string, t *Tensor, n int) error {
	if t != nil && (t.dtype != F32 || t.Numel() != n || len(t.shape) != 1) {
		return fmt.Errorf("gpu: %s %s must be F32 [%d]", name, t, n)
	}
	return nil
}

func normCall(rt *Runtime, op Op, x, weight, bias *Tensor, p NormParams) (*Tensor, error) {
	xc, err := Contiguous(rt, x)
	if err != nil {
		return nil, err
	}
	defer xc.Release()
	out, err := rt.Empty(F32, x.shape...)
	if err != nil {
		return nil, err
	}
	c := rt.call(out, xc, weight, bias)
	c.params.norm = p
	c.Params = &c.params.norm
	if err := rt.exec(op, c); err != nil {
		out.Release()
		return nil, err
	}
	return out, nil
}

// GroupNorm normalises x (N, C, …) over each of groups channel groups and the trailing
// dims, then applies the per-channel affine (weight, bias may be nil):
// torch.nn.functional.group_norm.
func GroupNorm(rt *Runtime, x *Tensor, groups int, weight, bias *Tensor, eps float64) (*Tensor, error) {
	if x.dtype != F32 || len(x.shape) < 2 {
		return nil, fmt.Errorf("gpu: group_norm input %s must be F32 (N, C, …)", x)
	}
	c := x.shape[1]
	if groups <= 0 || c%groups != 0 {
		return nil, fmt.Errorf("gpu: group_norm: %d channels not divisible into %d groups", c, groups)
	}
	if err := checkAffine("group_norm weight", weight, c); err != nil {
		return nil, err
	}
	if err := checkAffine("group_norm bias", bias, c); err != nil {
		return nil, err
	}
	return normCall(rt, OpGroupNorm, x, weight, bias, NormParams{Groups: groups, Eps: eps})
}

// GroupNormSiLU is SiLU(GroupNorm(x)), the pre-activation of every SD ResBlock and VAE
// block, bit-identical to the two ops. The cpu backend applies the SiLU to each
// normalised row while it is in cache, sparing a pass over the tensor and its buffer;
// other backends run the two ops.
func GroupNormSiLU(rt *Runtime, x *Tensor, groups int, weight, bias *Tensor, eps float64) (*Tensor, error) {
	if rt.be != Backend(rt.cpu) {
		h, err := GroupNorm(rt, x, groups, weight, bias, eps)
		if err != nil {
			return nil, err
		}
		defer h.Release()
		return SiLU(rt, h)
	}
	if x.dtype != F32 || len(x.shape) < 2 {
		return nil, fmt.Errorf("gpu: group_norm input %s must be F32 (N, C, …)", x)
	}
	c := x.shape[1]
	if groups <= 0 || c%groups != 0 {
		return nil, fmt.Errorf("gpu: group_norm: %d channels not divisible into %d groups", c, groups)
	}
	if err := checkAffine("group_norm weight", weight, c); err != nil {
		return nil, err
	}
	if err := checkAffine("group_norm bias", bias, c); err != nil {
		return nil, err
	}
	return normCall(rt, OpGroupNorm, x, weight, bias, NormParams{Groups: groups, Eps: eps, silu: true})
}

// LayerNorm normalises over the last dim with optional affine: nn.functional.layer_norm.
func LayerNorm(rt *Runtime, x, weight, bias *Tensor, eps float64) (*Tensor, error) {
	if x.dtype != F32 || len(x.shape) < 1 {
		return nil, fmt.Errorf("gpu: layer_norm input %s must be F32", x)
	}
	d := x.shape[len(x.shape)-1]
	if err := checkAffine("layer_norm weight", weight, d); err != nil {
		return nil, err
	}
	if err := checkAffine("layer_norm bias", bias, d); err != nil {
		return nil, err
	}
	return normCall(rt, OpLayerNorm, x, weight, bias, NormParams{Eps: eps})
}

// RMSNorm returns x·rsqrt(mean(x²)+eps)·weight over the last dim (weight may be nil), as
// comfy's RMSNorm and T5's layer norm compute it.
func RMSNorm(rt *Runtime, x, weight *Tensor, eps float64) (*Tensor, error) {
	if x.dtype != F32 || len(x.shape) < 1 {
		return nil, fmt.Errorf("gpu: rms_norm input %s must be F32", x)
	}
	if err := checkAffine("rms_norm weight", weight, x.shape[len(x.shape)-1]); err != nil {
		return nil, err
	}
	return normCall(rt, OpRMSNorm, x, weight, nil, NormParams{Eps: eps})
}

// Softmax returns softmax over the last dim.
func Softmax(rt *Runtime, x *Tensor) (*Tensor, error) {
	if x.dtype != F32 || len(x.shape) < 1 {
		return nil, fmt.Errorf("gpu: softmax input %s must be F32", x)
	}
	return normCall(rt, OpSoftmax, x, nil, nil, NormParams{})
}

func affine(t *Tensor) []float32 {
	if t == nil {
		return nil
	}
	return t.f32c()
}

func cpuGroupNorm(c *CPU, call *Call) error {
	x, out := call.In[0], call.Out
	wt, bs := affine(call.In[1]), affine(call.In[2])
	p := *call.Params.(*NormParams)
	n, ch := x.shape[0], x.shape[1]
	spatial := numel(x.shape[2:])
	g := groupNormLoop{xs: x.f32c(), o: out.f32c(), wt: wt, bs: bs, p: p, ch: ch, spatial: spatial, silu: c.rk.silu}
	return forEach(c, n*p.Groups, 1, g, func(l *groupNormLoop, _, lo, hi int) error {
		p, ch, spatial := &l.p, l.ch, l.spatial
		cpg := ch / p.Groups
		for gi := lo; gi < hi; gi++ {
			b, g := gi/p.Groups, gi%p.Groups
			base := (b*ch + g*cpg) * spatial
			seg := l.xs[base : base+cpg*spatial]
			mean, inv := moments(seg, p.Eps)
			for ci := 0; ci < cpg; ci++ {
				chn := g*cpg + ci
				scale, shift := inv, -mean*inv
				if l.wt != nil {
					scale *= float64(l.wt[chn])
					shift *= float64(l.wt[chn])
				}
				if l.bs != nil {
					shift += float64(l.bs[chn])
				}
				row := l.o[base+ci*spatial : base+(ci+1)*spatial]
				affineRow(row, seg[ci*spatial:(ci+1)*spatial], float32(scale), float32(shift))
				if p.silu {
					l.silu(row, row)
				}
			}
		}
		return nil
	})
}

// groupNormLoop is cpuGroupNorm's loop over (image, group) pairs.
type groupNormLoop struct {
	xs, o, wt, bs []float32
	p             NormParams
	ch, spatial   int
	silu          func(dst, src []float32)
}

// moments returns the mean and 1/sqrt(var+eps) of v (population variance), accumulated
// in float64 with four independent sums each so the adds overlap.
func moments(v []float32, eps float64) (mean, inv float64) {
	var s0, s1, s2, s3, q0, q1, q2, q3 float64
	i := 0
	for ; i+4 <= len(v); i += 4 {
		a, b, c, d := float64(v[i]), float64(v[i+1]), float64(v[i+2]), float64(v[i+3])
		s0, s1, s2, s3 = s0+a, s1+b, s2+c, s3+d
		q0, q1, q2, q3 = q0+a*a, q1+b*b, q2+c*c, q3+d*d
	}
	for ; i < len(v); i++ {
		a := float64(v[i])
		s0 += a
		q0 += a * a
	}
	n := float64(max(len(v), 1))
	mean = (s0 + s1 + s2 + s3) / n
	variance := max((q0+q1+q2+q3)/n-mean*mean, 0)
	return mean, 1 / math.Sqrt(variance+eps)
}

// affineRow writes dst[j] = src[j]·scale + shift.
func affineRow(dst, src []float32, scale, shift float32) {
	src = src[:len(dst)]
	for j, v := range src {
		dst[j] = v*scale + shift
	}
}

// rowsLoop runs row over the rows of the last dim of a contiguous tensor: layer norm,
// RMS norm and softmax, each a plain function of the loop's operands.
type rowsLoop struct {
	xs, o, wt, bs []float32
	d             int
	eps           float64
	rk            *rowKernels
	row           func(l *rowsLoop, src, dst []float32)
}

// rows runs l.row over the rows of x into out.
func (c *CPU) rows(x, out *Tensor, l rowsLoop) error {
	l.d = x.shape[len(x.shape)-1]
	if l.d == 0 || x.Numel() == 0 {
		return nil
	}
	l.xs, l.o, l.rk = x.f32c(), out.f32c(), &c.rk
	return forEach(c, len(l.xs)/l.d, max(1, 8192/l.d), l, func(l *rowsLoop, _, lo, hi int) error {
		d := l.d
		for r := lo; r < hi; r++ {
			l.row(l, l.xs[r*d:(r+1)*d], l.o[r*d:(r+1)*d])
		}
		return nil
	})
}

func cpuLayerNorm(c *CPU, call *Call) error {
	return c.rows(call.In[0], call.Out, rowsLoop{wt: affine(call.In[1]), bs: affine(call.In[2]), eps: call.Params.(*NormParams).Eps, row: layerNormRow})
}

func layerNormRow(l *rowsLoop, src, dst []float32) {
	wt, bs := l.wt, l.bs
	mean, inv := moments(src, l.eps)
	m, s := float32(mean), float32(inv)
	switch {
	case wt != nil && bs != nil:
		for j, v := range src {
			dst[j] = (v-m)*s*wt[j] + bs[j]
		}
	case wt != nil:
		for j, v := range src {
			dst[j] = (v - m) * s * wt[j]
		}
	default:
		affineRow(dst, src, s, -m*s)
		if bs != nil {
			for j := range dst {
				dst[j] += bs[j]
			}
		}
	}
}

func cpuRMSNorm(c *CPU, call *Call) error {
	return c.rows(call.In[0], call.Out, rowsLoop{wt: affine(call.In[1]), eps: call.Params.(*NormParams).Eps, row: rmsNormRow})
}

func rmsNormRow(l *rowsLoop, src, dst []float32) {
	var q0, q1, q2, q3 float64
	i := 0
	for ; i+4 <= len(src); i += 4 {
		a, b, c, d := float64(src[i]), float64(src[i+1]), float64(src[i+2]), float64(src[i+3])
		q0, q1, q2, q3 = q0+a*a, q1+b*b, q2+c*c, q3+d*d
	}
	for ; i < len(src); i++ {
		q0 += float64(src[i]) * float64(src[i])
	}
	s := float32(1 / math.Sqrt((q0+q1+q2+q3)/float64(len(src))+l.eps))
	if l.wt == nil {
		affineRow(dst, src, s, 0)
		return
	}
	for j, v := range src {
		dst[j] = v * s * l.wt[j]
	}
}

func cpuSoftmax(c *CPU, call *Call) error {
	return c.rows(call.In[0], call.Out, rowsLoop{row: softmaxRow})
}

func softmaxRow(l *rowsLoop, src, dst []float32) {
	m := l.rk.max(src)
	if math.IsInf(float64(m), -1) || m != m { // all −Inf (fully masked) or NaN: NaN like PyTorch
		for j := range dst {
			dst[j] = float32(math.NaN())
		}
		return
	}
	copy(dst, src)
	inv := 1 / l.rk.expScale(dst, 1, m)
	for j := range dst {
		dst[j] *= inv
	}
}

package gpu

import "fmt"

// Activations of the super-resolution networks (diffusion/upscale): ESRGAN's LeakyReLU,
// Real-ESRGAN Compact's PReLU and SPAN's attention gate σ(x) − ½.

// LeakyParams configures OpLeakyReLU when the call has no per-channel slope tensor: the
// slope of negative inputs.
type LeakyParams struct{ Slope float64 }

// LeakyReLU is torch.nn.LeakyReLU(slope): x where x ≥ 0, slope·x elsewhere.
func LeakyReLU(rt *Runtime, x *Tensor, slope float64) (*Tensor, error) {
	return leaky(rt, x, nil, slope)
}

// PReLU is torch.nn.PReLU: x where x ≥ 0, a·x elsewhere, with a the weight's entry for
// x's dim-1 channel (weight (C)), or its one entry for every element (weight (1)).
func PReLU(rt *Runtime, x, weight *Tensor) (*Tensor, error) {
	if weight == nil || weight.dtype != F32 || len(weight.shape) != 1 {
		return nil, fmt.Errorf("gpu: prelu weight %s must be F32 (C)", weight)
	}
	c := weight.shape[0]
	if c != 1 && (len(x.shape) < 2 || x.shape[1] != c) {
		return nil, fmt.Errorf("gpu: prelu weight %v does not match the channels of %v", weight.shape, x.shape)
	}
	return leaky(rt, x, weight, 0)
}

func leaky(rt *Runtime, x, weight *Tensor, slope float64) (*Tensor, error) {
	if x.dtype != F32 {
		return nil, fmt.Errorf("gpu: leaky_relu of %s: activations must be F32", x)
	}
	xc, err := Contiguous(rt, x)
	if err != nil {
		return nil, err
	}
	defer xc.Release()
	var wc *Tensor
	if weight != nil {
		if wc, err = Contiguous(rt, weight); err != nil {
			return nil, err
		}
		defer wc.Release()
	}
	out, err := rt.Empty(F32, x.shape...)
	if err != nil {
		return nil, err
	}
	c := rt.call(out, xc, wc)
	c.params.leaky = LeakyParams{Slope: slope}
	c.Params = &c.params.leaky
	if err := rt.exec(OpLeakyReLU, c); err != nil {
		out.Release()
		return nil, err
	}
	return out, nil
}

// Sigmoid is 1 / (1 + e^−x) (torch.sigmoid).
func Sigmoid(rt *Runtime, x *Tensor) (*Tensor, error) { return unaryOp(rt, OpSigmoid, x) }

// sigmoid evaluates σ in float32 with expf, as PyTorch's float kernel does.
func sigmoid(x float32) float32 { return 1 / (1 + expf(-x)) }

// cpuLeakyReLU runs OpLeakyReLU on a contiguous input: one slope from the params, or a
// slope per dim-1 channel from In[1] (a one-entry tensor applies to every element).
func cpuLeakyReLU(c *CPU, call *Call) error {
	x, w, out := call.In[0], call.In[1], call.Out
	src, dst := x.f32c(), out.f32c()
	if len(dst) == 0 {
		return nil
	}
	l := leakyLoop{dst: dst, src: src, inner: len(dst)}
	if w != nil {
		l.slopes = w.f32c()
	} else {
		l.slope = float32(call.Params.(*LeakyParams).Slope)
	}
	if len(l.slopes) == 1 {
		l.slope, l.slopes = l.slopes[0], nil
	}
	if l.slopes == nil {
		return forEach(c, len(dst), 16384, l, func(l *leakyLoop, _, lo, hi int) error {
			leakyRow(l.dst[lo:hi], l.src[lo:hi], l.slope)
			return nil
		})
	}
	// planes of `inner` elements share one slope: (N, C, …) → N·C planes
	planes := x.shape[0] * x.shape[1]
	l.inner = len(dst) / planes
	return forEach(c, planes, max(1, 16384/max(l.inner, 1)), l, func(l *leakyLoop, _, lo, hi int) error {
		inner := l.inner
		for p := lo; p < hi; p++ {
			leakyRow(l.dst[p*inner:(p+1)*inner], l.src[p*inner:(p+1)*inner], l.slopes[p%len(l.slopes)])
		}
		return nil
	})
}

// leakyLoop is cpuLeakyReLU's loop: one slope, or slopes per plane of inner elements.
type leakyLoop struct {
	dst, src []float32
	slope    float32
	slopes   []float32
	inner    int
}

func leakyRow(dst, src []float32, a float32) {
	dst = dst[:len(src)]
	for i, v := range src {
		if v < 0 {
			v *= a
		}
		dst[i] = v
	}
}

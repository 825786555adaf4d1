package upscale

import (
	"fmt"

	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/gpu"
)

// SPAN, the Swift Parameter-free Attention Network (Wan et al. 2024, "Swift
// Parameter-free Attention Network for Efficient Super-Resolution"; spandrel's
// architectures/SPAN/__arch/span.py). Its Conv3XC layers hold a 1×1 → 3×3 → 1×1 chain
// (conv.0-2) plus a 1×1 skip (sk); in eval mode spandrel folds them into the one 3×3
// eval_conv at every forward (update_params), so the stored eval_conv is ignored and
// forgeflow folds the chain once at load, in float64, into an F32 3×3 conv.

// conv3xc is a Conv3XC's parameters as stored.
type conv3xc struct {
	SK   nn.Conv `sd:"sk"`
	Conv []nn.Conv
	// EvalConv is bound so that a file without it fails (spandrel's detection requires
	// it) and is otherwise unused: spandrel recomputes it from the chain.
	EvalConv nn.Conv `sd:"eval_conv"`
}

type span struct {
	ConvCat   nn.Conv `sd:"conv_cat"`
	Upsampler nn.Conv `sd:"upsampler.0"`
	// conv1, conv2 and blocks are the folded Conv3XC: conv_1, conv_2 and c1_r..c3_r of
	// each Swift Parameter-free Attention Block (block_1..block_6).
	conv1, conv2 nn.Conv
	blocks       [6][3]nn.Conv
	// mean and rng normalise the input, (x − mean)·255, unless the file has "no_norm".
	mean, rng *gpu.Tensor
	half      *gpu.Tensor
	scale     int
}

// spanMean is SPAN's rgb_mean, which the state dict does not hold.
var spanMean = []float32{0.4488, 0.4371, 0.4040}

func loadSPAN(rt *gpu.Runtime, sd *stateDict) (*Model, error) {
	net := &span{}
	if err := sd.bind(rt, "", net); err != nil {
		return nil, err
	}
	fold := func(prefix string) (nn.Conv, error) {
		var c conv3xc
		if err := sd.bind(rt, prefix, &c); err != nil {
			return nn.Conv{}, err
		}
		c.Conv = make([]nn.Conv, 3)
		for i := range c.Conv {
			if err := sd.bind(rt, fmt.Sprintf("%sconv.%d.", prefix, i), &c.Conv[i]); err != nil {
				return nn.Conv{}, err
			}
		}
		f, err := c.fold(rt)
		if err != nil {
			return nn.Conv{}, fmt.Errorf("%s: %w", prefix, err)
		}
		return f, nil
	}
	var err error
	if net.conv1, err = fold("conv_1."); err != nil {
		return nil, err
	}
	if net.conv2, err = fold("conv_2."); err != nil {
		return nil, err
	}
	for b := range net.blocks {
		for j := range net.blocks[b] {
			if net.blocks[b][j], err = fold(fmt.Sprintf("block_%d.c%d_r.", b+1, j+1)); err != nil {
				return nil, err
			}
		}
	}
	in, nf := net.conv1.Weight.Dim(1), net.conv1.Weight.Dim(0)
	if net.ConvCat.Weight.Dim(1) != 4*nf || net.Upsampler.Weight.Dim(1) != nf {
		return nil, fmt.Errorf("conv_cat %v and upsampler %v do not fit %d features", net.ConvCat.Weight.Shape(), net.Upsampler.Weight.Shape(), nf)
	}
	scale, out, err := scaleAndChannels(net.Upsampler.Weight.Dim(0), in)
	if err != nil {
		return nil, err
	}
	net.scale = scale
	if !sd.has("no_norm") {
		if in != 3 {
			return nil, fmt.Errorf("a normalised SPAN takes RGB (3 channels), this one %d", in)
		}
		if net.mean, err = rt.FromFloat32(spanMean, 1, 3, 1, 1); err != nil {
			return nil, err
		}
		if net.rng, err = scalar(rt, 255); err != nil {
			return nil, err
		}
	}
	if net.half, err = scalar(rt, 0.5); err != nil {
		return nil, err
	}
	return &Model{Tags: []string{fmt.Sprintf("%dnf", nf)}, Scale: scale, InChannels: in, OutChannels: out, net: net}, nil
}

// fold is Conv3XC.update_params: the 1×1 (w1, b1) → 3×3 unpadded (w2, b2) → 1×1 (w3,
// b3) chain plus the zero-padded 1×1 skip as one 3×3 conv with padding 1:
//
//	W[o,i,y,x] = Σ_m Σ_k w3[o,m]·w2[m,k,y,x]·w1[k,i] + sk[o,i]·[y = x = 1]
//	b[o]       = Σ_m w3[o,m]·(Σ_k Σ_yx w2[m,k,y,x]·b1[k] + b2[m]) + b3[o] + sk_b[o]
func (c *conv3xc) fold(rt *gpu.Runtime) (nn.Conv, error) {
	vals := func(t *gpu.Tensor) ([]float64, error) {
		v, err := t.Float32()
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = float64(x)
		}
		return out, err
	}
	var w [3][]float64
	var b [3][]float64
	for i := range c.Conv {
		var err error
		if w[i], err = vals(c.Conv[i].Weight); err != nil {
			return nn.Conv{}, err
		}
		if b[i], err = vals(c.Conv[i].Bias); err != nil {
			return nn.Conv{}, err
		}
	}
	skw, err := vals(c.SK.Weight)
	if err != nil {
		return nn.Conv{}, err
	}
	skb, err := vals(c.SK.Bias)
	if err != nil {
		return nn.Conv{}, err
	}
	cin, mid := c.Conv[0].Weight.Dim(1), c.Conv[0].Weight.Dim(0)
	mid2, cout := c.Conv[1].Weight.Dim(0), c.Conv[2].Weight.Dim(0)
	shapes := [][]int{{mid, cin, 1, 1}, {mid2, mid, 3, 3}, {cout, mid2, 1, 1}}
	for i, want := range shapes {
		if got := c.Conv[i].Weight.Shape(); !equalInts(got, want) {
			return nn.Conv{}, fmt.Errorf("conv.%d.weight has shape %v, want %v", i, got, want)
		}
	}
	if got := c.SK.Weight.Shape(); !equalInts(got, []int{cout, cin, 1, 1}) {
		return nn.Conv{}, fmt.Errorf("sk.weight has shape %v, want [%d %d 1 1]", got, cout, cin)
	}
	// w21[m,i,yx] = Σ_k w2[m,k,yx]·w1[k,i]
	w21 := make([]float64, mid2*cin*9)
	for m := 0; m < mid2; m++ {
		for k := 0; k < mid; k++ {
			for i := 0; i < cin; i++ {
				a := w[0][k*cin+i]
				for yx := 0; yx < 9; yx++ {
					w21[(m*cin+i)*9+yx] += w[1][(m*mid+k)*9+yx] * a
				}
			}
		}
	}
	fw := make([]float32, cout*cin*9)
	fb := make([]float32, cout)
	for o := 0; o < cout; o++ {
		bias := b[2][o] + skb[o]
		for m := 0; m < mid2; m++ {
			a := w[2][o*mid2+m]
			inner := b[1][m]
			for k := 0; k < mid; k++ {
				for yx := 0; yx < 9; yx++ {
					inner += w[1][(m*mid+k)*9+yx] * b[0][k]
				}
			}
			bias += a * inner
		}
		fb[o] = float32(bias)
		for i := 0; i < cin; i++ {
			for yx := 0; yx < 9; yx++ {
				var s float64
				for m := 0; m < mid2; m++ {
					s += w[2][o*mid2+m] * w21[(m*cin+i)*9+yx]
				}
				if yx == 4 {
					s += skw[o*cin+i]
				}
				fw[(o*cin+i)*9+yx] = float32(s)
			}
		}
	}
	wt, err := rt.FromFloat32(fw, cout, cin, 3, 3)
	if err != nil {
		return nn.Conv{}, err
	}
	bt, err := rt.FromFloat32(fb, cout)
	if err != nil {
		wt.Release()
		return nn.Conv{}, err
	}
	return nn.Conv{Weight: wt, Bias: bt}, nil
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// forward is SPAN.forward.
func (n *span) forward(rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error) {
	var in *gpu.Tensor
	var err error
	if n.mean != nil { // x = (x − mean)·img_range
		in, err = gpu.Sub(rt, x, n.mean)
		in, err = then(in, err, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Mul(rt, t, n.rng) })
	} else {
		in, err = gpu.Contiguous(rt, x)
	}
	feature, err := then(in, err, func(t *gpu.Tensor) (*gpu.Tensor, error) { return n.conv1.Same(rt, t, 1) })
	if err != nil {
		return nil, err
	}
	defer feature.Release()
	b1, _, err := n.block(rt, 0, feature, false)
	if err != nil {
		return nil, err
	}
	defer b1.Release()
	out, _, err := n.block(rt, 1, b1, false)
	for b := 2; b < 5; b++ {
		out, err = then(out, err, func(t *gpu.Tensor) (*gpu.Tensor, error) {
			o, _, err := n.block(rt, b, t, false)
			return o, err
		})
	}
	if err != nil {
		return nil, err
	}
	b6, b52, err := n.block(rt, 5, out, true)
	out.Release()
	if err != nil {
		return nil, err
	}
	defer b52.Release()
	b6, err = then(b6, nil, func(t *gpu.Tensor) (*gpu.Tensor, error) { return n.conv2.Same(rt, t, 1) })
	if err != nil {
		return nil, err
	}
	cat, err := gpu.Concat(rt, 1, feature, b6, b1, b52)
	b6.Release()
	cat, err = then(cat, err, func(t *gpu.Tensor) (*gpu.Tensor, error) { return n.ConvCat.Same(rt, t, 1) })
	cat, err = then(cat, err, func(t *gpu.Tensor) (*gpu.Tensor, error) { return n.Upsampler.Same(rt, t, 1) })
	return then(cat, err, func(t *gpu.Tensor) (*gpu.Tensor, error) { return pixelShuffle(rt, t, n.scale) })
}

// block is SPAB b on x: its output and, when asked, out1 (the first conv's output,
// which SPAN takes from block_6).
func (n *span) block(rt *gpu.Runtime, b int, x *gpu.Tensor, keepOut1 bool) (out, out1 *gpu.Tensor, err error) {
	c := &n.blocks[b]
	out1, err = c[0].Same(rt, x, 1)
	if err != nil {
		return nil, nil, err
	}
	h, err := gpu.SiLU(rt, out1)
	if !keepOut1 {
		out1.Release()
		out1 = nil
	}
	release := func() {
		if out1 != nil {
			out1.Release()
		}
	}
	h, err = then(h, err, func(t *gpu.Tensor) (*gpu.Tensor, error) { return c[1].Same(rt, t, 1) })
	h, err = then(h, err, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.SiLU(rt, t) })
	out3, err := then(h, err, func(t *gpu.Tensor) (*gpu.Tensor, error) { return c[2].Same(rt, t, 1) })
	if err != nil {
		release()
		return nil, nil, err
	}
	defer out3.Release()
	att, err := gpu.Sigmoid(rt, out3) // sim_att = σ(out3) − ½
	att, err = then(att, err, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Sub(rt, t, n.half) })
	if err != nil {
		release()
		return nil, nil, err
	}
	defer att.Release()
	sum, err := gpu.Add(rt, out3, x)
	out, err = then(sum, err, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Mul(rt, t, att) })
	if err != nil {
		release()
		return nil, nil, err
	}
	return out, out1, nil
}

// peakBytes: feature, block_1's output, block_6's out1 and a block's input, its
// intermediates (about five maps at once), then the four-way concatenation.
func (n *span) peakBytes(h, w int) int64 {
	nf := n.conv1.Weight.Dim(0)
	return max(mapBytes(9*nf, h, w), mapBytes(8*nf, h, w)+mapBytes(2*n.Upsampler.Weight.Dim(0), h, w)) + mapBytes(n.conv1.Weight.Dim(1), h, w)
}

func (n *span) flops(h, w int) float64 {
	f := convFLOPs(n.conv1.Weight, h, w) + convFLOPs(n.conv2.Weight, h, w) + convFLOPs(n.ConvCat.Weight, h, w) + convFLOPs(n.Upsampler.Weight, h, w)
	for b := range n.blocks {
		for j := range n.blocks[b] {
			f += convFLOPs(n.blocks[b][j].Weight, h, w)
		}
	}
	return f
}

package upscale

import (
	"fmt"
	"math"

	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/gpu"
)

// Real-ESRGAN Compact, SRVGGNetCompact (Wang et al. 2021, "Real-ESRGAN: Training
// Real-World Blind Super-Resolution with Pure Synthetic Data"; spandrel's
// architectures/Compact): a plain stack of 3×3 convs with a PReLU per channel after all
// but the last, which makes out·s² channels for a pixel shuffle; the nearest-upsampled
// input is added, so the network learns the residual. The checkpoint's body is a
// ModuleList: body.0, body.2, … are the convs and body.1, body.3, … the PReLU weights.

type compact struct {
	convs []nn.Conv
	prelu []*gpu.Tensor // (nf) each, one after every conv but the last
	scale int
}

func loadCompact(rt *gpu.Runtime, sd *stateDict) (*Model, error) {
	last := sd.seqLen("body") - 1
	if last < 2 || last%2 != 0 {
		return nil, fmt.Errorf("body has %d modules; the last must be a conv at an even index", last+1)
	}
	net := &compact{}
	for i := 0; i <= last; i += 2 {
		var c nn.Conv
		if err := sd.bind(rt, fmt.Sprintf("body.%d.", i), &c); err != nil {
			return nil, err
		}
		net.convs = append(net.convs, c)
		if i == last {
			break
		}
		var a struct {
			Weight *gpu.Tensor `sd:"weight"`
		}
		if err := sd.bind(rt, fmt.Sprintf("body.%d.", i+1), &a); err != nil {
			return nil, err
		}
		if a.Weight.Rank() != 1 || a.Weight.Dim(0) != c.Weight.Dim(0) {
			return nil, fmt.Errorf("body.%d.weight has shape %v, want a PReLU weight (%d)", i+1, a.Weight.Shape(), c.Weight.Dim(0))
		}
		net.prelu = append(net.prelu, a.Weight)
	}
	in, nf := net.convs[0].Weight.Dim(1), net.convs[0].Weight.Dim(0)
	for i, c := range net.convs[1:] {
		if c.Weight.Dim(1) != nf || (i < len(net.convs)-2 && c.Weight.Dim(0) != nf) {
			return nil, fmt.Errorf("body.%d.weight has shape %v in a %d-feature body", 2*(i+1), c.Weight.Shape(), nf)
		}
	}
	scale, out, err := scaleAndChannels(net.convs[len(net.convs)-1].Weight.Dim(0), in)
	if err != nil {
		return nil, err
	}
	net.scale = scale
	return &Model{
		Tags:  []string{fmt.Sprintf("%dnf", nf), fmt.Sprintf("%dnc", len(net.convs)-2)},
		Scale: scale, InChannels: in, OutChannels: out, net: net,
	}, nil
}

// scaleAndChannels is spandrel's get_scale_and_output_channels: the scale s and output
// channels c with s²·c = x, trying c = the input channels, 3, 4, 1 in that order.
func scaleAndChannels(x, in int) (scale, out int, err error) {
	for _, c := range []int{in, 3, 4, 1} {
		if c > 0 && x%c == 0 {
			s := int(math.Sqrt(float64(x / c)))
			if s*s == x/c {
				return s, c, nil
			}
		}
	}
	return 0, 0, fmt.Errorf("the last conv makes %d channels, not scale² × 1, 3 or 4", x)
}

// forward is SRVGGNetCompact.forward.
func (n *compact) forward(rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error) {
	out, err := n.convs[0].Same(rt, x, 1)
	for i := range n.prelu {
		out, err = then(out, err, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.PReLU(rt, t, n.prelu[i]) })
		out, err = then(out, err, func(t *gpu.Tensor) (*gpu.Tensor, error) { return n.convs[i+1].Same(rt, t, 1) })
	}
	out, err = then(out, err, func(t *gpu.Tensor) (*gpu.Tensor, error) { return pixelShuffle(rt, t, n.scale) })
	return then(out, err, func(t *gpu.Tensor) (*gpu.Tensor, error) {
		base, err := nearest(rt, x, n.scale)
		if err != nil {
			return nil, err
		}
		defer base.Release()
		return gpu.Add(rt, t, base)
	})
}

// peakBytes: a conv output and its activation in the body; at the end the last conv's
// output, its shuffle, the upsampled input and the sum.
func (n *compact) peakBytes(h, w int) int64 {
	nf, last := n.convs[0].Weight.Dim(0), n.convs[len(n.convs)-1].Weight.Dim(0)
	return max(mapBytes(2*nf, h, w), mapBytes(4*last, h, w)) + mapBytes(n.convs[0].Weight.Dim(1), h, w)
}

func (n *compact) flops(h, w int) float64 {
	var f float64
	for i := range n.convs {
		f += convFLOPs(n.convs[i].Weight, h, w)
	}
	return f
}

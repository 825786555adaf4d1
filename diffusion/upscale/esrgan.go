package upscale

import (
	"fmt"
	"math"
	"regexp"
	"strconv"

	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/gpu"
)

// ESRGAN's RRDBNet (Wang et al. 2018, "ESRGAN: Enhanced Super-Resolution Generative
// Adversarial Networks"; spandrel's architectures/ESRGAN/__arch/RRDB.py and block.py),
// with Real-ESRGAN's pixel-unshuffle input for its 1× and 2× models and ESRGAN+'s extra
// 1×1 paths. Names are BasicSR's RRDBNet keys; the original ESRGAN layout
// ("model.0", "model.1.sub.N.RDBj.convk.0") and BSRGAN's ("RRDB_trunk", "trunk_conv",
// "upconvN", "HRconv") are mapped onto them (esrganNames).

// rdb is ResidualDenseBlock_5C: five 3×3 convs over the concatenation of the input and
// every earlier output, LeakyReLU(0.2) after the first four.
type rdb struct {
	Conv1 nn.Conv `sd:"conv1"`
	Conv2 nn.Conv `sd:"conv2"`
	Conv3 nn.Conv `sd:"conv3"`
	Conv4 nn.Conv `sd:"conv4"`
	Conv5 nn.Conv `sd:"conv5"`
	// Conv1x1 is ESRGAN+'s bias-free 1×1 conv from the input, added to the second
	// output (which is added to the fourth).
	Conv1x1 struct {
		Weight *gpu.Tensor `sd:"weight,optional"`
	} `sd:"conv1x1"`
}

// rrdb is three residual dense blocks with a scaled residual around them.
type rrdb struct {
	RDB1 rdb `sd:"rdb1"`
	RDB2 rdb `sd:"rdb2"`
	RDB3 rdb `sd:"rdb3"`
}

type esrgan struct {
	ConvFirst nn.Conv `sd:"conv_first"`
	Body      []rrdb  `sd:"body"`
	ConvBody  nn.Conv `sd:"conv_body"`
	ConvHR    nn.Conv `sd:"conv_hr"`
	ConvLast  nn.Conv `sd:"conv_last"`
	// up are conv_up1, conv_up2, …: nearest 2× upsampling, conv, LeakyReLU each.
	up []nn.Conv
	// shuffle is the pixel-unshuffle factor of the input (Real-ESRGAN 2×: 2, 1×: 4), or 1.
	shuffle int
	// residual is 0.2, the dense blocks' residual scale.
	residual *gpu.Tensor
}

const esrganSlope = 0.2 // LeakyReLU's negative slope (block.act "leakyrelu")

func loadESRGAN(rt *gpu.Runtime, sd *stateDict) (*Model, error) {
	names, err := esrganNames(sd)
	if err != nil {
		return nil, err
	}
	sd = newStateDict(sd.src, names)
	net := &esrgan{shuffle: 1}
	if err := sd.bind(rt, "", net); err != nil {
		return nil, err
	}
	if len(net.Body) == 0 {
		return nil, fmt.Errorf("no RRDB blocks")
	}
	for u := 1; sd.has(fmt.Sprintf("conv_up%d.weight", u)); u++ {
		var c nn.Conv
		if err := sd.bind(rt, fmt.Sprintf("conv_up%d.", u), &c); err != nil {
			return nil, err
		}
		net.up = append(net.up, c)
	}
	in, nf := net.ConvFirst.Weight.Dim(1), net.ConvFirst.Weight.Dim(0)
	out := net.ConvLast.Weight.Dim(0)
	plus := net.Body[0].RDB1.Conv1x1.Weight != nil
	scale := 1 << len(net.up)
	// spandrel: a pixel unshuffle when the input has 4 or 16 times the output's channels.
	if in == 4*out || in == 16*out {
		net.shuffle = int(math.Sqrt(float64(in / out)))
	}
	if scale%net.shuffle != 0 {
		return nil, fmt.Errorf("a %d× network behind a pixel unshuffle by %d", scale, net.shuffle)
	}
	if err := net.check(nf); err != nil {
		return nil, err
	}
	if net.residual, err = scalar(rt, 0.2); err != nil {
		return nil, err
	}
	tags := []string{fmt.Sprintf("%dnf", nf), fmt.Sprintf("%dnb", len(net.Body))}
	if plus {
		tags = append([]string{"ESRGAN+"}, tags...)
	}
	m := &Model{Tags: tags, Scale: scale, InChannels: in, OutChannels: out, net: net,
		Size: SizeRequirements{Minimum: 2, MultipleOf: 1}}
	if net.shuffle > 1 {
		m.Scale /= net.shuffle
		m.InChannels /= net.shuffle * net.shuffle
		m.Tags = append(m.Tags, "unshuffle")
		// spandrel pads to a multiple of 4 (and its minimum 2 rounds up to 4).
		m.Size = SizeRequirements{Minimum: 4, MultipleOf: 4}
	}
	return m, nil
}

// check verifies that the convs' shapes chain (a damaged or hand-edited file fails
// here, naming the layer, rather than inside a conv).
func (n *esrgan) check(nf int) error {
	gc := n.Body[0].RDB1.Conv1.Weight.Dim(0)
	for i := range n.Body {
		for j, b := range []*rdb{&n.Body[i].RDB1, &n.Body[i].RDB2, &n.Body[i].RDB3} {
			for k, c := range []*nn.Conv{&b.Conv1, &b.Conv2, &b.Conv3, &b.Conv4, &b.Conv5} {
				want := []int{gc, nf + k*gc}
				if k == 4 {
					want[0] = nf
				}
				if c.Weight.Dim(0) != want[0] || c.Weight.Dim(1) != want[1] {
					return fmt.Errorf("body.%d.rdb%d.conv%d.weight has shape %v, want (%d, %d, k, k)", i, j+1, k+1, c.Weight.Shape(), want[0], want[1])
				}
			}
		}
	}
	for _, c := range append([]nn.Conv{n.ConvBody, n.ConvHR}, n.up...) {
		if c.Weight.Dim(0) != nf || c.Weight.Dim(1) != nf {
			return fmt.Errorf("a trunk conv has shape %v, want (%d, %d, k, k)", c.Weight.Shape(), nf, nf)
		}
	}
	if n.ConvLast.Weight.Dim(1) != nf {
		return fmt.Errorf("conv_last.weight has shape %v, want (out, %d, k, k)", n.ConvLast.Weight.Shape(), nf)
	}
	return nil
}

// forward is RRDBNet.forward: unshuffle (the padding to a multiple of the factor is
// the model's size requirement), conv_first, the RRDB trunk with its long skip, the
// upsampling convs, conv_hr and conv_last.
func (n *esrgan) forward(rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error) {
	var fea *gpu.Tensor
	var err error
	if n.shuffle > 1 {
		u, uerr := pixelUnshuffle(rt, x, n.shuffle)
		fea, err = then(u, uerr, func(t *gpu.Tensor) (*gpu.Tensor, error) { return n.ConvFirst.Same(rt, t, 1) })
	} else {
		fea, err = n.ConvFirst.Same(rt, x, 1)
	}
	if err != nil {
		return nil, err
	}
	trunk, err := n.Body[0].forward(rt, n, fea)
	for i := 1; i < len(n.Body); i++ {
		trunk, err = then(trunk, err, func(t *gpu.Tensor) (*gpu.Tensor, error) { return n.Body[i].forward(rt, n, t) })
	}
	trunk, err = then(trunk, err, func(t *gpu.Tensor) (*gpu.Tensor, error) { return n.ConvBody.Same(rt, t, 1) })
	fea, err = then(fea, err, func(f *gpu.Tensor) (*gpu.Tensor, error) {
		defer trunk.Release()
		return gpu.Add(rt, f, trunk)
	})
	for i := range n.up {
		fea, err = then(fea, err, func(t *gpu.Tensor) (*gpu.Tensor, error) { return nearest(rt, t, 2) })
		fea, err = then(fea, err, func(t *gpu.Tensor) (*gpu.Tensor, error) { return n.up[i].Same(rt, t, 1) })
		fea, err = then(fea, err, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.LeakyReLU(rt, t, esrganSlope) })
	}
	fea, err = then(fea, err, func(t *gpu.Tensor) (*gpu.Tensor, error) { return n.ConvHR.Same(rt, t, 1) })
	fea, err = then(fea, err, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.LeakyReLU(rt, t, esrganSlope) })
	return then(fea, err, func(t *gpu.Tensor) (*gpu.Tensor, error) { return n.ConvLast.Same(rt, t, 1) })
}

func (b *rrdb) forward(rt *gpu.Runtime, n *esrgan, x *gpu.Tensor) (*gpu.Tensor, error) {
	out, err := b.RDB1.forward(rt, n, x)
	out, err = then(out, err, func(t *gpu.Tensor) (*gpu.Tensor, error) { return b.RDB2.forward(rt, n, t) })
	out, err = then(out, err, func(t *gpu.Tensor) (*gpu.Tensor, error) { return b.RDB3.forward(rt, n, t) })
	return then(out, err, func(t *gpu.Tensor) (*gpu.Tensor, error) { return n.scaledResidual(rt, t, x) })
}

// scaledResidual is out·0.2 + x.
func (n *esrgan) scaledResidual(rt *gpu.Runtime, out, x *gpu.Tensor) (*gpu.Tensor, error) {
	s, err := gpu.Mul(rt, out, n.residual)
	return then(s, err, func(s *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Add(rt, s, x) })
}

func (b *rdb) forward(rt *gpu.Runtime, n *esrgan, x *gpu.Tensor) (*gpu.Tensor, error) {
	plus := b.Conv1x1.Weight != nil
	// cat is torch.cat((x, x1, …, xk), 1) as it grows; x itself at first.
	cat := x
	var x2 *gpu.Tensor // kept for ESRGAN+'s x4 + x2
	defer func() {
		if cat != x {
			cat.Release()
		}
		if x2 != nil {
			x2.Release()
		}
	}()
	for k, c := range []*nn.Conv{&b.Conv1, &b.Conv2, &b.Conv3, &b.Conv4} {
		y, err := c.Same(rt, cat, 1)
		xk, err := then(y, err, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.LeakyReLU(rt, t, esrganSlope) })
		switch {
		case plus && k == 1 && err == nil: // x2 = x2 + conv1x1(x)
			var p *gpu.Tensor
			p, err = gpu.Conv2D(rt, x, b.Conv1x1.Weight, nil, 1, 0)
			xk, err = then(xk, err, func(t *gpu.Tensor) (*gpu.Tensor, error) {
				defer p.Release()
				return gpu.Add(rt, t, p)
			})
		case plus && k == 3: // x4 = x4 + x2
			xk, err = then(xk, err, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Add(rt, t, x2) })
		}
		if err != nil {
			return nil, err
		}
		next, err := gpu.Concat(rt, 1, cat, xk)
		if plus && k == 1 {
			x2 = xk
		} else {
			xk.Release()
		}
		if err != nil {
			return nil, err
		}
		if cat != x {
			cat.Release()
		}
		cat = next
	}
	x5, err := b.Conv5.Same(rt, cat, 1)
	return then(x5, err, func(t *gpu.Tensor) (*gpu.Tensor, error) { return n.scaledResidual(rt, t, x) })
}

// peakBytes: in the trunk, the block and dense-block inputs, the growing concatenation
// (the old and the new one during a concat) and a conv output and its activation; after
// each upsampling, two maps of nf channels at that size.
func (n *esrgan) peakBytes(h, w int) int64 {
	nf, gc := n.ConvFirst.Weight.Dim(0), n.Body[0].RDB1.Conv1.Weight.Dim(0)
	lh, lw := h/n.shuffle, w/n.shuffle
	uh, uw := lh<<len(n.up), lw<<len(n.up)
	peak := max(mapBytes(5*nf+9*gc, lh, lw), mapBytes(2*nf, uh, uw))
	return peak + mapBytes(n.ConvFirst.Weight.Dim(1), lh, lw) + mapBytes(n.ConvLast.Weight.Dim(0), uh, uw)
}

func (n *esrgan) flops(h, w int) float64 {
	lh, lw := h/n.shuffle, w/n.shuffle
	f := convFLOPs(n.ConvFirst.Weight, lh, lw) + convFLOPs(n.ConvBody.Weight, lh, lw)
	for i := range n.Body {
		for _, b := range []*rdb{&n.Body[i].RDB1, &n.Body[i].RDB2, &n.Body[i].RDB3} {
			for _, c := range []*nn.Conv{&b.Conv1, &b.Conv2, &b.Conv3, &b.Conv4, &b.Conv5} {
				f += convFLOPs(c.Weight, lh, lw)
			}
			if b.Conv1x1.Weight != nil {
				f += convFLOPs(b.Conv1x1.Weight, lh, lw)
			}
		}
	}
	for i := range n.up {
		lh, lw = 2*lh, 2*lw
		f += convFLOPs(n.up[i].Weight, lh, lw)
	}
	return f + convFLOPs(n.ConvHR.Weight, lh, lw) + convFLOPs(n.ConvLast.Weight, lh, lw)
}

// Key layouts of RRDBNet checkpoints, mapped to BasicSR's names (the reverse of
// spandrel's _new_to_old_arch, which converts to the original layout).
var (
	oldRDB   = regexp.MustCompile(`^model\.1\.sub\.(\d+)\.RDB([123])\.(conv[1-5]\.0|conv1x1)\.(weight|bias)$`)
	oldSeq   = regexp.MustCompile(`^model\.(\d+)\.(weight|bias)$`)
	bsrRDB   = regexp.MustCompile(`^RRDB_trunk\.(\d+)\.RDB([123])\.(conv[1-5])\.(weight|bias)$`)
	newUp    = regexp.MustCompile(`^(?:upconv|conv_up)(\d)\.(weight|bias)$`)
	newPlain = map[string]string{"trunk_conv": "conv_body", "HRconv": "conv_hr"}
)

// esrganNames maps BasicSR names to the stored keys of any of the three layouts.
func esrganNames(sd *stateDict) (map[string]string, error) {
	names := map[string]string{}
	if sd.has("model.0.weight") {
		// model.0 conv_first, model.1 the shortcut block (sub.0…sub.nb-1 RRDBs, sub.nb
		// the trunk conv), then [Upsample, Conv, LeakyReLU] per 2× (convs at 3, 6, …),
		// the HR conv, LeakyReLU and the last conv: 3k+5 modules for 2^k.
		seq := sd.seqLen("model")
		k := (seq - 5) / 3
		if seq < 5 || (seq-5)%3 != 0 {
			return nil, fmt.Errorf("the model.N sequence has %d entries, not 3k+5", seq)
		}
		nb := sd.seqLen("model.1.sub") - 1
		for _, key := range sd.keys {
			stored := sd.stored[key]
			if m := oldRDB.FindStringSubmatch(key); m != nil {
				c := m[3]
				if c != "conv1x1" {
					c = c[:len(c)-2]
				}
				names[fmt.Sprintf("body.%s.rdb%s.%s.%s", m[1], m[2], c, m[4])] = stored
				continue
			}
			if rest, ok := cutPrefix(key, fmt.Sprintf("model.1.sub.%d.", nb)); ok {
				names["conv_body."+rest] = stored
				continue
			}
			m := oldSeq.FindStringSubmatch(key)
			if m == nil {
				continue
			}
			i, _ := strconv.Atoi(m[1])
			switch {
			case i == 0:
				names["conv_first."+m[2]] = stored
			case i%3 == 0 && i/3 <= k:
				names[fmt.Sprintf("conv_up%d.%s", i/3, m[2])] = stored
			case i == 3*k+2:
				names["conv_hr."+m[2]] = stored
			case i == 3*k+4:
				names["conv_last."+m[2]] = stored
			}
		}
		return names, nil
	}
	for _, key := range sd.keys {
		stored := sd.stored[key]
		if m := bsrRDB.FindStringSubmatch(key); m != nil {
			names[fmt.Sprintf("body.%s.rdb%s.%s.%s", m[1], m[2], m[3], m[4])] = stored
			continue
		}
		if m := newUp.FindStringSubmatch(key); m != nil {
			names["conv_up"+m[1]+"."+m[2]] = stored
			continue
		}
		if base, param, ok := cutLast(key); ok {
			if to, ok := newPlain[base]; ok {
				names[to+"."+param] = stored
				continue
			}
		}
		names[key] = stored
	}
	return names, nil
}

func cutPrefix(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):], true
	}
	return "", false
}

// cutLast splits "a.b.weight" into "a.b" and "weight".
func cutLast(s string) (string, string, bool) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '.' {
			return s[:i], s[i+1:], true
		}
	}
	return "", "", false
}

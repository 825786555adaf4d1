package upscale

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
)

// A float64 reference of the three networks, written from spandrel's published
// definitions (architectures/ESRGAN/__arch/RRDB.py with __arch_helpers/block.py,
// Compact/__arch/SRVGG.py, SPAN/__arch/span.py, __helpers/size_req.py pad_tensor and
// model_descriptor.py ImageModelDescriptor.__call__) and comfy/utils.py tiled_scale,
// independently of the package: naive direct convolutions, the original ESRGAN layout
// that spandrel converts every RRDBNet to, Conv3XC folded with convolutions of the
// weights as update_params does.

// tensor is a float64 NCHW array (N = 1) or a weight.
type tensor struct {
	shape []int
	v     []float64
}

func newT(shape ...int) tensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return tensor{shape: shape, v: make([]float64, n)}
}

// stateRef is a checkpoint's tensors by stored name.
type stateRef map[string]tensor

// conv2d is torch.nn.functional.conv2d(x, w, b, stride 1, padding p) on (C, H, W).
func conv2d(x, w tensor, b []float64, p int) tensor {
	c, h, wd := x.shape[0], x.shape[1], x.shape[2]
	co, ci, kh, kw := w.shape[0], w.shape[1], w.shape[2], w.shape[3]
	if ci != c {
		panic(fmt.Sprintf("conv2d: input %v, weight %v", x.shape, w.shape))
	}
	oh, ow := h+2*p-kh+1, wd+2*p-kw+1
	out := newT(co, oh, ow)
	for o := 0; o < co; o++ {
		for y := 0; y < oh; y++ {
			for xx := 0; xx < ow; xx++ {
				s := 0.0
				if b != nil {
					s = b[o]
				}
				for i := 0; i < ci; i++ {
					for ky := 0; ky < kh; ky++ {
						sy := y + ky - p
						if sy < 0 || sy >= h {
							continue
						}
						for kx := 0; kx < kw; kx++ {
							sx := xx + kx - p
							if sx < 0 || sx >= wd {
								continue
							}
							s += x.v[(i*h+sy)*wd+sx] * w.v[((o*ci+i)*kh+ky)*kw+kx]
						}
					}
				}
				out.v[(o*oh+y)*ow+xx] = s
			}
		}
	}
	return out
}

// convNamed runs the conv stored as name.weight / name.bias with "same" padding.
func (s stateRef) conv(name string, x tensor) tensor {
	w := s[name+".weight"]
	var b []float64
	if t, ok := s[name+".bias"]; ok {
		b = t.v
	}
	return conv2d(x, w, b, w.shape[2]/2)
}

func mapT(x tensor, f func(float64) float64) tensor {
	out := tensor{shape: x.shape, v: make([]float64, len(x.v))}
	for i, v := range x.v {
		out.v[i] = f(v)
	}
	return out
}

func lrelu(a float64) func(float64) float64 {
	return func(v float64) float64 {
		if v < 0 {
			return a * v
		}
		return v
	}
}

func add(a, b tensor) tensor {
	out := tensor{shape: a.shape, v: make([]float64, len(a.v))}
	for i := range a.v {
		out.v[i] = a.v[i] + b.v[i]
	}
	return out
}

func cat(ts ...tensor) tensor {
	h, w := ts[0].shape[1], ts[0].shape[2]
	c := 0
	var v []float64
	for _, t := range ts {
		c += t.shape[0]
		v = append(v, t.v...)
	}
	return tensor{shape: []int{c, h, w}, v: v}
}

// upNearest is F.interpolate(scale_factor=s, mode="nearest").
func upNearest(x tensor, s int) tensor {
	c, h, w := x.shape[0], x.shape[1], x.shape[2]
	out := newT(c, h*s, w*s)
	for ch := 0; ch < c; ch++ {
		for y := 0; y < h*s; y++ {
			for xx := 0; xx < w*s; xx++ {
				out.v[(ch*h*s+y)*w*s+xx] = x.v[(ch*h+y/s)*w+xx/s]
			}
		}
	}
	return out
}

// shuffle is nn.PixelShuffle(r).
func shuffle(x tensor, r int) tensor {
	c, h, w := x.shape[0]/(r*r), x.shape[1], x.shape[2]
	out := newT(c, h*r, w*r)
	for ch := 0; ch < c; ch++ {
		for y := 0; y < h*r; y++ {
			for xx := 0; xx < w*r; xx++ {
				src := ch*r*r + (y%r)*r + xx%r
				out.v[(ch*h*r+y)*w*r+xx] = x.v[(src*h+y/r)*w+xx/r]
			}
		}
	}
	return out
}

// unshuffle is torch.pixel_unshuffle(x, r).
func unshuffle(x tensor, r int) tensor {
	c, h, w := x.shape[0], x.shape[1]/r, x.shape[2]/r
	out := newT(c*r*r, h, w)
	for ch := 0; ch < c; ch++ {
		for i := 0; i < r; i++ {
			for j := 0; j < r; j++ {
				for y := 0; y < h; y++ {
					for xx := 0; xx < w; xx++ {
						out.v[((ch*r*r+i*r+j)*h+y)*w+xx] = x.v[(ch*x.shape[1]+y*r+i)*x.shape[2]+xx*r+j]
					}
				}
			}
		}
	}
	return out
}

// padRef is F.pad(x, (0, pw, 0, ph), mode) for "reflect" and "replicate".
func padRef(x tensor, ph, pw int, mode string) tensor {
	c, h, w := x.shape[0], x.shape[1], x.shape[2]
	idx := func(i, n int) int {
		if i < n {
			return i
		}
		if mode == "reflect" {
			return 2*(n-1) - i
		}
		return n - 1
	}
	out := newT(c, h+ph, w+pw)
	for ch := 0; ch < c; ch++ {
		for y := 0; y < h+ph; y++ {
			for xx := 0; xx < w+pw; xx++ {
				out.v[(ch*(h+ph)+y)*(w+pw)+xx] = x.v[(ch*h+idx(y, h))*w+idx(xx, w)]
			}
		}
	}
	return out
}

// --- ESRGAN (old layout, as spandrel runs every RRDBNet) ---

var (
	newRDBRef = []*regexp.Regexp{regexp.MustCompile(`^RRDB_trunk\.(\d+)\.RDB(\d)\.conv(\d+)\.(weight|bias)$`), regexp.MustCompile(`^body\.(\d+)\.rdb(\d)\.conv(\d+)\.(weight|bias)$`)}
	upconvRef = regexp.MustCompile(`^(upconv|conv_up)(\d)\.(weight|bias)$`)
)

// toOldArch is spandrel's _to_old_arch / _new_to_old_arch.
func toOldArch(s stateRef) stateRef {
	if _, ok := s["conv_first.weight"]; !ok {
		return s
	}
	old := stateRef{}
	nb := 0
	for k := range s {
		for _, re := range newRDBRef {
			if m := re.FindStringSubmatch(k); m != nil {
				i, _ := strconv.Atoi(m[1])
				nb = max(nb, i+1)
				old[fmt.Sprintf("model.1.sub.%s.RDB%s.conv%s.0.%s", m[1], m[2], m[3], m[4])] = s[k]
			}
		}
	}
	for _, kind := range []string{"weight", "bias"} {
		old["model.0."+kind] = s["conv_first."+kind]
		for _, n := range []string{"trunk_conv.", "conv_body."} {
			if t, ok := s[n+kind]; ok {
				old[fmt.Sprintf("model.1.sub.%d.%s", nb, kind)] = t
			}
		}
	}
	maxUp := 0
	for k := range s {
		if m := upconvRef.FindStringSubmatch(k); m != nil {
			n, _ := strconv.Atoi(m[2])
			old[fmt.Sprintf("model.%d.%s", 3*n, m[3])] = s[k]
			maxUp = max(maxUp, 3*n)
		}
	}
	for k, t := range s {
		switch k {
		case "HRconv.weight", "conv_hr.weight":
			old[fmt.Sprintf("model.%d.weight", maxUp+2)] = t
		case "HRconv.bias", "conv_hr.bias":
			old[fmt.Sprintf("model.%d.bias", maxUp+2)] = t
		case "conv_last.weight", "conv_last.bias":
			old[fmt.Sprintf("model.%d.%s", maxUp+4, k[len("conv_last."):])] = t
		}
	}
	return old
}

func seqLen(s stateRef, prefix string) int {
	n := 0
	for k := range s {
		if len(k) > len(prefix) && k[:len(prefix)] == prefix {
			rest := k[len(prefix):]
			for i := 0; i < len(rest); i++ {
				if rest[i] == '.' {
					rest = rest[:i]
					break
				}
			}
			if v, err := strconv.Atoi(rest); err == nil {
				n = max(n, v+1)
			}
		}
	}
	return n
}

// esrganRef is the RRDBNet descriptor: (scale, in channels, multiple_of, forward).
func esrganRef(s stateRef) (scale, in, multiple int, fwd func(tensor) tensor) {
	s = toOldArch(s)
	seq := seqLen(s, "model.")
	nb := seqLen(s, "model.1.sub.") - 1
	in = s["model.0.weight"].shape[1]
	out := s[fmt.Sprintf("model.%d.weight", seq-1)].shape[0]
	scale = 1 << ((seq - 5) / 3)
	shuffleF := 0
	if in == 4*out || in == 16*out {
		shuffleF = int(math.Sqrt(float64(in / out)))
	}
	plus := false
	for k := range s {
		if regexp.MustCompile(`\.conv1x1\.`).MatchString(k) {
			plus = true
		}
	}
	rdb := func(p string, x tensor) tensor {
		c := func(i int, t tensor) tensor { return s.conv(fmt.Sprintf("%s.conv%d.0", p, i), t) }
		x1 := mapT(c(1, x), lrelu(0.2))
		x2 := mapT(c(2, cat(x, x1)), lrelu(0.2))
		if plus {
			x2 = add(x2, conv2d(x, s[p+".conv1x1.weight"], nil, 0))
		}
		x3 := mapT(c(3, cat(x, x1, x2)), lrelu(0.2))
		x4 := mapT(c(4, cat(x, x1, x2, x3)), lrelu(0.2))
		if plus {
			x4 = add(x4, x2)
		}
		x5 := c(5, cat(x, x1, x2, x3, x4))
		return add(mapT(x5, func(v float64) float64 { return 0.2 * v }), x)
	}
	model := func(x tensor) tensor {
		fea := s.conv("model.0", x)
		t := fea
		for i := 0; i < nb; i++ {
			p := fmt.Sprintf("model.1.sub.%d", i)
			o := rdb(p+".RDB3", rdb(p+".RDB2", rdb(p+".RDB1", t)))
			t = add(mapT(o, func(v float64) float64 { return 0.2 * v }), t)
		}
		t = s.conv(fmt.Sprintf("model.1.sub.%d", nb), t)
		h := add(fea, t)
		k := (seq - 5) / 3
		for u := 1; u <= k; u++ {
			h = mapT(s.conv(fmt.Sprintf("model.%d", 3*u), upNearest(h, 2)), lrelu(0.2))
		}
		h = mapT(s.conv(fmt.Sprintf("model.%d", 3*k+2), h), lrelu(0.2))
		return s.conv(fmt.Sprintf("model.%d", 3*k+4), h)
	}
	if shuffleF == 0 {
		return scale, in, 1, model
	}
	trueScale := scale / shuffleF
	return trueScale, in / (shuffleF * shuffleF), 4, func(x tensor) tensor {
		h, w := x.shape[1], x.shape[2]
		ph, pw := (shuffleF-h%shuffleF)%shuffleF, (shuffleF-w%shuffleF)%shuffleF
		y := model(unshuffle(padRef(x, ph, pw, "reflect"), shuffleF))
		return crop(y, h*trueScale, w*trueScale)
	}
}

func crop(x tensor, h, w int) tensor {
	c, H, W := x.shape[0], x.shape[1], x.shape[2]
	out := newT(c, h, w)
	for ch := 0; ch < c; ch++ {
		for y := 0; y < h; y++ {
			copy(out.v[(ch*h+y)*w:(ch*h+y+1)*w], x.v[(ch*H+y)*W:(ch*H+y)*W+w])
		}
	}
	return out
}

// --- Compact ---

func scaleChannels(x, in int) (int, int) {
	for _, c := range []int{in, 3, 4, 1} {
		if x%c == 0 {
			r := math.Sqrt(float64(x / c))
			if r == math.Floor(r) {
				return int(r), c
			}
		}
	}
	panic("no scale")
}

func compactRef(s stateRef) (scale, in int, fwd func(tensor) tensor) {
	last := seqLen(s, "body.") - 1
	in = s["body.0.weight"].shape[1]
	scale, _ = scaleChannels(s[fmt.Sprintf("body.%d.bias", last)].shape[0], in)
	return scale, in, func(x tensor) tensor {
		out := x
		for i := 0; i <= last; i++ {
			if i%2 == 0 {
				out = s.conv(fmt.Sprintf("body.%d", i), out)
				continue
			}
			a := s[fmt.Sprintf("body.%d.weight", i)].v
			hw := out.shape[1] * out.shape[2]
			o := tensor{shape: out.shape, v: make([]float64, len(out.v))}
			for j, v := range out.v {
				o.v[j] = lrelu(a[j/hw])(v)
			}
			out = o
		}
		return add(shuffle(out, scale), upNearest(x, scale))
	}
}

// --- SPAN ---

// flipPermute is w.flip(2, 3).permute(1, 0, 2, 3).
func flipPermute(w tensor) tensor {
	a, b, kh, kw := w.shape[0], w.shape[1], w.shape[2], w.shape[3]
	out := newT(b, a, kh, kw)
	for i := 0; i < a; i++ {
		for j := 0; j < b; j++ {
			for y := 0; y < kh; y++ {
				for x := 0; x < kw; x++ {
					out.v[((j*a+i)*kh+y)*kw+x] = w.v[((i*b+j)*kh+(kh-1-y))*kw+(kw-1-x)]
				}
			}
		}
	}
	return out
}

// conv4d is F.conv2d on a batch (N, C, H, W) with padding p, no bias.
func conv4d(x, w tensor, p int) tensor {
	n := x.shape[0]
	var out tensor
	for i := 0; i < n; i++ {
		per := len(x.v) / n
		xi := tensor{shape: x.shape[1:], v: x.v[i*per : (i+1)*per]}
		y := conv2d(xi, w, nil, p)
		if out.v == nil {
			out = newT(append([]int{n}, y.shape...)...)
		}
		copy(out.v[i*len(y.v):], y.v)
	}
	return out
}

// conv3xcRef is Conv3XC.update_params: the folded eval_conv weight and bias.
func conv3xcRef(s stateRef, p string) (tensor, []float64) {
	w1, b1 := s[p+".conv.0.weight"], s[p+".conv.0.bias"].v
	w2, b2 := s[p+".conv.1.weight"], s[p+".conv.1.bias"].v
	w3, b3 := s[p+".conv.2.weight"], s[p+".conv.2.bias"].v
	w := flipPermute(conv4d(flipPermute(w1), w2, 2))
	b := make([]float64, len(b2))
	for o := range b {
		b[o] = b2[o]
		per := len(w2.v) / w2.shape[0]
		for j := 0; j < per; j++ {
			b[o] += w2.v[o*per+j] * b1[j/(w2.shape[2]*w2.shape[3])]
		}
	}
	wc := flipPermute(conv4d(flipPermute(w), w3, 0))
	bc := make([]float64, len(b3))
	for o := range bc {
		bc[o] = b3[o]
		for j := range b {
			bc[o] += w3.v[o*len(b)+j] * b[j]
		}
	}
	sk, skb := s[p+".sk.weight"], s[p+".sk.bias"].v
	for o := 0; o < sk.shape[0]; o++ {
		for i := 0; i < sk.shape[1]; i++ {
			wc.v[((o*sk.shape[1]+i)*3+1)*3+1] += sk.v[o*sk.shape[1]+i]
		}
		bc[o] += skb[o]
	}
	return wc, bc
}

func spanRef(s stateRef) (scale, in int, fwd func(tensor) tensor) {
	in = s["conv_1.sk.weight"].shape[1]
	scale, _ = scaleChannels(s["upsampler.0.weight"].shape[0], in)
	_, norm := s["no_norm"]
	norm = !norm
	xc := func(p string, x tensor) tensor {
		w, b := conv3xcRef(s, p)
		return conv2d(x, w, b, 1)
	}
	silu := func(v float64) float64 { return v / (1 + math.Exp(-v)) }
	block := func(p string, x tensor) (tensor, tensor) {
		out1 := xc(p+".c1_r", x)
		out2 := xc(p+".c2_r", mapT(out1, silu))
		out3 := xc(p+".c3_r", mapT(out2, silu))
		sum := add(out3, x)
		o := tensor{shape: sum.shape, v: make([]float64, len(sum.v))}
		for i := range o.v {
			o.v[i] = sum.v[i] * (1/(1+math.Exp(-out3.v[i])) - 0.5)
		}
		return o, out1
	}
	mean := []float64{0.4488, 0.4371, 0.4040}
	return scale, in, func(x tensor) tensor {
		if norm {
			hw := x.shape[1] * x.shape[2]
			x = tensor{shape: x.shape, v: append([]float64(nil), x.v...)}
			for i := range x.v {
				x.v[i] = (x.v[i] - float64(float32(mean[i/hw]))) * 255
			}
		}
		f := xc("conv_1", x)
		b1, _ := block("block_1", f)
		b := b1
		for i := 2; i <= 5; i++ {
			b, _ = block(fmt.Sprintf("block_%d", i), b)
		}
		b6, b52 := block("block_6", b)
		b6 = xc("conv_2", b6)
		out := s.conv("conv_cat", cat(f, b6, b1, b52))
		return shuffle(s.conv("upsampler.0", out), scale)
	}
}

// --- the descriptor and tiled_scale ---

type refModel struct {
	scale, in     int
	minimum, mult int
	forward       func(tensor) tensor
}

// describe builds the reference descriptor of a checkpoint.
func describe(arch string, s stateRef) refModel {
	switch arch {
	case "ESRGAN":
		scale, in, mult, f := esrganRef(s)
		minimum := 2
		if mult == 4 {
			minimum = 4
		}
		return refModel{scale: scale, in: in, minimum: minimum, mult: mult, forward: f}
	case "Compact":
		scale, in, f := compactRef(s)
		return refModel{scale: scale, in: in, mult: 1, forward: f}
	}
	scale, in, f := spanRef(s)
	return refModel{scale: scale, in: in, mult: 1, forward: f}
}

// call is ImageModelDescriptor.__call__ on (C, h, w): pad_tensor, forward, clamp_(0, 1),
// crop.
func (m refModel) call(x tensor) tensor {
	h, w := x.shape[1], x.shape[2]
	up := func(v int) int {
		v = max(v, m.minimum)
		return (v + m.mult - 1) / m.mult * m.mult
	}
	ph, pw := up(h)-h, up(w)-w
	if ph > 0 || pw > 0 {
		rh, rw := min(ph, h-1), min(pw, w-1)
		x = padRef(padRef(x, rh, rw, "reflect"), ph-rh, pw-rw, "replicate")
	}
	y := mapT(m.forward(x), func(v float64) float64 { return math.Min(1, math.Max(0, v)) })
	return crop(y, h*m.scale, w*m.scale)
}

// tiledScale is comfy.utils.tiled_scale_multidim for 2-D with out_channels 3, in
// float64 (the mask ramps in float32 as torch computes them).
func (m refModel) tiledScale(x tensor, tile, overlap int) tensor {
	c, h, w := x.shape[0], x.shape[1], x.shape[2]
	s := m.scale
	if h <= tile && w <= tile {
		return m.call(x)
	}
	out, div := newT(3, h*s, w*s), newT(1, h*s, w*s)
	pos := func(n int) []int {
		if n <= tile {
			return []int{0}
		}
		var p []int
		for i := 0; i < n-overlap; i += tile - overlap {
			p = append(p, i)
		}
		return p
	}
	for _, py := range pos(h) {
		for _, px := range pos(w) {
			y0 := max(0, min(h-overlap, py))
			x0 := max(0, min(w-overlap, px))
			th, tw := min(tile, h-y0), min(tile, w-x0)
			t := newT(c, th, tw)
			for ch := 0; ch < c; ch++ {
				for y := 0; y < th; y++ {
					copy(t.v[(ch*th+y)*tw:(ch*th+y+1)*tw], x.v[(ch*h+y0+y)*w+x0:])
				}
			}
			ps := m.call(t)
			mh, mw := ps.shape[1], ps.shape[2]
			mask := newT(1, mh, mw)
			for i := range mask.v {
				mask.v[i] = 1
			}
			feather := s * overlap
			ramp := func(n int, at func(i int, a float64)) {
				if feather >= n {
					return
				}
				for t := 0; t < feather; t++ {
					a := float64(float32(float64(t+1) / float64(feather)))
					at(t, a)
					at(n-1-t, a)
				}
			}
			ramp(mh, func(r int, a float64) {
				for xx := 0; xx < mw; xx++ {
					mask.v[r*mw+xx] = float64(float32(mask.v[r*mw+xx] * a))
				}
			})
			ramp(mw, func(col int, a float64) {
				for y := 0; y < mh; y++ {
					mask.v[y*mw+col] = float64(float32(mask.v[y*mw+col] * a))
				}
			})
			for ch := 0; ch < 3; ch++ {
				src := ch % ps.shape[0]
				for y := 0; y < mh; y++ {
					for xx := 0; xx < mw; xx++ {
						out.v[(ch*h*s+y0*s+y)*w*s+x0*s+xx] += ps.v[(src*mh+y)*mw+xx] * mask.v[y*mw+xx]
					}
				}
			}
			for y := 0; y < mh; y++ {
				for xx := 0; xx < mw; xx++ {
					div.v[(y0*s+y)*w*s+x0*s+xx] += mask.v[y*mw+xx]
				}
			}
		}
	}
	for i := range out.v {
		out.v[i] /= div.v[i%(h*s*w*s)]
	}
	return out
}

package controlnet

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
)

// Adapter is a T2I-Adapter (comfy/t2i_adapter/adapter.py): the hint is pixel-unshuffled
// to the latent's size (or half of it for SDXL) and encoded into one feature map per
// UNet level, added to the UNet's input blocks. Full adapters (Adapter: conv_in, two
// residual blocks per level) and light ones (Adapter_light: one extractor per level)
// load; their widths and block counts come from the tensors.
type Adapter struct {
	// Unshuffle is the pixel-unshuffle factor: 8, or 16 for SDXL adapters.
	Unshuffle int
	// XL places the features as SDXL's UNet needs them (the last one in the middle
	// block).
	XL bool
	// InputChannels is the hint channels the adapter takes (1: the hint's channels are
	// averaged first).
	InputChannels int

	full  *fullAdapter
	light *lightAdapter
}

// fullAdapter is Adapter with sk=True (ComfyUI's loader): conv_in, then per level
// nums_rb ResnetBlocks, the first of levels after the first changing width (in_conv)
// and, for SD, halving the size (down_opt: a stride-2 conv, or average pooling).
type fullAdapter struct {
	ConvIn nn.Conv `sd:"conv_in"`
	Body   []struct {
		Down   nn.Conv `sd:"down_opt.op,optional"`
		InConv nn.Conv `sd:"in_conv,optional"`
		Block1 nn.Conv `sd:"block1"`
		Block2 nn.Conv `sd:"block2"`
		// down is set for the blocks that halve the size (down_opt, with or without a
		// conv).
		down bool
	} `sd:"body"`
	levels, perLevel int
}

// lightAdapter is Adapter_light: per level an extractor (average-pool downsample after
// the first level, 1×1 in_conv, residual blocks, 1×1 out_conv).
type lightAdapter struct {
	Body []struct {
		InConv nn.Conv `sd:"in_conv"`
		Blocks []struct {
			Block1 nn.Conv `sd:"block1"`
			Block2 nn.Conv `sd:"block2"`
		} `sd:"body"`
		OutConv nn.Conv `sd:"out_conv"`
	} `sd:"body"`
}

// loadAdapter builds a T2I-Adapter from its keys (load_t2i_adapter; diffusers-layout
// files are renamed by the caller).
func loadAdapter(rt *gpu.Runtime, src statedict.Source) (*Adapter, error) {
	switch {
	case has(src, "body.0.in_conv.weight"):
		l := &lightAdapter{}
		if _, err := statedict.Bind(rt, src, "", l); err != nil {
			return nil, fmt.Errorf("controlnet: T2I-Adapter (light): %w", err)
		}
		if len(l.Body) == 0 {
			return nil, fmt.Errorf("controlnet: T2I-Adapter (light) without extractors")
		}
		cin := l.Body[0].InConv.Weight.Dim(1)
		return &Adapter{Unshuffle: 8, InputChannels: cin / 64, light: l}, nil
	case has(src, "conv_in.weight"):
		f := &fullAdapter{}
		if _, err := statedict.Bind(rt, src, "", f); err != nil {
			return nil, fmt.Errorf("controlnet: T2I-Adapter: %w", err)
		}
		cin := f.ConvIn.Weight.Dim(1)
		a := &Adapter{Unshuffle: 8, full: f}
		// load_t2i_adapter: 256 or 768 input channels (16² × 1 or 3) mean SDXL.
		if cin == 256 || cin == 768 {
			a.Unshuffle, a.XL = 16, true
		}
		a.InputChannels = cin / (a.Unshuffle * a.Unshuffle)
		if err := f.layout(a.XL); err != nil {
			return nil, err
		}
		return a, nil
	}
	return nil, nil
}

// layout finds the levels (four: the widths c, 2c, 4c, 4c) and the blocks per level
// from the body's length, and which blocks downsample: the first block of levels 1–3
// (SD) or of level 2 (SDXL, whose level 1 keeps the size), as Adapter.__init__ sets
// ResnetBlock's down.
func (f *fullAdapter) layout(xl bool) error {
	const levels = 4
	if len(f.Body) == 0 || len(f.Body)%levels != 0 {
		return fmt.Errorf("controlnet: T2I-Adapter has %d body blocks, not a multiple of %d levels", len(f.Body), levels)
	}
	f.levels, f.perLevel = levels, len(f.Body)/levels
	for i := range f.Body {
		level, j := i/f.perLevel, i%f.perLevel
		f.Body[i].down = j == 0 && level > 0 && (!xl || level == 2)
	}
	return nil
}

// features runs the adapter on a hint already sized to a multiple of Unshuffle and
// returns ComfyUI's dict: "input" (and for SDXL "middle") lists with nil entries where
// a UNet block takes no feature.
func (a *Adapter) features(ctx context.Context, rt *gpu.Runtime, hint *gpu.Tensor) (*residuals, error) {
	x, err := pixelUnshuffle(rt, hint, a.Unshuffle)
	if err != nil {
		return nil, err
	}
	var feats []*gpu.Tensor
	fail := func(err error) (*residuals, error) {
		release(feats...)
		return nil, fmt.Errorf("controlnet: T2I-Adapter: %w", err)
	}
	if a.light != nil {
		for i := range a.light.Body {
			if err := ctx.Err(); err != nil {
				x.Release()
				return fail(err)
			}
			if x, err = then(x, func(t *gpu.Tensor) (*gpu.Tensor, error) { return a.light.extract(rt, i, t) }); err != nil {
				return fail(err)
			}
			keep, err := gpu.Contiguous(rt, x)
			if err != nil {
				x.Release()
				return fail(err)
			}
			feats = append(feats, nil, nil, keep)
		}
		x.Release()
		return &residuals{input: reversed(feats)}, nil
	}
	f := a.full
	if x, err = then(x, func(t *gpu.Tensor) (*gpu.Tensor, error) { return f.ConvIn.Same(rt, t, 1) }); err != nil {
		return fail(err)
	}
	for level := 0; level < f.levels; level++ {
		if err := ctx.Err(); err != nil {
			x.Release()
			return fail(err)
		}
		for j := 0; j < f.perLevel; j++ {
			if x, err = then(x, func(t *gpu.Tensor) (*gpu.Tensor, error) { return f.block(rt, level*f.perLevel+j, t) }); err != nil {
				return fail(err)
			}
		}
		keep, err := gpu.Contiguous(rt, x)
		if err != nil {
			x.Release()
			return fail(err)
		}
		switch {
		case !a.XL:
			feats = append(feats, nil, nil)
		case level == 0:
			feats = append(feats, nil, nil, nil)
		case level == 2:
			feats = append(feats, nil, nil)
		default:
			feats = append(feats, nil)
		}
		feats = append(feats, keep)
	}
	x.Release()
	feats = reversed(feats)
	if a.XL {
		return &residuals{input: feats[1:], middle: feats[:1]}, nil
	}
	return &residuals{input: feats}, nil
}

func reversed(l []*gpu.Tensor) []*gpu.Tensor {
	out := make([]*gpu.Tensor, len(l))
	for i := range l {
		out[i] = l[len(l)-1-i]
	}
	return out
}

// block is ResnetBlock.forward with sk=True: optional downsample, optional in_conv
// (width change), then x + block2(relu(block1(x))).
func (f *fullAdapter) block(rt *gpu.Runtime, i int, x *gpu.Tensor) (*gpu.Tensor, error) {
	b := &f.Body[i]
	var err error
	if x, err = gpu.Contiguous(rt, x); err != nil {
		return nil, err
	}
	if b.down {
		if b.Down.Weight != nil {
			x, err = then(x, func(t *gpu.Tensor) (*gpu.Tensor, error) { return b.Down.Same(rt, t, 2) })
		} else {
			x, err = then(x, func(t *gpu.Tensor) (*gpu.Tensor, error) { return avgPool2(rt, t) })
		}
		if err != nil {
			return nil, fmt.Errorf("body.%d.down_opt: %w", i, err)
		}
	}
	if b.InConv.Weight != nil {
		if x, err = then(x, func(t *gpu.Tensor) (*gpu.Tensor, error) { return b.InConv.Same(rt, t, 1) }); err != nil {
			return nil, fmt.Errorf("body.%d.in_conv: %w", i, err)
		}
	}
	defer x.Release()
	return residual(rt, x, &b.Block1, &b.Block2)
}

// extract is extractor.forward: downsample (after the first level), 1×1 in_conv,
// ResnetBlock_light blocks, 1×1 out_conv.
func (l *lightAdapter) extract(rt *gpu.Runtime, i int, x *gpu.Tensor) (*gpu.Tensor, error) {
	e := &l.Body[i]
	var err error
	if x, err = gpu.Contiguous(rt, x); err != nil {
		return nil, err
	}
	if i > 0 {
		if x, err = then(x, func(t *gpu.Tensor) (*gpu.Tensor, error) { return avgPool2(rt, t) }); err != nil {
			return nil, err
		}
	}
	if x, err = then(x, func(t *gpu.Tensor) (*gpu.Tensor, error) { return e.InConv.Same(rt, t, 1) }); err != nil {
		return nil, fmt.Errorf("body.%d.in_conv: %w", i, err)
	}
	for k := range e.Blocks {
		b := &e.Blocks[k]
		if x, err = then(x, func(t *gpu.Tensor) (*gpu.Tensor, error) { return residual(rt, t, &b.Block1, &b.Block2) }); err != nil {
			return nil, fmt.Errorf("body.%d.body.%d: %w", i, k, err)
		}
	}
	return then(x, func(t *gpu.Tensor) (*gpu.Tensor, error) { return e.OutConv.Same(rt, t, 1) })
}

// residual is x + b2(relu(b1(x))).
func residual(rt *gpu.Runtime, x *gpu.Tensor, b1, b2 *nn.Conv) (*gpu.Tensor, error) {
	h, err := b1.Same(rt, x, 1)
	if err != nil {
		return nil, err
	}
	if h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return relu(rt, t) }); err != nil {
		return nil, err
	}
	if h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return b2.Same(rt, t, 1) }); err != nil {
		return nil, err
	}
	defer h.Release()
	return gpu.Add(rt, h, x)
}

// relu is max(x, 0). The op list has no ReLU; an adapter runs once per sampling run,
// so it is done on the host.
func relu(rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error) {
	d, err := x.Float32()
	if err != nil {
		return nil, err
	}
	out := make([]float32, len(d))
	for i, v := range d {
		if v > 0 {
			out[i] = v
		}
	}
	return rt.FromFloat32(out, x.Shape()...)
}

// avgPool2 is Downsample without a conv: AvgPool2d(2, stride 2) with a padding of 1 on
// both sides of an odd dimension (zeros counted in the mean), as adapter.py sets it.
func avgPool2(rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error) {
	d, err := x.Float32()
	if err != nil {
		return nil, err
	}
	n, c, h, w := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
	ph, pw := h%2, w%2
	oh, ow := (h+2*ph-2)/2+1, (w+2*pw-2)/2+1
	out := make([]float32, n*c*oh*ow)
	for p := 0; p < n*c; p++ {
		src := d[p*h*w : (p+1)*h*w]
		dst := out[p*oh*ow : (p+1)*oh*ow]
		for oy := 0; oy < oh; oy++ {
			for ox := 0; ox < ow; ox++ {
				var s float32
				for dy := 0; dy < 2; dy++ {
					for dx := 0; dx < 2; dx++ {
						y, xx := 2*oy+dy-ph, 2*ox+dx-pw
						if y >= 0 && y < h && xx >= 0 && xx < w {
							s += src[y*w+xx]
						}
					}
				}
				dst[oy*ow+ox] = s / 4
			}
		}
	}
	return rt.FromFloat32(out, n, c, oh, ow)
}

// pixelUnshuffle is torch.nn.PixelUnshuffle(r): (B, C, H, W) → (B, C·r², H/r, W/r), the
// r×r block at (y, x) becoming channels c·r² + i·r + j.
func pixelUnshuffle(rt *gpu.Runtime, x *gpu.Tensor, r int) (*gpu.Tensor, error) {
	n, c, h, w := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
	if h%r != 0 || w%r != 0 {
		return nil, fmt.Errorf("controlnet: pixel unshuffle by %d of a %d×%d hint", r, w, h)
	}
	d, err := x.Float32()
	if err != nil {
		return nil, err
	}
	oh, ow := h/r, w/r
	out := make([]float32, len(d))
	k := 0
	for b := 0; b < n; b++ {
		for ch := 0; ch < c; ch++ {
			src := d[(b*c+ch)*h*w:]
			for i := 0; i < r; i++ {
				for j := 0; j < r; j++ {
					for y := 0; y < oh; y++ {
						row := src[(y*r+i)*w:]
						for xx := 0; xx < ow; xx++ {
							out[k] = row[xx*r+j]
							k++
						}
					}
				}
			}
		}
	}
	return rt.FromFloat32(out, n, c*r*r, oh, ow)
}

// diffusersAdapterKey renames a diffusers FullAdapter key to ComfyUI's layout
// (load_t2i_adapter's prefix_replace): adapter.body.I.resnets.J. → body.(2I+J).,
// adapter.body.I. → body.(2I)., adapter. → "".
func diffusersAdapterKey(k string) string {
	rest, ok := strings.CutPrefix(k, "adapter.")
	if !ok {
		return k
	}
	b, ok := strings.CutPrefix(rest, "body.")
	if !ok {
		return rest
	}
	is, tail, ok := strings.Cut(b, ".")
	i, err := strconv.Atoi(is)
	if !ok || err != nil {
		return rest
	}
	if r, ok := strings.CutPrefix(tail, "resnets."); ok {
		js, tail2, ok := strings.Cut(r, ".")
		if j, err := strconv.Atoi(js); ok && err == nil && j < 2 {
			return "body." + strconv.Itoa(2*i+j) + "." + tail2
		}
	}
	return "body." + strconv.Itoa(2*i) + "." + tail
}

package builtin

import (
	"context"
	"fmt"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// Morphology, ImageRGBToYUV and ImageYUVToRGB (comfy_extras/nodes_morphology.py), which
// call kornia. ComfyUI 0.3.64's reference object_info lacks them (kornia is not
// installed there); the schemas are written from that file's define_schema and the
// arithmetic from kornia 0.8.1 (morphology/morphology.py, color/ycbcr.py), the release
// current with ComfyUI 0.3.64.

const morphologyModule = "comfy_extras.nodes_morphology"

// morphologyOps are the operation choices, in ComfyUI's order.
var morphologyOps = []string{"erode", "dilate", "open", "close", "gradient", "bottom_hat", "top_hat"}

// morphBorder is kornia's max_val: with border_type "geodesic" the image is padded
// with −max_val for a dilation and +max_val for an erosion.
const morphBorder float32 = 1e4

// Morphology applies a flat square structuring element to every channel.
type Morphology struct {
	Image      *Image `input:"image"`
	Operation  string `input:"operation"`
	KernelSize int    `input:"kernel_size"`
}

// Schema implements nodes.Typed.
func (*Morphology) Schema() graph.Schema {
	name := "ImageMorphology"
	return graph.Schema{
		Name: "Morphology", DisplayName: name, Category: "image/postprocessing", PythonModule: morphologyModule,
		Inputs: []graph.Input{socketV3("image", "IMAGE"), comboV3("operation", morphologyOps...),
			{Name: "kernel_size", Type: graph.TypeInt, Default: 3, Min: graph.Num(3), Max: graph.Num(999), Step: graph.Num(1)}},
		Outputs: outputs("IMAGE"),
		Extra:   v3Extra(1, &name),
	}
}

// Run implements nodes.Typed: kornia's dilation/erosion with torch.ones(k, k), origin
// (k/2, k/2) and the geodesic border, and the compositions built from them (opening =
// dilation of the erosion, closing the reverse, gradient = dilation − erosion, top hat
// = image − opening, bottom hat = closing − image).
func (n *Morphology) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	k := n.KernelSize
	if k < 1 {
		return nodes.Result{}, fmt.Errorf("builtin: Morphology: kernel_size %d", k)
	}
	im := n.Image
	out, err := NewImage(im.Batch, im.Height, im.Width, im.Channels)
	if err != nil {
		return nodes.Result{}, err
	}
	m := newMorph(im.Height, im.Width, im.Channels, k)
	for b := 0; b < im.Batch; b++ {
		if err := ctx.Err(); err != nil {
			return nodes.Result{}, err
		}
		src, dst := im.Frame(b), out.Frame(b)
		switch n.Operation {
		case "erode":
			m.apply(dst, src, false)
		case "dilate":
			m.apply(dst, src, true)
		case "open":
			t := make([]float32, len(src))
			m.apply(t, src, false)
			m.apply(dst, t, true)
		case "close":
			t := make([]float32, len(src))
			m.apply(t, src, true)
			m.apply(dst, t, false)
		case "gradient":
			t := make([]float32, len(src))
			m.apply(dst, src, true)
			m.apply(t, src, false)
			for i := range dst {
				dst[i] -= t[i]
			}
		case "top_hat":
			t := make([]float32, len(src))
			m.apply(t, src, false)
			m.apply(dst, t, true)
			for i := range dst {
				dst[i] = src[i] - dst[i]
			}
		case "bottom_hat":
			t := make([]float32, len(src))
			m.apply(t, src, true)
			m.apply(dst, t, false)
			for i := range dst {
				dst[i] -= src[i]
			}
		default:
			return nodes.Result{}, fmt.Errorf("builtin: Morphology: invalid operation %q, want one of %v", n.Operation, morphologyOps)
		}
	}
	return nodes.One(out, nil)
}

// morph runs a k×k flat max (dilation) or min (erosion) filter over H×W×C frames. The
// square window is separable: the maximum over the padded k×k window is the maximum
// over its rows of each row's maximum, so a row pass then a column pass give kornia's
// unfold result exactly, at a cost independent of k (van Herk / Gil–Werman).
type morph struct {
	h, w, c, k int
	// lo is how far the window reaches before the pixel: kornia pads origin = k/2 before
	// and k − k/2 − 1 after, so output i covers inputs i − lo … i − lo + k − 1.
	lo       int
	tmp      []float32
	ext      []float32 // one line, padded: n + k − 1 values
	pre, suf []float32 // the block-wise running extremes of ext
}

func newMorph(h, w, c, k int) *morph {
	n := max(h, w) + k - 1
	return &morph{h: h, w: w, c: c, k: k, lo: k / 2, tmp: make([]float32, h*w*c),
		ext: make([]float32, n), pre: make([]float32, n), suf: make([]float32, n)}
}

// apply writes the dilation (dilate) or erosion of src into dst.
func (m *morph) apply(dst, src []float32, dilate bool) {
	pad := morphBorder
	if dilate {
		pad = -morphBorder
	}
	// Rows: each (y, channel) line of w values, stride c.
	for y := 0; y < m.h; y++ {
		for ch := 0; ch < m.c; ch++ {
			off := y*m.w*m.c + ch
			m.filter(m.tmp, src, off, m.c, m.w, pad, dilate)
		}
	}
	// Columns: each (x, channel) line of h values, stride w·c.
	for x := 0; x < m.w; x++ {
		for ch := 0; ch < m.c; ch++ {
			off := x*m.c + ch
			m.filter(dst, m.tmp, off, m.w*m.c, m.h, pad, dilate)
		}
	}
}

// filter computes, for the n values src[off + i·stride], the extreme over the window
// i − lo … i − lo + k − 1 with pad standing for the positions outside 0 … n−1, into
// dst at the same places.
func (m *morph) filter(dst, src []float32, off, stride, n int, pad float32, dilate bool) {
	k := m.k
	ext := m.ext[:n+k-1]
	for j := range ext {
		i := j - m.lo
		if i < 0 || i >= n {
			ext[j] = pad
		} else {
			ext[j] = src[off+i*stride]
		}
	}
	better := func(a, b float32) float32 {
		if (dilate && b > a) || (!dilate && b < a) {
			return b
		}
		return a
	}
	pre, suf := m.pre[:len(ext)], m.suf[:len(ext)]
	for j := range ext {
		if j%k == 0 {
			pre[j] = ext[j]
		} else {
			pre[j] = better(pre[j-1], ext[j])
		}
	}
	for j := len(ext) - 1; j >= 0; j-- {
		if j == len(ext)-1 || (j+1)%k == 0 {
			suf[j] = ext[j]
		} else {
			suf[j] = better(suf[j+1], ext[j])
		}
	}
	for i := 0; i < n; i++ {
		dst[off+i*stride] = better(suf[i], pre[i+k-1])
	}
}

// ImageRGBToYUV splits an RGB image into its Y, Cb and Cr planes, each broadcast over
// the image's three channels (kornia.color.rgb_to_ycbcr, then expand_as).
type ImageRGBToYUV struct {
	Image *Image `input:"image"`
}

// Schema implements nodes.Typed.
func (*ImageRGBToYUV) Schema() graph.Schema {
	return graph.Schema{
		Name: "ImageRGBToYUV", Category: "image/batch", PythonModule: morphologyModule,
		Inputs:  []graph.Input{socketV3("image", "IMAGE")},
		Outputs: []graph.Output{{Type: "IMAGE", Name: "Y"}, {Type: "IMAGE", Name: "U"}, {Type: "IMAGE", Name: "V"}},
		Extra:   v3Extra(3, nil),
	}
}

// Run implements nodes.Typed, in float32 as torch computes kornia 0.8.1's formulas:
// Y = 0.299·R + 0.587·G + 0.114·B, Cb = (B − Y)·0.564 + 0.5, Cr = (R − Y)·0.713 + 0.5.
func (n *ImageRGBToYUV) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	im := n.Image
	if im.Channels != 3 {
		return nodes.Result{}, fmt.Errorf("builtin: ImageRGBToYUV: the image has %d channels, want 3 (RGB)", im.Channels)
	}
	var planes [3]*Image
	for i := range planes {
		p, err := NewImage(im.Batch, im.Height, im.Width, 3)
		if err != nil {
			return nodes.Result{}, err
		}
		planes[i] = p
	}
	for i := 0; i < len(im.Pix); i += 3 {
		r, g, b := im.Pix[i], im.Pix[i+1], im.Pix[i+2]
		// The conversions round each product to float32, as torch does and as Go
		// would not have to otherwise (it may fuse a multiply and an add).
		y := float32(float32(0.299)*r) + float32(float32(0.587)*g)
		y += float32(float32(0.114) * b)
		cb := float32((b-y)*0.564) + 0.5
		cr := float32((r-y)*0.713) + 0.5
		for j, v := range []float32{y, cb, cr} {
			px := planes[j].Pix[i : i+3]
			px[0], px[1], px[2] = v, v, v
		}
	}
	return nodes.Outputs(planes[0], planes[1], planes[2])
}

// ImageYUVToRGB joins Y, U (Cb) and V (Cr) images, each averaged over its channels,
// into RGB (kornia.color.ycbcr_to_rgb, clamped to 0..1).
type ImageYUVToRGB struct {
	Y *Image `input:"Y"`
	U *Image `input:"U"`
	V *Image `input:"V"`
}

// Schema implements nodes.Typed.
func (*ImageYUVToRGB) Schema() graph.Schema {
	return graph.Schema{
		Name: "ImageYUVToRGB", Category: "image/batch", PythonModule: morphologyModule,
		Inputs:  []graph.Input{socketV3("Y", "IMAGE"), socketV3("U", "IMAGE"), socketV3("V", "IMAGE")},
		Outputs: outputs("IMAGE"),
		Extra:   v3Extra(1, nil),
	}
}

// Run implements nodes.Typed: R = Y + 1.403·(Cr − ½), G = Y − 0.714·(Cr − ½) −
// 0.344·(Cb − ½), B = Y + 1.773·(Cb − ½), clamped, in float32.
func (n *ImageYUVToRGB) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	y, u, v := n.Y, n.U, n.V
	for _, p := range []*Image{u, v} {
		if p.Batch != y.Batch || p.Height != y.Height || p.Width != y.Width {
			return nodes.Result{}, fmt.Errorf("builtin: ImageYUVToRGB: Y is %d×%dx%d, a plane is %d×%dx%d; they must match",
				y.Batch, y.Width, y.Height, p.Batch, p.Width, p.Height)
		}
	}
	out, err := NewImage(y.Batch, y.Height, y.Width, 3)
	if err != nil {
		return nodes.Result{}, err
	}
	for i := 0; i < y.Batch*y.Height*y.Width; i++ {
		yy, cb, cr := channelMean(y, i), channelMean(u, i), channelMean(v, i)
		cb, cr = cb-0.5, cr-0.5
		px := out.Pix[3*i : 3*i+3]
		px[0] = clamp01f(yy + float32(1.403*cr))
		px[1] = clamp01f(float32(yy-float32(0.714*cr)) - float32(0.344*cb))
		px[2] = clamp01f(yy + float32(1.773*cb))
	}
	return nodes.One(out, nil)
}

// channelMean is torch.mean over the channels of pixel i: their float32 sum divided
// by the count.
func channelMean(im *Image, i int) float32 {
	var s float32
	for _, v := range im.Pix[i*im.Channels : (i+1)*im.Channels] {
		s += v
	}
	return s / float32(im.Channels)
}

// clamp01f is torch.clamp(v, 0, 1).
func clamp01f(v float32) float32 {
	if v < 0 {
		return 0
	}
	if v > 1 {
		return 1
	}
	return v
}

var (
	_ nodes.Typed = (*Morphology)(nil)
	_ nodes.Typed = (*ImageRGBToYUV)(nil)
	_ nodes.Typed = (*ImageYUVToRGB)(nil)
)

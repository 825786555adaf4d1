package builtin

import (
	"context"
	"fmt"
	"math"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// The post-processing family of comfy_extras/nodes_post_processing.py: ImageBlend,
// ImageBlur, ImageSharpen. These are io.Schema nodes in ComfyUI, so their object_info
// carries the v3 keys (v3Extra) and a null display_name.

// blendModes are ImageBlend's blend_mode choices, in ComfyUI's order.
var blendModes = []string{"normal", "multiply", "screen", "overlay", "soft_light", "difference"}

const postProcessingModule = "comfy_extras.nodes_post_processing"

// ImageBlend is ComfyUI's ImageBlend.
type ImageBlend struct {
	Image1      *Image  `input:"image1"`
	Image2      *Image  `input:"image2"`
	BlendFactor float64 `input:"blend_factor"`
	BlendMode   string  `input:"blend_mode"`
}

// Schema implements nodes.Typed.
func (*ImageBlend) Schema() graph.Schema {
	return graph.Schema{
		Name: "ImageBlend", Category: "image/postprocessing", PythonModule: postProcessingModule,
		Inputs: []graph.Input{
			socketV3("image1", "IMAGE"), socketV3("image2", "IMAGE"),
			{Name: "blend_factor", Type: graph.TypeFloat, Default: 0.5, Min: graph.Num(0.0), Max: graph.Num(1.0), Step: graph.Num(0.01)},
			comboV3("blend_mode", blendModes...),
		},
		Outputs: outputs("IMAGE"),
		Extra:   v3Extra(1, nil),
	}
}

// Run implements nodes.Typed (nodes_post_processing.py Blend.execute):
//
//	out = clamp(image1 * (1 - f) + mode(image1, image2) * f, 0, 1)
//
// image2 first loses channels image1 lacks (node_helpers.image_alpha_fix) and is resized
// to image1's size with bicubic + center crop when the shapes differ; a batch of one
// broadcasts against the other, as torch does.
func (n *ImageBlend) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	a, b, f := n.Image1, n.Image2, n.BlendFactor
	blend, ok := blendFuncs[n.BlendMode]
	if !ok {
		// A V3 combo's value is not checked against its list (as in ComfyUI).
		return nodes.Result{}, fmt.Errorf("builtin: ImageBlend: unsupported blend mode %q", n.BlendMode)
	}
	var err error
	switch {
	case a.Channels < b.Channels:
		b = keepChannels(b, a.Channels)
	case a.Channels > b.Channels:
		// image_alpha_fix pads image1 with an opaque channel here, which no longer matches
		// image2 and makes torch fail to broadcast; say so plainly.
		return nodes.Result{}, fmt.Errorf("builtin: ImageBlend: image1 has %d channels but image2 only %d", a.Channels, b.Channels)
	}
	if a.Height != b.Height || a.Width != b.Width || a.Batch != b.Batch {
		if a.Height != b.Height || a.Width != b.Width {
			if b, err = upscale(b, a.Width, a.Height, "bicubic", "center"); err != nil {
				return nodes.Result{}, err
			}
		}
	}
	batch := max(a.Batch, b.Batch)
	if (a.Batch != batch && a.Batch != 1) || (b.Batch != batch && b.Batch != 1) {
		return nodes.Result{}, fmt.Errorf("builtin: ImageBlend: batch sizes %d and %d do not broadcast", a.Batch, b.Batch)
	}
	out, err := NewImage(batch, a.Height, a.Width, a.Channels)
	if err != nil {
		return nodes.Result{}, err
	}
	keep := float32(1 - f) // torch casts the Python scalar (1 - blend_factor) to float32
	ff := float32(f)
	for i := 0; i < batch; i++ {
		if err := ctx.Err(); err != nil {
			return nodes.Result{}, err
		}
		x, y, dst := a.Frame(min(i, a.Batch-1)), b.Frame(min(i, b.Batch-1)), out.Frame(i)
		for p := range dst {
			v := x[p]*keep + blend(x[p], y[p])*ff
			dst[p] = clamp01(v)
		}
	}
	return nodes.One(out, nil)
}

// blendFuncs are Blend.blend_mode's formulas, per element. "difference" is img1 - img2
// (not its absolute value), as ComfyUI computes it; the final clamp removes negatives.
var blendFuncs = map[string]func(a, b float32) float32{
	"normal":   func(a, b float32) float32 { return b },
	"multiply": func(a, b float32) float32 { return a * b },
	"screen":   func(a, b float32) float32 { return 1 - (1-a)*(1-b) },
	"overlay": func(a, b float32) float32 {
		if a <= 0.5 {
			return 2 * a * b
		}
		return 1 - 2*(1-a)*(1-b)
	},
	"soft_light": func(a, b float32) float32 {
		if b <= 0.5 {
			return a - (1-2*b)*a*(1-a)
		}
		return a + (2*b-1)*(softLightG(a)-a)
	},
	"difference": func(a, b float32) float32 { return a - b },
}

// softLightG is Blend.g: ((16x - 12)x + 4)x below 0.25, sqrt(x) above.
func softLightG(x float32) float32 {
	if x <= 0.25 {
		return ((16*x-12)*x + 4) * x
	}
	return float32(math.Sqrt(float64(x)))
}

// clamp01 is torch.clamp(v, 0, 1); NaN stays NaN as in torch.
func clamp01(v float32) float32 {
	if v < 0 {
		return 0
	}
	if v > 1 {
		return 1
	}
	return v
}

// keepChannels returns im with only its first c channels.
func keepChannels(im *Image, c int) *Image {
	out := &Image{Batch: im.Batch, Height: im.Height, Width: im.Width, Channels: c,
		Pix: make([]float32, im.Batch*im.Height*im.Width*c)}
	for p, q := 0, 0; q < len(out.Pix); p, q = p+im.Channels, q+c {
		copy(out.Pix[q:q+c], im.Pix[p:p+c])
	}
	return out
}

// gaussian1D is the one-dimensional factor of nodes_post_processing.py gaussian_kernel.
// ComfyUI builds a size×size kernel over the grid linspace(-1, 1, size)², with values
// exp(-d²/(2σ²)), d² = x² + y², normalised to sum 1 (σ is in units of that [-1, 1] grid,
// not pixels). Since exp(-(x²+y²)/2σ²) = exp(-x²/2σ²)·exp(-y²/2σ²), that kernel is the
// outer product of this normalised vector with itself, and the 2-D convolution can run as
// two 1-D passes: (2r+1)·2 taps per value instead of (2r+1)². The results agree with the
// direct float32 convolution to rounding (TestSeparableMatchesDirect).
func gaussian1D(size int, sigma float64) []float32 {
	g := make([]float64, size)
	var sum float64
	for i := range g {
		x := -1.0
		if size > 1 {
			x = -1 + 2*float64(i)/float64(size-1)
		}
		g[i] = math.Exp(-(x * x) / (2 * sigma * sigma))
		sum += g[i]
	}
	out := make([]float32, size)
	for i, v := range g {
		out[i] = float32(v / sum)
	}
	return out
}

// reflectIndex maps an index of a reflect-padded axis back into [0, n) (torch's 'reflect'
// padding: the edge sample is not repeated). It needs pad < n.
func reflectIndex(i, n int) int {
	if i < 0 {
		return -i
	}
	if i >= n {
		return 2*(n-1) - i
	}
	return i
}

// blurReflect convolves every channel of im with the separable kernel g⊗g (len(g) = 2r+1)
// over a reflect-padded border, as F.pad(…, 'reflect') followed by a grouped F.conv2d and
// the crop back to H×W do in Blur/Sharpen.execute. torch refuses reflect padding as wide
// as the image; so does this.
func blurReflect(ctx context.Context, im *Image, g []float32, r int) (*Image, error) {
	if r >= im.Height || r >= im.Width {
		return nil, fmt.Errorf("builtin: radius %d needs an image larger than %dx%d (reflect padding must be smaller than the image)", r, im.Width, im.Height)
	}
	out, err := NewImage(im.Batch, im.Height, im.Width, im.Channels)
	if err != nil {
		return nil, err
	}
	H, W, C := im.Height, im.Width, im.Channels
	size := 2*r + 1
	padded := make([]float32, (W+2*r)*C) // one reflect-padded source row
	tmp := make([]float32, H*W*C)
	for b := 0; b < im.Batch; b++ {
		src, dst := im.Frame(b), out.Frame(b)
		for y := 0; y < H; y++ { // horizontal pass: one saxpy per tap over the padded row
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			row := src[y*W*C : (y+1)*W*C]
			for x := -r; x < W+r; x++ {
				copy(padded[(x+r)*C:(x+r+1)*C], row[reflectIndex(x, W)*C:])
			}
			trow := tmp[y*W*C : (y+1)*W*C]
			for j := 0; j < size; j++ {
				w, p := g[j], padded[j*C:j*C+len(trow)]
				for k := range trow {
					trow[k] += w * p[k]
				}
			}
		}
		for y := 0; y < H; y++ { // vertical pass, whole rows at a time
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			drow := dst[y*W*C : (y+1)*W*C]
			for i := 0; i < size; i++ {
				w, srow := g[i], tmp[reflectIndex(y+i-r, H)*W*C:][:len(drow)]
				for k := range drow {
					drow[k] += w * srow[k]
				}
			}
		}
		clear(tmp)
	}
	return out, nil
}

// ImageBlur is ComfyUI's ImageBlur.
type ImageBlur struct {
	Image      *Image  `input:"image"`
	BlurRadius int     `input:"blur_radius"`
	Sigma      float64 `input:"sigma"`
}

// Schema implements nodes.Typed.
func (*ImageBlur) Schema() graph.Schema {
	return graph.Schema{
		Name: "ImageBlur", Category: "image/postprocessing", PythonModule: postProcessingModule,
		Inputs: []graph.Input{
			socketV3("image", "IMAGE"),
			{Name: "blur_radius", Type: graph.TypeInt, Default: 1, Min: graph.Num(1), Max: graph.Num(31), Step: graph.Num(1)},
			{Name: "sigma", Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(0.1), Max: graph.Num(10.0), Step: graph.Num(0.1)},
		},
		Outputs: outputs("IMAGE"),
		Extra:   v3Extra(1, nil),
	}
}

// Run implements nodes.Typed: a (2r+1)² gaussian_kernel convolution per channel with
// reflect padding (nodes_post_processing.py Blur.execute). No clamp. ComfyUI returns
// the image for a radius of 0, which the schema's minimum of 1 rules out.
func (n *ImageBlur) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	r := n.BlurRadius
	out, err := blurReflect(ctx, n.Image, gaussian1D(2*r+1, n.Sigma), r)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: ImageBlur: %w", err)
	}
	return nodes.One(out, nil)
}

// ImageSharpen is ComfyUI's ImageSharpen.
type ImageSharpen struct {
	Image         *Image  `input:"image"`
	SharpenRadius int     `input:"sharpen_radius"`
	Sigma         float64 `input:"sigma"`
	Alpha         float64 `input:"alpha"`
}

// Schema implements nodes.Typed.
func (*ImageSharpen) Schema() graph.Schema {
	return graph.Schema{
		Name: "ImageSharpen", Category: "image/postprocessing", PythonModule: postProcessingModule,
		Inputs: []graph.Input{
			socketV3("image", "IMAGE"),
			{Name: "sharpen_radius", Type: graph.TypeInt, Default: 1, Min: graph.Num(1), Max: graph.Num(31), Step: graph.Num(1)},
			{Name: "sigma", Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(0.1), Max: graph.Num(10.0), Step: graph.Num(0.01)},
			{Name: "alpha", Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(0.0), Max: graph.Num(5.0), Step: graph.Num(0.01)},
		},
		Outputs: outputs("IMAGE"),
		Extra:   v3Extra(1, nil),
	}
}

// Run implements nodes.Typed (nodes_post_processing.py Sharpen.execute). ComfyUI
// convolves with the gaussian scaled by -(10·alpha) whose centre is raised so that the
// kernel sums to 1: k = -10a·G + (1 + 10a)·δ. That is (1 + 10a)·image -
// 10a·blur(image), computed so, then clamped to [0, 1]. As for ImageBlur, the radius
// is at least 1.
func (n *ImageSharpen) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	r := n.SharpenRadius
	out, err := blurReflect(ctx, n.Image, gaussian1D(2*r+1, n.Sigma), r)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: ImageSharpen: %w", err)
	}
	s := float32(n.Alpha * 10)
	for i, v := range n.Image.Pix {
		out.Pix[i] = clamp01((1+s)*v - s*out.Pix[i])
	}
	return nodes.One(out, nil)
}

// Interface guards.
var (
	_ nodes.Typed = (*ImageBlend)(nil)
	_ nodes.Typed = (*ImageBlur)(nil)
	_ nodes.Typed = (*ImageSharpen)(nil)
)

package builtin

import (
	"context"
	"fmt"
	"math"

	"github.com/forgeflow/forgeflow/gpu/resample"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// The image family of ComfyUI's nodes.py (EmptyImage, ImageScale, ImageScaleBy,
// ImageInvert, ImageBatch, ImagePadForOutpaint) and comfy_extras/nodes_images.py
// (ImageCrop).

// upscaleMethods are ImageScale's upscale_method choices (nodes.py ImageScale).
var upscaleMethods = []string{"nearest-exact", "bilinear", "area", "bicubic", "lanczos"}

// upscale resizes im to width×height with comfy.utils.common_upscale semantics.
func upscale(im *Image, width, height int, method, crop string) (*Image, error) {
	out, err := resample.Upscale(im.NCHW(), im.Batch, im.Channels, im.Height, im.Width, width, height, method, crop)
	if err != nil {
		return nil, fmt.Errorf("builtin: %w", err)
	}
	return ImageFromNCHW(out, im.Batch, im.Channels, height, width)
}

// pyRound is Python 3's round() of a float to an int: half to even.
func pyRound(x float64) int { return int(math.RoundToEven(x)) }

// EmptyImage is ComfyUI's EmptyImage: a batch filled with one RGB colour.
type EmptyImage struct{ schema graph.Schema }

func newEmptyImage() *EmptyImage {
	return &EmptyImage{graph.Schema{
		Name: "EmptyImage", DisplayName: "EmptyImage", Category: "image",
		Inputs: []graph.Input{
			size("width", 1), size("height", 1),
			widget("batch_size", graph.TypeInt, map[string]any{"default": 1, "min": 1, "max": 4096}),
			widget("color", graph.TypeInt, map[string]any{"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"}),
		},
		Outputs: outputs("IMAGE"),
	}}
}

// Schema implements nodes.Node.
func (n *EmptyImage) Schema() *graph.Schema { return &n.schema }

// Run implements nodes.Node. Each channel is ((color >> shift) & 0xFF) / 0xFF computed in
// float64 and stored as float32 (nodes.py EmptyImage.generate, torch.full's default dtype).
func (n *EmptyImage) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	w, err := intIn(in, "width", 1, MaxResolution)
	if err != nil {
		return nodes.Result{}, err
	}
	h, err := intIn(in, "height", 1, MaxResolution)
	if err != nil {
		return nodes.Result{}, err
	}
	b, err := intIn(in, "batch_size", 1, 4096)
	if err != nil {
		return nodes.Result{}, err
	}
	color, err := intIn(in, "color", 0, 0xFFFFFF)
	if err != nil {
		return nodes.Result{}, err
	}
	im, err := NewImage(b, h, w, 3)
	if err != nil {
		return nodes.Result{}, err
	}
	rgb := [3]float32{
		float32(float64((color>>16)&0xFF) / 0xFF),
		float32(float64((color>>8)&0xFF) / 0xFF),
		float32(float64(color&0xFF) / 0xFF),
	}
	for i := 0; i < len(im.Pix); i += 3 {
		if i&(1<<20-1) == 0 && ctx.Err() != nil {
			return nodes.Result{}, ctx.Err()
		}
		im.Pix[i], im.Pix[i+1], im.Pix[i+2] = rgb[0], rgb[1], rgb[2]
	}
	return nodes.Result{Outputs: []any{im}}, nil
}

// ImageScale is ComfyUI's ImageScale ("Upscale Image").
type ImageScale struct{ schema graph.Schema }

func newImageScale() *ImageScale {
	return &ImageScale{graph.Schema{
		Name: "ImageScale", DisplayName: "Upscale Image", Category: "image/upscaling",
		Inputs: []graph.Input{
			socket("image", "IMAGE"),
			combo("upscale_method", upscaleMethods...),
			size("width", 0), size("height", 0),
			combo("crop", "disabled", "center"),
		},
		Outputs: outputs("IMAGE"),
	}}
}

// Schema implements nodes.Node.
func (n *ImageScale) Schema() *graph.Schema { return &n.schema }

// Run implements nodes.Node. A zero width or height keeps the aspect ratio:
// max(1, round(other_size * asked / other_asked)) with Python's round (nodes.py
// ImageScale.upscale); both zero returns the image unchanged.
func (n *ImageScale) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	im, err := imageInput(in, "image")
	if err != nil {
		return nodes.Result{}, err
	}
	method, err := in.String("upscale_method")
	if err != nil {
		return nodes.Result{}, err
	}
	crop, err := in.String("crop")
	if err != nil {
		return nodes.Result{}, err
	}
	w, err := intIn(in, "width", 0, MaxResolution)
	if err != nil {
		return nodes.Result{}, err
	}
	h, err := intIn(in, "height", 0, MaxResolution)
	if err != nil {
		return nodes.Result{}, err
	}
	if w == 0 && h == 0 {
		return nodes.Result{Outputs: []any{im}}, nil
	}
	if im.Height == 0 || im.Width == 0 {
		return nodes.Result{}, fmt.Errorf("builtin: ImageScale: cannot scale an empty %dx%d image", im.Width, im.Height)
	}
	if w == 0 {
		w = max(1, pyRound(float64(im.Width)*float64(h)/float64(im.Height)))
	} else if h == 0 {
		h = max(1, pyRound(float64(im.Height)*float64(w)/float64(im.Width)))
	}
	out, err := upscale(im, w, h, method, crop)
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.Result{Outputs: []any{out}}, nil
}

// ImageScaleBy is ComfyUI's ImageScaleBy ("Upscale Image By").
type ImageScaleBy struct{ schema graph.Schema }

func newImageScaleBy() *ImageScaleBy {
	return &ImageScaleBy{graph.Schema{
		Name: "ImageScaleBy", DisplayName: "Upscale Image By", Category: "image/upscaling",
		Inputs: []graph.Input{
			socket("image", "IMAGE"),
			combo("upscale_method", upscaleMethods...),
			widget("scale_by", graph.TypeFloat, map[string]any{"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}),
		},
		Outputs: outputs("IMAGE"),
	}}
}

// Schema implements nodes.Node.
func (n *ImageScaleBy) Schema() *graph.Schema { return &n.schema }

// Run implements nodes.Node: the new size is round(size * scale_by), Python's round, with
// crop disabled (nodes.py ImageScaleBy.upscale).
func (n *ImageScaleBy) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	im, err := imageInput(in, "image")
	if err != nil {
		return nodes.Result{}, err
	}
	method, err := in.String("upscale_method")
	if err != nil {
		return nodes.Result{}, err
	}
	s, err := floatIn(in, "scale_by", 0.01, 8.0)
	if err != nil {
		return nodes.Result{}, err
	}
	w := pyRound(float64(im.Width) * s)
	h := pyRound(float64(im.Height) * s)
	out, err := upscale(im, w, h, method, "disabled")
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.Result{Outputs: []any{out}}, nil
}

// ImageInvert is ComfyUI's ImageInvert: 1 - image.
type ImageInvert struct{ schema graph.Schema }

func newImageInvert() *ImageInvert {
	return &ImageInvert{graph.Schema{
		Name: "ImageInvert", DisplayName: "Invert Image", Category: "image",
		Inputs:  []graph.Input{socket("image", "IMAGE")},
		Outputs: outputs("IMAGE"),
	}}
}

// Schema implements nodes.Node.
func (n *ImageInvert) Schema() *graph.Schema { return &n.schema }

// Run implements nodes.Node (nodes.py ImageInvert.invert; every channel, alpha included).
func (n *ImageInvert) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	im, err := imageInput(in, "image")
	if err != nil {
		return nodes.Result{}, err
	}
	out := &Image{Batch: im.Batch, Height: im.Height, Width: im.Width, Channels: im.Channels,
		Pix: make([]float32, len(im.Pix))}
	for i, v := range im.Pix {
		out.Pix[i] = 1 - v
	}
	return nodes.Result{Outputs: []any{out}}, nil
}

// ImageBatch is ComfyUI's ImageBatch ("Batch Images").
type ImageBatch struct{ schema graph.Schema }

func newImageBatch() *ImageBatch {
	return &ImageBatch{graph.Schema{
		Name: "ImageBatch", DisplayName: "Batch Images", Category: "image",
		Inputs:  []graph.Input{socket("image1", "IMAGE"), socket("image2", "IMAGE")},
		Outputs: outputs("IMAGE"),
	}}
}

// Schema implements nodes.Node.
func (n *ImageBatch) Schema() *graph.Schema { return &n.schema }

// Run implements nodes.Node: image2 is resized to image1's size (bilinear, center crop)
// when their [H, W, C] differ, then the batches are concatenated (nodes.py
// ImageBatch.batch). Different channel counts cannot be concatenated, as in torch.cat.
func (n *ImageBatch) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	a, err := imageInput(in, "image1")
	if err != nil {
		return nodes.Result{}, err
	}
	b, err := imageInput(in, "image2")
	if err != nil {
		return nodes.Result{}, err
	}
	if a.Channels != b.Channels {
		return nodes.Result{}, fmt.Errorf("builtin: ImageBatch: image1 has %d channels, image2 %d", a.Channels, b.Channels)
	}
	if a.Height != b.Height || a.Width != b.Width {
		if b, err = upscale(b, a.Width, a.Height, "bilinear", "center"); err != nil {
			return nodes.Result{}, err
		}
	}
	out, err := NewImage(a.Batch+b.Batch, a.Height, a.Width, a.Channels)
	if err != nil {
		return nodes.Result{}, err
	}
	copy(out.Pix, a.Pix)
	copy(out.Pix[len(a.Pix):], b.Pix)
	return nodes.Result{Outputs: []any{out}}, nil
}

// ImageCrop is ComfyUI's ImageCrop (comfy_extras/nodes_images.py).
type ImageCrop struct{ schema graph.Schema }

func newImageCrop() *ImageCrop {
	return &ImageCrop{graph.Schema{
		Name: "ImageCrop", DisplayName: "Image Crop", Category: "image/transform",
		PythonModule: "comfy_extras.nodes_images",
		Inputs: []graph.Input{
			socket("image", "IMAGE"),
			size("width", 1), size("height", 1),
			widget("x", graph.TypeInt, map[string]any{"default": 0, "min": 0, "max": MaxResolution, "step": 1}),
			widget("y", graph.TypeInt, map[string]any{"default": 0, "min": 0, "max": MaxResolution, "step": 1}),
		},
		Outputs: outputs("IMAGE"),
	}}
}

// Schema implements nodes.Node.
func (n *ImageCrop) Schema() *graph.Schema { return &n.schema }

// Run implements nodes.Node. The origin is clamped to the last pixel
// (x = min(x, W-1)) and the region to the image, as the tensor slice
// image[:, y:y+height, x:x+width, :] does (nodes_images.py ImageCrop.crop).
func (n *ImageCrop) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	im, err := imageInput(in, "image")
	if err != nil {
		return nodes.Result{}, err
	}
	var v [4]int
	for i, name := range []string{"width", "height", "x", "y"} {
		lo := int64(0)
		if i < 2 {
			lo = 1
		}
		if v[i], err = intIn(in, name, lo, MaxResolution); err != nil {
			return nodes.Result{}, err
		}
	}
	w, h, x, y := v[0], v[1], v[2], v[3]
	// Python's min(x, W-1) may go negative on an empty image; a negative slice start then
	// counts from the end. An empty image stays empty either way.
	x = max(0, min(x, im.Width-1))
	y = max(0, min(y, im.Height-1))
	w = max(0, min(w, im.Width-x))
	h = max(0, min(h, im.Height-y))
	out, err := NewImage(im.Batch, h, w, im.Channels)
	if err != nil {
		return nodes.Result{}, err
	}
	c := im.Channels
	for b := 0; b < im.Batch; b++ {
		src, dst := im.Frame(b), out.Frame(b)
		for r := 0; r < h; r++ {
			s := ((y+r)*im.Width + x) * c
			copy(dst[r*w*c:(r+1)*w*c], src[s:s+w*c])
		}
	}
	return nodes.Result{Outputs: []any{out}}, nil
}

// ImagePadForOutpaint is ComfyUI's ImagePadForOutpaint ("Pad Image for Outpainting").
type ImagePadForOutpaint struct{ schema graph.Schema }

func newImagePadForOutpaint() *ImagePadForOutpaint {
	pad := func(name string) graph.Input {
		return widget(name, graph.TypeInt, map[string]any{"default": 0, "min": 0, "max": MaxResolution, "step": 8})
	}
	return &ImagePadForOutpaint{graph.Schema{
		Name: "ImagePadForOutpaint", DisplayName: "Pad Image for Outpainting", Category: "image",
		Inputs: []graph.Input{
			socket("image", "IMAGE"),
			pad("left"), pad("top"), pad("right"), pad("bottom"),
			widget("feathering", graph.TypeInt, map[string]any{"default": 40, "min": 0, "max": MaxResolution, "step": 1}),
		},
		Outputs: outputs("IMAGE", "MASK"),
	}}
}

// Schema implements nodes.Node.
func (n *ImagePadForOutpaint) Schema() *graph.Schema { return &n.schema }

// Run implements nodes.Node (nodes.py ImagePadForOutpaint.expand_image): the new border is
// grey 0.5, the mask is 1 on the border and, inside the original image, ((f - d) / f)^2
// within f = feathering pixels of a padded edge (d the distance to the nearest padded
// edge; an edge without padding does not count). Feathering applies only when 2f is below
// both the image's height and width.
func (n *ImagePadForOutpaint) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	im, err := imageInput(in, "image")
	if err != nil {
		return nodes.Result{}, err
	}
	var v [5]int
	for i, name := range []string{"left", "top", "right", "bottom", "feathering"} {
		if v[i], err = intIn(in, name, 0, MaxResolution); err != nil {
			return nodes.Result{}, err
		}
	}
	left, top, right, bottom, feather := v[0], v[1], v[2], v[3], v[4]
	H, W, C := im.Height, im.Width, im.Channels
	nh, nw := H+top+bottom, W+left+right
	out, err := NewImage(im.Batch, nh, nw, C)
	if err != nil {
		return nodes.Result{}, err
	}
	for i := range out.Pix {
		out.Pix[i] = 0.5
	}
	for b := 0; b < im.Batch; b++ {
		if err := ctx.Err(); err != nil {
			return nodes.Result{}, err
		}
		src, dst := im.Frame(b), out.Frame(b)
		for y := 0; y < H; y++ {
			d := ((y+top)*nw + left) * C
			copy(dst[d:d+W*C], src[y*W*C:(y+1)*W*C])
		}
	}
	mask, err := NewMask(1, nh, nw)
	if err != nil {
		return nodes.Result{}, err
	}
	for i := range mask.Pix {
		mask.Pix[i] = 1
	}
	feathered := feather > 0 && feather*2 < H && feather*2 < W
	for i := 0; i < H; i++ {
		row := mask.Pix[(i+top)*nw+left:]
		for j := 0; j < W; j++ {
			row[j] = 0
			if !feathered {
				continue
			}
			dt, db, dl, dr := H, H, W, W
			if top != 0 {
				dt = i
			}
			if bottom != 0 {
				db = H - i
			}
			if left != 0 {
				dl = j
			}
			if right != 0 {
				dr = W - j
			}
			d := min(dt, db, dl, dr)
			if d >= feather {
				continue
			}
			f := float64(feather-d) / float64(feather)
			row[j] = float32(f * f)
		}
	}
	return nodes.Result{Outputs: []any{out, mask}}, nil
}

// Interface guards.
var (
	_ nodes.Node = (*EmptyImage)(nil)
	_ nodes.Node = (*ImageScale)(nil)
	_ nodes.Node = (*ImageScaleBy)(nil)
	_ nodes.Node = (*ImageInvert)(nil)
	_ nodes.Node = (*ImageBatch)(nil)
	_ nodes.Node = (*ImageCrop)(nil)
	_ nodes.Node = (*ImagePadForOutpaint)(nil)
)

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
type EmptyImage struct {
	Width     int `input:"width"`
	Height    int `input:"height"`
	BatchSize int `input:"batch_size"`
	Color     int `input:"color"`
}

// Schema implements nodes.Typed.
func (*EmptyImage) Schema() graph.Schema {
	return graph.Schema{
		Name: "EmptyImage", DisplayName: "EmptyImage", Category: "image",
		Inputs: []graph.Input{
			size("width", 1), size("height", 1),
			{Name: "batch_size", Type: graph.TypeInt, Default: 1, Min: graph.Num(1), Max: graph.Num(4096)},
			{Name: "color", Type: graph.TypeInt, Default: 0, Min: graph.Num(0), Max: graph.Num(0xFFFFFF), Step: graph.Num(1), Display: "color"},
		},
		Outputs: outputs("IMAGE"),
	}
}

// Run implements nodes.Typed. Each channel is ((color >> shift) & 0xFF) / 0xFF computed
// in float64 and stored as float32 (nodes.py EmptyImage.generate, torch.full's default
// dtype).
func (n *EmptyImage) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	im, err := NewImage(n.BatchSize, n.Height, n.Width, 3)
	if err != nil {
		return nodes.Result{}, err
	}
	rgb := [3]float32{
		float32(float64((n.Color>>16)&0xFF) / 0xFF),
		float32(float64((n.Color>>8)&0xFF) / 0xFF),
		float32(float64(n.Color&0xFF) / 0xFF),
	}
	for i := 0; i < len(im.Pix); i += 3 {
		if i&(1<<20-1) == 0 && ctx.Err() != nil {
			return nodes.Result{}, ctx.Err()
		}
		im.Pix[i], im.Pix[i+1], im.Pix[i+2] = rgb[0], rgb[1], rgb[2]
	}
	return nodes.One(im, nil)
}

// ImageScale is ComfyUI's ImageScale ("Upscale Image").
type ImageScale struct {
	Image         *Image `input:"image"`
	UpscaleMethod string `input:"upscale_method"`
	Width         int    `input:"width"`
	Height        int    `input:"height"`
	Crop          string `input:"crop"`
}

// Schema implements nodes.Typed.
func (*ImageScale) Schema() graph.Schema {
	return graph.Schema{
		Name: "ImageScale", DisplayName: "Upscale Image", Category: "image/upscaling",
		Inputs: []graph.Input{
			socket("image", "IMAGE"),
			combo("upscale_method", upscaleMethods...),
			size("width", 0), size("height", 0),
			combo("crop", "disabled", "center"),
		},
		Outputs: outputs("IMAGE"),
	}
}

// Run implements nodes.Typed. A zero width or height keeps the aspect ratio:
// max(1, round(other_size * asked / other_asked)) with Python's round (nodes.py
// ImageScale.upscale); both zero returns the image unchanged.
func (n *ImageScale) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	im, w, h := n.Image, n.Width, n.Height
	if w == 0 && h == 0 {
		return nodes.One(im, nil)
	}
	if im.Height == 0 || im.Width == 0 {
		return nodes.Result{}, fmt.Errorf("builtin: ImageScale: cannot scale an empty %dx%d image", im.Width, im.Height)
	}
	if w == 0 {
		w = max(1, pyRound(float64(im.Width)*float64(h)/float64(im.Height)))
	} else if h == 0 {
		h = max(1, pyRound(float64(im.Height)*float64(w)/float64(im.Width)))
	}
	return nodes.One(upscale(im, w, h, n.UpscaleMethod, n.Crop))
}

// ImageScaleBy is ComfyUI's ImageScaleBy ("Upscale Image By").
type ImageScaleBy struct {
	Image         *Image  `input:"image"`
	UpscaleMethod string  `input:"upscale_method"`
	ScaleBy       float64 `input:"scale_by"`
}

// Schema implements nodes.Typed.
func (*ImageScaleBy) Schema() graph.Schema {
	return graph.Schema{
		Name: "ImageScaleBy", DisplayName: "Upscale Image By", Category: "image/upscaling",
		Inputs: []graph.Input{
			socket("image", "IMAGE"),
			combo("upscale_method", upscaleMethods...),
			{Name: "scale_by", Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(0.01), Max: graph.Num(8.0), Step: graph.Num(0.01)},
		},
		Outputs: outputs("IMAGE"),
	}
}

// Run implements nodes.Typed: the new size is round(size * scale_by), Python's round,
// with crop disabled (nodes.py ImageScaleBy.upscale).
func (n *ImageScaleBy) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	w := pyRound(float64(n.Image.Width) * n.ScaleBy)
	h := pyRound(float64(n.Image.Height) * n.ScaleBy)
	return nodes.One(upscale(n.Image, w, h, n.UpscaleMethod, "disabled"))
}

// ImageInvert is ComfyUI's ImageInvert: 1 - image.
type ImageInvert struct {
	Image *Image `input:"image"`
}

// Schema implements nodes.Typed.
func (*ImageInvert) Schema() graph.Schema {
	return graph.Schema{
		Name: "ImageInvert", DisplayName: "Invert Image", Category: "image",
		Inputs:  []graph.Input{socket("image", "IMAGE")},
		Outputs: outputs("IMAGE"),
	}
}

// Run implements nodes.Typed (nodes.py ImageInvert.invert; every channel, alpha
// included).
func (n *ImageInvert) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	im := n.Image
	out := &Image{Batch: im.Batch, Height: im.Height, Width: im.Width, Channels: im.Channels,
		Pix: make([]float32, len(im.Pix))}
	for i, v := range im.Pix {
		out.Pix[i] = 1 - v
	}
	return nodes.One(out, nil)
}

// ImageBatch is ComfyUI's ImageBatch ("Batch Images").
type ImageBatch struct {
	Image1 *Image `input:"image1"`
	Image2 *Image `input:"image2"`
}

// Schema implements nodes.Typed.
func (*ImageBatch) Schema() graph.Schema {
	return graph.Schema{
		Name: "ImageBatch", DisplayName: "Batch Images", Category: "image",
		Inputs:  []graph.Input{socket("image1", "IMAGE"), socket("image2", "IMAGE")},
		Outputs: outputs("IMAGE"),
	}
}

// Run implements nodes.Typed: image2 is resized to image1's size (bilinear, center
// crop) when their [H, W, C] differ, then the batches are concatenated (nodes.py
// ImageBatch.batch). Different channel counts cannot be concatenated, as in torch.cat.
func (n *ImageBatch) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	a, b := n.Image1, n.Image2
	if a.Channels != b.Channels {
		return nodes.Result{}, fmt.Errorf("builtin: ImageBatch: image1 has %d channels, image2 %d", a.Channels, b.Channels)
	}
	var err error
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
	return nodes.One(out, nil)
}

// ImageCrop is ComfyUI's ImageCrop (comfy_extras/nodes_images.py).
type ImageCrop struct {
	Image  *Image `input:"image"`
	Width  int    `input:"width"`
	Height int    `input:"height"`
	X      int    `input:"x"`
	Y      int    `input:"y"`
}

// Schema implements nodes.Typed.
func (*ImageCrop) Schema() graph.Schema {
	return graph.Schema{
		Name: "ImageCrop", DisplayName: "Image Crop", Category: "image/transform",
		PythonModule: imagesModule,
		Inputs: []graph.Input{
			socket("image", "IMAGE"),
			size("width", 1), size("height", 1),
			offset("x"), offset("y"),
		},
		Outputs: outputs("IMAGE"),
	}
}

// Run implements nodes.Typed. The origin is clamped to the last pixel
// (x = min(x, W-1)) and the region to the image, as the tensor slice
// image[:, y:y+height, x:x+width, :] does (nodes_images.py ImageCrop.crop).
func (n *ImageCrop) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	im := n.Image
	// Python's min(x, W-1) may go negative on an empty image; a negative slice start then
	// counts from the end. An empty image stays empty either way.
	x := max(0, min(n.X, im.Width-1))
	y := max(0, min(n.Y, im.Height-1))
	w := max(0, min(n.Width, im.Width-x))
	h := max(0, min(n.Height, im.Height-y))
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
	return nodes.One(out, nil)
}

// ImagePadForOutpaint is ComfyUI's ImagePadForOutpaint ("Pad Image for Outpainting").
type ImagePadForOutpaint struct {
	Image      *Image `input:"image"`
	Left       int    `input:"left"`
	Top        int    `input:"top"`
	Right      int    `input:"right"`
	Bottom     int    `input:"bottom"`
	Feathering int    `input:"feathering"`
}

// Schema implements nodes.Typed.
func (*ImagePadForOutpaint) Schema() graph.Schema {
	pad := func(name string) graph.Input {
		return graph.Input{Name: name, Type: graph.TypeInt, Default: 0, Min: graph.Num(0), Max: graph.Num(MaxResolution), Step: graph.Num(8)}
	}
	return graph.Schema{
		Name: "ImagePadForOutpaint", DisplayName: "Pad Image for Outpainting", Category: "image",
		Inputs: []graph.Input{
			socket("image", "IMAGE"),
			pad("left"), pad("top"), pad("right"), pad("bottom"),
			{Name: "feathering", Type: graph.TypeInt, Default: 40, Min: graph.Num(0), Max: graph.Num(MaxResolution), Step: graph.Num(1)},
		},
		Outputs: outputs("IMAGE", "MASK"),
	}
}

// Run implements nodes.Typed (nodes.py ImagePadForOutpaint.expand_image): the new
// border is grey 0.5, the mask is 1 on the border and, inside the original image,
// ((f - d) / f)^2 within f = feathering pixels of a padded edge (d the distance to the
// nearest padded edge; an edge without padding does not count). Feathering applies only
// when 2f is below both the image's height and width.
func (n *ImagePadForOutpaint) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	im := n.Image
	left, top, right, bottom, feather := n.Left, n.Top, n.Right, n.Bottom, n.Feathering
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
	return nodes.Outputs(out, mask)
}

// Interface guards.
var (
	_ nodes.Typed = (*EmptyImage)(nil)
	_ nodes.Typed = (*ImageScale)(nil)
	_ nodes.Typed = (*ImageScaleBy)(nil)
	_ nodes.Typed = (*ImageInvert)(nil)
	_ nodes.Typed = (*ImageBatch)(nil)
	_ nodes.Typed = (*ImageCrop)(nil)
	_ nodes.Typed = (*ImagePadForOutpaint)(nil)
)

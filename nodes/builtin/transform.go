package builtin

import (
	"context"
	"fmt"
	"math"
	"strings"

	"github.com/forgeflow/forgeflow/gpu/resample"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// Geometry and alpha helpers: ImageFlip, ImageRotate, GetImageSize,
// ImageScaleToMaxDimension, ResizeAndPadImage (comfy_extras/nodes_images.py),
// ImageScaleToTotalPixels (nodes_post_processing.py), SplitImageWithAlpha and
// JoinImageWithAlpha (nodes_compositing.py).

const imagesModule = "comfy_extras.nodes_images"

// remap returns an ow×oh image whose pixel (X, Y) is im's pixel src(X, Y), per batch item.
func remap(im *Image, ow, oh int, src func(X, Y int) (int, int)) (*Image, error) {
	out, err := NewImage(im.Batch, oh, ow, im.Channels)
	if err != nil {
		return nil, err
	}
	C := im.Channels
	for b := 0; b < im.Batch; b++ {
		s, d := im.Frame(b), out.Frame(b)
		for Y := 0; Y < oh; Y++ {
			for X := 0; X < ow; X++ {
				x, y := src(X, Y)
				copy(d[(Y*ow+X)*C:(Y*ow+X+1)*C], s[(y*im.Width+x)*C:])
			}
		}
	}
	return out, nil
}

// ImageFlip is ComfyUI's ImageFlip.
type ImageFlip struct {
	Image      *Image `input:"image"`
	FlipMethod string `input:"flip_method"`
}

// Schema implements nodes.Typed.
func (*ImageFlip) Schema() graph.Schema {
	return graph.Schema{
		Name: "ImageFlip", DisplayName: "ImageFlip", Category: "image/transform", PythonModule: imagesModule,
		Inputs:  []graph.Input{socket("image", "IMAGE"), combo("flip_method", "x-axis: vertically", "y-axis: horizontally")},
		Outputs: outputs("IMAGE"),
	}
}

// Run implements nodes.Typed: "x-axis" flips the rows (torch.flip dims=[1]), "y-axis"
// the columns (dims=[2]); ComfyUI tests only the first letter.
func (n *ImageFlip) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	im := n.Image
	W, H := im.Width, im.Height
	if strings.HasPrefix(n.FlipMethod, "x") {
		return nodes.One(remap(im, W, H, func(X, Y int) (int, int) { return X, H - 1 - Y }))
	}
	return nodes.One(remap(im, W, H, func(X, Y int) (int, int) { return W - 1 - X, Y }))
}

// ImageRotate is ComfyUI's ImageRotate.
type ImageRotate struct {
	Image    *Image `input:"image"`
	Rotation string `input:"rotation"`
}

// Schema implements nodes.Typed.
func (*ImageRotate) Schema() graph.Schema {
	return graph.Schema{
		Name: "ImageRotate", DisplayName: "ImageRotate", Category: "image/transform", PythonModule: imagesModule,
		Inputs:  []graph.Input{socket("image", "IMAGE"), combo("rotation", "none", "90 degrees", "180 degrees", "270 degrees")},
		Outputs: outputs("IMAGE"),
	}
}

// Run implements nodes.Typed: torch.rot90(image, k, dims=[2, 1]) turns from the width
// axis towards the height axis, i.e. clockwise: "90 degrees" is a quarter turn
// clockwise.
func (n *ImageRotate) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	im := n.Image
	W, H := im.Width, im.Height
	switch n.Rotation {
	case "90 degrees":
		return nodes.One(remap(im, H, W, func(X, Y int) (int, int) { return Y, H - 1 - X }))
	case "180 degrees":
		return nodes.One(remap(im, W, H, func(X, Y int) (int, int) { return W - 1 - X, H - 1 - Y }))
	case "270 degrees":
		return nodes.One(remap(im, H, W, func(X, Y int) (int, int) { return W - 1 - Y, X }))
	}
	return nodes.One(im, nil)
}

// GetImageSize is ComfyUI's GetImageSize.
type GetImageSize struct {
	Image *Image `input:"image"`
}

// Schema implements nodes.Typed.
func (*GetImageSize) Schema() graph.Schema {
	return graph.Schema{
		Name: "GetImageSize", DisplayName: "Get Image Size", Category: "image", PythonModule: imagesModule,
		Description: "Returns width and height of the image, and passes it through unchanged.",
		Inputs: []graph.Input{socket("image", "IMAGE"),
			{Name: "unique_id", Section: graph.Hidden, Type: "UNIQUE_ID", Plain: true}},
		Outputs: []graph.Output{{Type: graph.TypeInt, Name: "width"}, {Type: graph.TypeInt, Name: "height"}, {Type: graph.TypeInt, Name: "batch_size"}},
	}
}

// Run implements nodes.Typed: width, height and batch size as INT outputs. (ComfyUI
// also shows them on the node through a progress_text message, which forgeflow's Env
// does not carry.)
func (n *GetImageSize) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.Outputs(int64(n.Image.Width), int64(n.Image.Height), int64(n.Image.Batch))
}

// ImageScaleToTotalPixels is ComfyUI's ImageScaleToTotalPixels.
type ImageScaleToTotalPixels struct {
	Image         *Image  `input:"image"`
	UpscaleMethod string  `input:"upscale_method"`
	Megapixels    float64 `input:"megapixels"`
}

// Schema implements nodes.Typed.
func (*ImageScaleToTotalPixels) Schema() graph.Schema {
	return graph.Schema{
		Name: "ImageScaleToTotalPixels", Category: "image/upscaling", PythonModule: postProcessingModule,
		Inputs: []graph.Input{
			socketV3("image", "IMAGE"),
			comboV3("upscale_method", upscaleMethods...),
			{Name: "megapixels", Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(0.01), Max: graph.Num(16.0), Step: graph.Num(0.01)},
		},
		Outputs: outputs("IMAGE"),
		Extra:   v3Extra(1, nil),
	}
}

// Run implements nodes.Typed: total = int(megapixels·1024²), s = sqrt(total / (W·H)),
// the new size round(W·s) × round(H·s) with Python's round, crop disabled.
func (n *ImageScaleToTotalPixels) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	im := n.Image
	if im.Width == 0 || im.Height == 0 {
		return nodes.Result{}, fmt.Errorf("builtin: ImageScaleToTotalPixels: empty %dx%d image", im.Width, im.Height)
	}
	total := math.Trunc(n.Megapixels * 1024 * 1024)
	s := math.Sqrt(total / float64(im.Width*im.Height))
	return nodes.One(upscale(im, pyRound(float64(im.Width)*s), pyRound(float64(im.Height)*s), n.UpscaleMethod, "disabled"))
}

// ImageScaleToMaxDimension is ComfyUI's ImageScaleToMaxDimension.
type ImageScaleToMaxDimension struct {
	Image         *Image `input:"image"`
	UpscaleMethod string `input:"upscale_method"`
	LargestSize   int    `input:"largest_size"`
}

// Schema implements nodes.Typed.
func (*ImageScaleToMaxDimension) Schema() graph.Schema {
	return graph.Schema{
		Name: "ImageScaleToMaxDimension", DisplayName: "ImageScaleToMaxDimension", Category: "image/upscaling",
		PythonModule: imagesModule,
		Inputs: []graph.Input{
			socket("image", "IMAGE"),
			// ComfyUI's list holds "bilinear" twice.
			combo("upscale_method", "area", "lanczos", "bilinear", "nearest-exact", "bilinear", "bicubic"),
			{Name: "largest_size", Type: graph.TypeInt, Default: 512, Min: graph.Num(0), Max: graph.Num(MaxResolution), Step: graph.Num(1)},
		},
		Outputs: outputs("IMAGE"),
	}
}

// Run implements nodes.Typed: the longer side becomes largest_size, the other
// round(other/longer · largest_size) (Python's round); a square gets both.
func (n *ImageScaleToMaxDimension) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	im, L := n.Image, n.LargestSize
	w, h := L, L
	switch {
	case im.Height > im.Width:
		w = pyRound(float64(im.Width) / float64(im.Height) * float64(L))
	case im.Width > im.Height:
		h = pyRound(float64(im.Height) / float64(im.Width) * float64(L))
	}
	return nodes.One(upscale(im, w, h, n.UpscaleMethod, "disabled"))
}

// ResizeAndPadImage is ComfyUI's ResizeAndPadImage.
type ResizeAndPadImage struct {
	Image         *Image `input:"image"`
	TargetWidth   int    `input:"target_width"`
	TargetHeight  int    `input:"target_height"`
	PaddingColor  string `input:"padding_color"`
	Interpolation string `input:"interpolation"`
}

// Schema implements nodes.Typed.
func (*ResizeAndPadImage) Schema() graph.Schema {
	return graph.Schema{
		Name: "ResizeAndPadImage", DisplayName: "ResizeAndPadImage", Category: "image/transform",
		PythonModule: imagesModule,
		Inputs: []graph.Input{
			socket("image", "IMAGE"),
			size("target_width", 1), size("target_height", 1),
			combo("padding_color", "white", "black"),
			combo("interpolation", "area", "bicubic", "nearest-exact", "bilinear", "lanczos"),
		},
		Outputs: outputs("IMAGE"),
	}
}

// Run implements nodes.Typed (nodes_images.py ResizeAndPadImage.resize_and_pad): scaled
// by min(tw/W, th/H) to int(W·s) × int(H·s) (truncated), centred ((t - new) // 2) on a
// white (1) or black (0) canvas of the target size.
func (n *ResizeAndPadImage) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	im, tw, th := n.Image, n.TargetWidth, n.TargetHeight
	if im.Width == 0 || im.Height == 0 {
		return nodes.Result{}, fmt.Errorf("builtin: ResizeAndPadImage: empty %dx%d image", im.Width, im.Height)
	}
	s := min(float64(tw)/float64(im.Width), float64(th)/float64(im.Height))
	nw, nh := int(float64(im.Width)*s), int(float64(im.Height)*s)
	resized, err := upscale(im, nw, nh, n.Interpolation, "disabled")
	if err != nil {
		return nodes.Result{}, err
	}
	out, err := NewImage(im.Batch, th, tw, im.Channels)
	if err != nil {
		return nodes.Result{}, err
	}
	if n.PaddingColor != "black" {
		for i := range out.Pix {
			out.Pix[i] = 1
		}
	}
	x0, y0 := (tw-nw)/2, (th-nh)/2
	C := im.Channels
	for b := 0; b < im.Batch; b++ {
		src, dst := resized.Frame(b), out.Frame(b)
		for y := 0; y < nh; y++ {
			copy(dst[((y+y0)*tw+x0)*C:], src[y*nw*C:(y+1)*nw*C])
		}
	}
	return nodes.One(out, nil)
}

const compositingModule = "comfy_extras.nodes_compositing"

// SplitImageWithAlpha is ComfyUI's SplitImageWithAlpha ("Split Image with Alpha").
type SplitImageWithAlpha struct {
	Image *Image `input:"image"`
}

// Schema implements nodes.Typed.
func (*SplitImageWithAlpha) Schema() graph.Schema {
	name := "Split Image with Alpha"
	return graph.Schema{
		Name: "SplitImageWithAlpha", DisplayName: name, Category: "mask/compositing", PythonModule: compositingModule,
		Inputs:  []graph.Input{socketV3("image", "IMAGE")},
		Outputs: outputs("IMAGE", "MASK"),
		Extra:   v3Extra(2, &name),
	}
}

// Run implements nodes.Typed: the first three channels, and 1 - alpha as the mask (1 -
// ones, i.e. zeros, where the image has no fourth channel).
func (n *SplitImageWithAlpha) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	im := n.Image
	rgb := im
	if im.Channels > 3 {
		rgb = keepChannels(im, 3)
	}
	m, err := NewMask(im.Batch, im.Height, im.Width)
	if err != nil {
		return nodes.Result{}, err
	}
	if im.Channels > 3 {
		for i := range m.Pix {
			m.Pix[i] = 1 - im.Pix[i*im.Channels+3]
		}
	}
	return nodes.Outputs(rgb, m)
}

// JoinImageWithAlpha is ComfyUI's JoinImageWithAlpha ("Join Image with Alpha").
type JoinImageWithAlpha struct {
	Image *Image `input:"image"`
	Alpha *Mask  `input:"alpha"`
}

// Schema implements nodes.Typed.
func (*JoinImageWithAlpha) Schema() graph.Schema {
	name := "Join Image with Alpha"
	return graph.Schema{
		Name: "JoinImageWithAlpha", DisplayName: name, Category: "mask/compositing", PythonModule: compositingModule,
		Inputs:  []graph.Input{socketV3("image", "IMAGE"), socketV3("alpha", "MASK")},
		Outputs: outputs("IMAGE"),
		Extra:   v3Extra(1, &name),
	}
}

// Run implements nodes.Typed (nodes_compositing.py JoinImageWithAlpha.execute): the
// mask is resized bilinearly to the image's size and inverted (alpha = 1 - mask), then
// appended to the first three channels; the batch is the shorter of the two.
func (n *JoinImageWithAlpha) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	im, m := n.Image, n.Alpha
	B := min(im.Batch, m.Batch)
	if B == 0 {
		return nodes.Result{}, fmt.Errorf("builtin: JoinImageWithAlpha: empty batch")
	}
	H, W := im.Height, im.Width
	alpha := m.Pix
	if m.Height != H || m.Width != W {
		if m.Height == 0 || m.Width == 0 {
			return nodes.Result{}, fmt.Errorf("builtin: JoinImageWithAlpha: empty %dx%d mask", m.Width, m.Height)
		}
		var err error
		if alpha, err = resample.Upscale(m.Pix, m.Batch, 1, m.Height, m.Width, W, H, "bilinear", "disabled"); err != nil {
			return nodes.Result{}, fmt.Errorf("builtin: JoinImageWithAlpha: %w", err)
		}
	}
	c := min(im.Channels, 3)
	out, err := NewImage(B, H, W, c+1)
	if err != nil {
		return nodes.Result{}, err
	}
	for p := 0; p < B*H*W; p++ {
		copy(out.Pix[p*(c+1):p*(c+1)+c], im.Pix[p*im.Channels:p*im.Channels+c])
		out.Pix[p*(c+1)+c] = 1 - alpha[p]
	}
	return nodes.One(out, nil)
}

// Interface guards.
var (
	_ nodes.Typed = (*ImageFlip)(nil)
	_ nodes.Typed = (*ImageRotate)(nil)
	_ nodes.Typed = (*GetImageSize)(nil)
	_ nodes.Typed = (*ImageScaleToTotalPixels)(nil)
	_ nodes.Typed = (*ImageScaleToMaxDimension)(nil)
	_ nodes.Typed = (*ResizeAndPadImage)(nil)
	_ nodes.Typed = (*SplitImageWithAlpha)(nil)
	_ nodes.Typed = (*JoinImageWithAlpha)(nil)
)

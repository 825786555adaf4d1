package builtin

import (
	"context"
	"errors"
	"fmt"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// ImageStitch (comfy_extras/nodes_images.py, upstreamed from KJNodes): image2 joined to
// image1 on one side, optionally resized to match and separated by a coloured strip.

// stitchColors are spacing_color's values: one grey level or an RGB triple.
var stitchColors = map[string][]float32{
	"white": {1}, "black": {0}, "red": {1, 0, 0}, "green": {0, 1, 0}, "blue": {0, 0, 1},
}

// ImageStitch is ComfyUI's ImageStitch.
type ImageStitch struct {
	Image1         *Image `input:"image1"`
	Direction      string `input:"direction"`
	MatchImageSize bool   `input:"match_image_size"`
	SpacingWidth   int    `input:"spacing_width"`
	SpacingColor   string `input:"spacing_color"`
	Image2         *Image `input:"image2"`
}

// Schema implements nodes.Typed.
func (*ImageStitch) Schema() graph.Schema {
	direction := combo("direction", "right", "down", "left", "up")
	direction.Bare, direction.Default = false, "right"
	color := combo("spacing_color", "white", "black", "red", "green", "blue")
	color.Bare, color.Default = false, "white"
	image2 := socket("image2", "IMAGE")
	image2.Section = graph.Optional
	return graph.Schema{
		Name: "ImageStitch", DisplayName: "Image Stitch", Category: "image/transform", PythonModule: imagesModule,
		Description: "\nStitches image2 to image1 in the specified direction.\nIf image2 is not provided, returns image1 unchanged.\nOptional spacing can be added between images.\n",
		Inputs: []graph.Input{
			socket("image1", "IMAGE"), direction,
			{Name: "match_image_size", Type: graph.TypeBoolean, Default: true},
			{Name: "spacing_width", Type: graph.TypeInt, Default: 0, Min: graph.Num(0), Max: graph.Num(1024), Step: graph.Num(2)},
			color, image2,
		},
		Outputs: outputs("IMAGE"),
	}
}

// Run implements nodes.Typed (ImageStitch.stitch): the shorter batch repeats its last
// image; with match_image_size image2 is resized (lanczos) to image1's height (left,
// right) or width (up, down) keeping its aspect ratio, truncated as int() does;
// otherwise the smaller one is padded on both sides, centred, with the spacing colour's
// grey level (0 for a coloured one) in every channel; a missing channel is filled with
// ones; the strip between is spacing_width rounded up to even.
func (n *ImageStitch) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if n.Image2 == nil {
		return nodes.One(n.Image1, nil)
	}
	a, b := n.Image1, n.Image2
	if a.Batch == 0 || b.Batch == 0 {
		return nodes.Result{}, errors.New("builtin: ImageStitch: an empty image batch")
	}
	batch := max(a.Batch, b.Batch)
	horizontal := n.Direction == "left" || n.Direction == "right"
	color, ok := stitchColors[n.SpacingColor]
	if !ok {
		return nodes.Result{}, fmt.Errorf("builtin: ImageStitch: unknown spacing_color %q", n.SpacingColor)
	}
	if n.MatchImageSize {
		aspect := float64(b.Width) / float64(b.Height)
		tw, th := int(float64(a.Height)*aspect), a.Height
		if !horizontal {
			tw, th = a.Width, int(float64(a.Width)/aspect)
		}
		if tw <= 0 || th <= 0 {
			return nodes.Result{}, fmt.Errorf("builtin: ImageStitch: matching image2 (%dx%d) to image1 (%dx%d) leaves %dx%d", b.Width, b.Height, a.Width, a.Height, tw, th)
		}
		var err error
		if b, err = upscale(b, tw, th, "lanczos", "disabled"); err != nil {
			return nodes.Result{}, err
		}
	}
	pad := float32(0)
	if len(color) == 1 {
		pad = color[0]
	}
	channels := max(a.Channels, b.Channels)
	// Each side, placed in its own canvas of the final cross size (centred padding).
	cross := func(im *Image) int {
		if horizontal {
			return im.Height
		}
		return im.Width
	}
	size := max(cross(a), cross(b))
	if n.MatchImageSize && cross(a) != cross(b) {
		return nodes.Result{}, fmt.Errorf("builtin: ImageStitch: the images are %d and %d pixels across after resizing", cross(a), cross(b))
	}
	sw := n.SpacingWidth + n.SpacingWidth%2
	parts := []*Image{a, b}
	if n.Direction == "left" || n.Direction == "up" {
		parts = []*Image{b, a}
	}
	along := func(im *Image) int {
		if horizontal {
			return im.Width
		}
		return im.Height
	}
	total := along(a) + along(b) + sw
	ow, oh := total, size
	if !horizontal {
		ow, oh = size, total
	}
	out, err := NewImage(batch, oh, ow, channels)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: ImageStitch: %w", err)
	}
	// set writes one output pixel from channel values (missing channels are 1).
	set := func(o []float32, x, y int, px []float32) {
		d := o[(y*ow+x)*channels : (y*ow+x+1)*channels]
		for c := range d {
			d[c] = 1
			if c < len(px) {
				d[c] = px[c]
			}
		}
	}
	strip := make([]float32, channels)
	for c := range strip {
		switch {
		case len(color) == 3 && c < 3:
			strip[c] = color[c]
		case len(color) == 1 && c < 3:
			strip[c] = color[0]
		}
	}
	if channels == 4 {
		strip[3] = 1
	}
	padPx := make([]float32, channels)
	for c := range padPx {
		padPx[c] = pad
	}
	for bi := 0; bi < batch; bi++ {
		if err := ctx.Err(); err != nil {
			return nodes.Result{}, err
		}
		o := out.Frame(bi)
		at := 0 // position along the joining axis
		for i, im := range parts {
			if i == 1 && sw > 0 {
				for s := 0; s < sw; s++ {
					for k := 0; k < size; k++ {
						x, y := at+s, k
						if !horizontal {
							x, y = k, at+s
						}
						set(o, x, y, strip)
					}
				}
				at += sw
			}
			src := im.Frame(min(bi, im.Batch-1))
			before := (size - cross(im)) / 2
			for l := 0; l < along(im); l++ {
				for k := 0; k < size; k++ {
					x, y := at+l, k
					if !horizontal {
						x, y = k, at+l
					}
					sk := k - before
					if sk < 0 || sk >= cross(im) {
						// padded before the missing channels are added as ones
						set(o, x, y, padPx[:im.Channels])
						continue
					}
					sx, sy := l, sk
					if !horizontal {
						sx, sy = sk, l
					}
					set(o, x, y, src[(sy*im.Width+sx)*im.Channels:(sy*im.Width+sx+1)*im.Channels])
				}
			}
			at += along(im)
		}
	}
	return nodes.One(out, nil)
}

var _ nodes.Typed = (*ImageStitch)(nil)

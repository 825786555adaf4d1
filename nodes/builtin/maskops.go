package builtin

import (
	"context"
	"fmt"
	"image/png"
	"math"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// The rest of comfy_extras/nodes_mask.py: ImageColorToMask, ThresholdMask, CropMask,
// MaskComposite, FeatherMask, GrowMask and MaskPreview.

// ImageColorToMask is ComfyUI's ImageColorToMask: 1 where a pixel's 8-bit RGB equals color.
type ImageColorToMask struct {
	Image *Image `input:"image"`
	Color int    `input:"color"`
}

// Schema implements nodes.Typed.
func (*ImageColorToMask) Schema() graph.Schema {
	return graph.Schema{
		Name: "ImageColorToMask", DisplayName: "ImageColorToMask", Category: "mask", PythonModule: maskModule,
		Inputs: []graph.Input{
			socket("image", "IMAGE"),
			{Name: "color", Type: graph.TypeInt, Default: 0, Min: graph.Num(0), Max: graph.Num(0xFFFFFF), Step: graph.Num(1), Display: "color"},
		},
		Outputs: outputs("MASK"),
	}
}

// Run implements nodes.Typed (nodes_mask.py ImageColorToMask.image_to_mask): each
// channel is round(clamp(v, 0, 1) * 255) (torch.round: half to even), packed as
// R<<16 | G<<8 | B.
func (n *ImageColorToMask) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	im := n.Image
	if im.Channels < 3 {
		return nodes.Result{}, fmt.Errorf("builtin: ImageColorToMask: needs 3 channels, the image has %d", im.Channels)
	}
	m, err := NewMask(im.Batch, im.Height, im.Width)
	if err != nil {
		return nodes.Result{}, err
	}
	level := func(v float32) int {
		return int(math.RoundToEven(float64(clamp01(v) * 255)))
	}
	for i := range m.Pix {
		p := im.Pix[i*im.Channels:]
		if level(p[0])<<16+level(p[1])<<8+level(p[2]) == n.Color {
			m.Pix[i] = 1
		}
	}
	return nodes.One(m, nil)
}

// ThresholdMask is ComfyUI's ThresholdMask: 1 where mask > value.
type ThresholdMask struct {
	Mask  *Mask   `input:"mask"`
	Value float64 `input:"value"`
}

// Schema implements nodes.Typed.
func (*ThresholdMask) Schema() graph.Schema {
	return graph.Schema{
		Name: "ThresholdMask", DisplayName: "ThresholdMask", Category: "mask", PythonModule: maskModule,
		Inputs: []graph.Input{
			socket("mask", "MASK"),
			{Name: "value", Type: graph.TypeFloat, Default: 0.5, Min: graph.Num(0.0), Max: graph.Num(1.0), Step: graph.Num(0.01)},
		},
		Outputs: outputs("MASK"),
	}
}

// Run implements nodes.Typed: (mask > value).float(), the value compared as float32 as
// torch does with a Python scalar.
func (n *ThresholdMask) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	m, t := n.Mask, float32(n.Value)
	out := &Mask{Batch: m.Batch, Height: m.Height, Width: m.Width, Pix: make([]float32, len(m.Pix))}
	for i, x := range m.Pix {
		if x > t {
			out.Pix[i] = 1
		}
	}
	return nodes.One(out, nil)
}

// CropMask is ComfyUI's CropMask.
type CropMask struct {
	Mask   *Mask `input:"mask"`
	X      int   `input:"x"`
	Y      int   `input:"y"`
	Width  int   `input:"width"`
	Height int   `input:"height"`
}

// Schema implements nodes.Typed.
func (*CropMask) Schema() graph.Schema {
	return graph.Schema{
		Name: "CropMask", DisplayName: "CropMask", Category: "mask", PythonModule: maskModule,
		Inputs:  []graph.Input{socket("mask", "MASK"), offset("x"), offset("y"), size("width", 1), size("height", 1)},
		Outputs: outputs("MASK"),
	}
}

// Run implements nodes.Typed: mask[:, y:y+height, x:x+width] with Python's clipping
// slices; unlike ImageCrop the origin is not clamped, so a crop past the edge is empty.
func (n *CropMask) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	m := n.Mask
	x0, y0 := min(n.X, m.Width), min(n.Y, m.Height)
	x1, y1 := min(n.X+n.Width, m.Width), min(n.Y+n.Height, m.Height)
	out, err := NewMask(m.Batch, y1-y0, x1-x0)
	if err != nil {
		return nodes.Result{}, err
	}
	for b := 0; b < m.Batch; b++ {
		src, dst := m.Plane(b), out.Plane(b)
		for y := y0; y < y1; y++ {
			copy(dst[(y-y0)*out.Width:(y-y0+1)*out.Width], src[y*m.Width+x0:y*m.Width+x1])
		}
	}
	return nodes.One(out, nil)
}

var maskOperations = []string{"multiply", "add", "subtract", "and", "or", "xor"}

// MaskComposite is ComfyUI's MaskComposite.
type MaskComposite struct {
	Destination *Mask  `input:"destination"`
	Source      *Mask  `input:"source"`
	X           int    `input:"x"`
	Y           int    `input:"y"`
	Operation   string `input:"operation"`
}

// Schema implements nodes.Typed.
func (*MaskComposite) Schema() graph.Schema {
	return graph.Schema{
		Name: "MaskComposite", DisplayName: "MaskComposite", Category: "mask", PythonModule: maskModule,
		Inputs: []graph.Input{socket("destination", "MASK"), socket("source", "MASK"), offset("x"), offset("y"),
			combo("operation", maskOperations...)},
		Outputs: outputs("MASK"),
	}
}

// roundBool is torch's x.round().bool(): round half to even, then non-zero.
func roundBool(x float32) bool { return math.RoundToEven(float64(x)) != 0 }

// maskOperation returns MaskComposite's per-element operation.
func maskOperation(op string) func(d, s float32) float32 {
	switch op {
	case "multiply":
		return func(d, s float32) float32 { return d * s }
	case "add":
		return func(d, s float32) float32 { return d + s }
	case "subtract":
		return func(d, s float32) float32 { return d - s }
	}
	return func(d, s float32) float32 { // and, or, xor
		a, b := roundBool(d), roundBool(s)
		r := a && b
		if op == "or" {
			r = a || b
		} else if op == "xor" {
			r = a != b
		}
		if r {
			return 1
		}
		return 0
	}
}

// Run implements nodes.Typed (nodes_mask.py MaskComposite.combine): source placed at
// (x, y) and combined with the destination under it; the logical operations round both
// to 0/1 first. The whole result is clamped to [0, 1]. A source batch of one applies to
// every destination mask.
func (n *MaskComposite) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	dst, src, x, y := n.Destination, n.Source, n.X, n.Y
	f := maskOperation(n.Operation)
	if src.Batch != dst.Batch && src.Batch != 1 {
		return nodes.Result{}, fmt.Errorf("builtin: MaskComposite: source batch %d does not fit destination batch %d", src.Batch, dst.Batch)
	}
	out := &Mask{Batch: dst.Batch, Height: dst.Height, Width: dst.Width, Pix: append([]float32(nil), dst.Pix...)}
	// Beyond the destination's edge nothing overlaps (ComfyUI's slices go negative there).
	right, bottom := min(x+src.Width, dst.Width), min(y+src.Height, dst.Height)
	for b := 0; b < out.Batch; b++ {
		o, s := out.Plane(b), src.Plane(min(b, src.Batch-1))
		for yy := y; yy < bottom; yy++ {
			for xx := x; xx < right; xx++ {
				i := yy*out.Width + xx
				o[i] = f(o[i], s[(yy-y)*src.Width+xx-x])
			}
		}
	}
	for i, v := range out.Pix {
		out.Pix[i] = clamp01(v)
	}
	return nodes.One(out, nil)
}

// FeatherMask is ComfyUI's FeatherMask.
type FeatherMask struct {
	Mask   *Mask `input:"mask"`
	Left   int   `input:"left"`
	Top    int   `input:"top"`
	Right  int   `input:"right"`
	Bottom int   `input:"bottom"`
}

// Schema implements nodes.Typed.
func (*FeatherMask) Schema() graph.Schema {
	return graph.Schema{
		Name: "FeatherMask", DisplayName: "FeatherMask", Category: "mask", PythonModule: maskModule,
		Inputs:  []graph.Input{socket("mask", "MASK"), offset("left"), offset("top"), offset("right"), offset("bottom")},
		Outputs: outputs("MASK"),
	}
}

// Run implements nodes.Typed (nodes_mask.py FeatherMask.feather): column x < left is
// multiplied by (x+1)/left, and so on for each side. ComfyUI indexes the right and
// bottom sides as output[..., -x], and -0 is the first column/row, not the last: the
// first column gets the factor 1/right and the last 2/right. That quirk is kept so
// results match.
func (n *FeatherMask) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	m := n.Mask
	W, H := m.Width, m.Height
	left, top, right, bottom := min(n.Left, W), min(n.Top, H), min(n.Right, W), min(n.Bottom, H)
	out := &Mask{Batch: m.Batch, Height: H, Width: W, Pix: append([]float32(nil), m.Pix...)}
	col := func(x int, rate float32) {
		for b := 0; b < out.Batch; b++ {
			p := out.Plane(b)
			for y := 0; y < H; y++ {
				p[y*W+x] *= rate
			}
		}
	}
	row := func(y int, rate float32) {
		for b := 0; b < out.Batch; b++ {
			p := out.Plane(b)[y*W : (y+1)*W]
			for x := range p {
				p[x] *= rate
			}
		}
	}
	wrap := func(i, n int) int { return ((i % n) + n) % n } // Python's negative index
	for x := 0; x < left; x++ {
		col(x, float32((float64(x)+1)/float64(left)))
	}
	for x := 0; x < right; x++ {
		col(wrap(-x, W), float32(float64(x+1)/float64(right)))
	}
	for y := 0; y < top; y++ {
		row(y, float32(float64(y+1)/float64(top)))
	}
	for y := 0; y < bottom; y++ {
		row(wrap(-y, H), float32(float64(y+1)/float64(bottom)))
	}
	return nodes.One(out, nil)
}

// GrowMask is ComfyUI's GrowMask.
type GrowMask struct {
	Mask           *Mask `input:"mask"`
	Expand         int   `input:"expand"`
	TaperedCorners bool  `input:"tapered_corners"`
}

// Schema implements nodes.Typed.
func (*GrowMask) Schema() graph.Schema {
	return graph.Schema{
		Name: "GrowMask", DisplayName: "GrowMask", Category: "mask", PythonModule: maskModule,
		Inputs: []graph.Input{
			socket("mask", "MASK"),
			{Name: "expand", Type: graph.TypeInt, Default: 0, Min: graph.Num(-MaxResolution), Max: graph.Num(MaxResolution), Step: graph.Num(1)},
			{Name: "tapered_corners", Type: graph.TypeBoolean, Default: true},
		},
		Outputs: outputs("MASK"),
	}
}

// Run implements nodes.Typed (nodes_mask.py GrowMask.expand_mask): |expand| rounds of
// scipy.ndimage.grey_dilation (expand > 0) or grey_erosion (< 0) with a 3×3 footprint,
// a cross when tapered_corners, else the full square. scipy's default 'reflect' border
// repeats the edge sample, so at radius 1 the filter takes the max (min) over the
// in-bounds neighbours. After H+W rounds the result no longer changes, so more rounds
// are skipped.
func (n *GrowMask) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	m, tapered := n.Mask, n.TaperedCorners
	W, H := m.Width, m.Height
	out := &Mask{Batch: m.Batch, Height: H, Width: W, Pix: append([]float32(nil), m.Pix...)}
	rounds := min(abs(n.Expand), H+W)
	grow := n.Expand > 0
	tmp := make([]float32, W*H)
	for b := 0; b < out.Batch; b++ {
		p := out.Plane(b)
		for r := 0; r < rounds; r++ {
			if err := ctx.Err(); err != nil {
				return nodes.Result{}, err
			}
			copy(tmp, p)
			for y := 0; y < H; y++ {
				for x := 0; x < W; x++ {
					v := tmp[y*W+x]
					for dy := -1; dy <= 1; dy++ {
						for dx := -1; dx <= 1; dx++ {
							if tapered && dx != 0 && dy != 0 {
								continue
							}
							yy, xx := y+dy, x+dx
							if yy < 0 || yy >= H || xx < 0 || xx >= W {
								continue
							}
							if s := tmp[yy*W+xx]; (grow && s > v) || (!grow && s < v) {
								v = s
							}
						}
					}
					p[y*W+x] = v
				}
			}
		}
	}
	return nodes.One(out, nil)
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// MaskPreview is ComfyUI's MaskPreview: the mask saved as a grey PNG in the temp folder.
type MaskPreview struct {
	opts Options
	Mask *Mask `input:"mask"`
}

// Schema implements nodes.Typed.
func (*MaskPreview) Schema() graph.Schema {
	return graph.Schema{
		Name: "MaskPreview", DisplayName: "MaskPreview", Category: "mask", PythonModule: maskModule,
		// Inherited from SaveImage in ComfyUI.
		Description: "Saves the input images to your ComfyUI output directory.",
		OutputNode:  true,
		Inputs:      append([]graph.Input{socket("mask", "MASK")}, hiddenPromptInputs...),
	}
}

// Run implements nodes.Typed: the mask as a grey RGB image, saved as PreviewImage saves
// (with SaveImage's compression level).
func (n *MaskPreview) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	im, err := maskImage(n.Mask)
	if err != nil {
		return nodes.Result{}, err
	}
	return saver{opts: n.opts, class: "MaskPreview", temp: true, level: png.DefaultCompression}.save(ctx, env, im, "ComfyUI")
}

// Interface guards.
var (
	_ nodes.Typed = (*ImageColorToMask)(nil)
	_ nodes.Typed = (*ThresholdMask)(nil)
	_ nodes.Typed = (*CropMask)(nil)
	_ nodes.Typed = (*MaskComposite)(nil)
	_ nodes.Typed = (*FeatherMask)(nil)
	_ nodes.Typed = (*GrowMask)(nil)
	_ nodes.Typed = (*MaskPreview)(nil)
)

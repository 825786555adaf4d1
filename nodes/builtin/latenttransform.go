package builtin

import (
	"context"
	"fmt"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu/resample"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// Latent transform nodes: nodes.py LatentBlend, LatentCrop, LatentFlip, LatentRotate and
// comfy_extras/nodes_mask.py LatentCompositeMasked. As in ComfyUI each keeps the input
// dict's noise_mask and batch_index unchanged.

// LatentBlend is nodes.py LatentBlend: samples1·f + samples2·(1−f), samples2 resized
// (bicubic, centre crop) to samples1's size where the shapes differ.
type LatentBlend struct {
	Samples1    *sd.Latent `input:"samples1"`
	Samples2    *sd.Latent `input:"samples2"`
	BlendFactor float64    `input:"blend_factor"`
}

// Schema implements nodes.Typed.
func (*LatentBlend) Schema() graph.Schema {
	return graph.Schema{
		Name: "LatentBlend", DisplayName: "Latent Blend", Category: "_for_testing",
		Inputs: []graph.Input{socket("samples1", "LATENT"), socket("samples2", "LATENT"),
			{Name: "blend_factor", Type: graph.TypeFloat, Default: 0.5, Min: graph.Num(0), Max: graph.Num(1), Step: graph.Num(0.01)}},
		Outputs: outputs("LATENT"),
	}
}

// Run implements nodes.Typed. ComfyUI resizes H×W only; batches or channels that still
// differ then follow torch's broadcasting (or fail as it does).
func (n *LatentBlend) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	a, err := latentArray(n.Samples1)
	if err != nil {
		return nodes.Result{}, err
	}
	b, err := latentArray(n.Samples2)
	if err != nil {
		return nodes.Result{}, err
	}
	if a.s != b.s && (a.s[2] != b.s[2] || a.s[3] != b.s[3] || a.s[1] != b.s[1]) {
		if _, err := sizeOf("latent", b.s[0], b.s[1], a.s[2], a.s[3]); err != nil {
			return nodes.Result{}, err
		}
		d, err := resample.Upscale(b.data, b.s[0], b.s[1], b.s[2], b.s[3], a.s[3], a.s[2], "bicubic", "center")
		if err != nil {
			return nodes.Result{}, fmt.Errorf("builtin: LatentBlend: %w", err)
		}
		b = latentArr{d, [4]int{b.s[0], b.s[1], a.s[2], a.s[3]}}
	}
	f, rest := float32(n.BlendFactor), float32(1-n.BlendFactor)
	out, err := broadcast(a, b, func(x, y float32) float32 { return x*f + y*rest })
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: LatentBlend: %w", err)
	}
	return nodes.One(out.result(n.Samples1))
}

// LatentCompositeMasked is nodes_mask.py LatentCompositeMasked: source pasted onto a copy
// of destination at (x, y) pixels (x/8, y/8 latent cells), through mask where given.
type LatentCompositeMasked struct {
	Destination  *sd.Latent `input:"destination"`
	Source       *sd.Latent `input:"source"`
	X            int        `input:"x"`
	Y            int        `input:"y"`
	ResizeSource bool       `input:"resize_source"`
	Mask         *Mask      `input:"mask"`
}

// Schema implements nodes.Typed.
func (*LatentCompositeMasked) Schema() graph.Schema {
	return graph.Schema{
		Name: "LatentCompositeMasked", DisplayName: "LatentCompositeMasked", Category: "latent",
		PythonModule: "comfy_extras.nodes_mask",
		Inputs: []graph.Input{
			socket("destination", "LATENT"), socket("source", "LATENT"),
			step8("x", 0, 0), step8("y", 0, 0),
			{Name: "resize_source", Type: graph.TypeBoolean, Default: false},
			{Name: "mask", Type: "MASK", Bare: true, Section: graph.Optional},
		},
		Outputs: outputs("LATENT"),
	}
}

// Run implements nodes.Typed (nodes_mask.py composite with multiplier 8): the source is
// resized (bilinear, F.interpolate) to the destination when asked, its batch repeated to
// the destination's; the mask is resized bilinearly to the source and repeated to its
// batch; the part of the source inside the destination becomes mask·source +
// (1−mask)·destination.
func (n *LatentCompositeMasked) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	dst, err := latentArray(n.Destination)
	if err != nil {
		return nodes.Result{}, err
	}
	src, err := latentArray(n.Source)
	if err != nil {
		return nodes.Result{}, err
	}
	fail := func(err error) (nodes.Result, error) {
		return nodes.Result{}, fmt.Errorf("builtin: LatentCompositeMasked: %w", err)
	}
	if n.ResizeSource && (src.s[2] != dst.s[2] || src.s[3] != dst.s[3]) {
		if _, err := sizeOf("latent", src.s[0], src.s[1], dst.s[2], dst.s[3]); err != nil {
			return fail(err)
		}
		d, err := resample.Upscale(src.data, src.s[0], src.s[1], src.s[2], src.s[3], dst.s[3], dst.s[2], "bilinear", "disabled")
		if err != nil {
			return fail(err)
		}
		src = latentArr{d, [4]int{src.s[0], src.s[1], dst.s[2], dst.s[3]}}
	}
	if src, err = repeatLatentBatch(src, dst.s[0]); err != nil {
		return fail(err)
	}
	if src.s[1] != dst.s[1] {
		return fail(fmt.Errorf("source has %d channels, destination %d", src.s[1], dst.s[1]))
	}
	sh, sw := src.s[2], src.s[3]
	// One mask plane per source item: all ones without a mask.
	var mask latentArr
	if n.Mask != nil {
		m := latentArr{n.Mask.Pix, [4]int{n.Mask.Batch, 1, n.Mask.Height, n.Mask.Width}}
		if m.s[2] != sh || m.s[3] != sw {
			d, err := resample.Upscale(m.data, m.s[0], 1, m.s[2], m.s[3], sw, sh, "bilinear", "disabled")
			if err != nil {
				return fail(err)
			}
			m = latentArr{d, [4]int{m.s[0], 1, sh, sw}}
		}
		if mask, err = repeatLatentBatch(m, src.s[0]); err != nil {
			return fail(err)
		}
	}
	x := max(-sw*8, min(n.X, dst.s[3]*8))
	y := max(-sh*8, min(n.Y, dst.s[2]*8))
	left, top := x/8, y/8
	visW, visH := min(sw, dst.s[3]-left), min(sh, dst.s[2]-top)
	out := append([]float32(nil), dst.data...)
	for b := 0; b < dst.s[0]; b++ {
		for c := 0; c < dst.s[1]; c++ {
			for yy := 0; yy < visH; yy++ {
				for xx := 0; xx < visW; xx++ {
					s := src.data[((b*src.s[1]+c)*sh+yy)*sw+xx]
					di := ((b*dst.s[1]+c)*dst.s[2]+top+yy)*dst.s[3] + left + xx
					m := float32(1) // ComfyUI's ones_like(source) without a mask
					if mask.data != nil {
						m = mask.data[(b*sh+yy)*sw+xx]
					}
					out[di] = m*s + (1-m)*out[di]
				}
			}
		}
	}
	return nodes.One(newLatent(n.Destination, out, dst.s))
}

// LatentCrop is nodes.py LatentCrop ("Crop Latent"): a width×height pixel window at
// (x, y), in latent cells (//8); the origin is moved back so that at least 8 cells
// remain, and the window is cut at the latent's edge, with Python's slice rules.
type LatentCrop struct {
	Samples *sd.Latent `input:"samples"`
	Width   int        `input:"width"`
	Height  int        `input:"height"`
	X       int        `input:"x"`
	Y       int        `input:"y"`
}

// Schema implements nodes.Typed.
func (*LatentCrop) Schema() graph.Schema {
	return graph.Schema{
		Name: "LatentCrop", DisplayName: "Crop Latent", Category: "latent/transform",
		Inputs: []graph.Input{socket("samples", "LATENT"),
			step8("width", 512, 64), step8("height", 512, 64), step8("x", 0, 0), step8("y", 0, 0)},
		Outputs: outputs("LATENT"),
	}
}

// Run implements nodes.Typed.
func (n *LatentCrop) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	a, err := latentArray(n.Samples)
	if err != nil {
		return nodes.Result{}, err
	}
	x, y := n.X/8, n.Y/8
	if x > a.s[3]-8 {
		x = a.s[3] - 8
	}
	if y > a.s[2]-8 {
		y = a.s[2] - 8
	}
	y0, y1 := pySliceBounds(int64(y), int64(y+n.Height/8), a.s[2])
	x0, x1 := pySliceBounds(int64(x), int64(x+n.Width/8), a.s[3])
	if y1 == y0 || x1 == x0 {
		return nodes.Result{}, fmt.Errorf("builtin: LatentCrop: the crop of %v at (%d, %d) is empty", a.s, n.X, n.Y)
	}
	r := narrowLatent(narrowLatent(a, 2, y0, y1-y0), 3, x0, x1-x0)
	return nodes.One(r.result(n.Samples))
}

// LatentFlip is nodes.py LatentFlip: "x-axis" flips rows (vertically), "y-axis" columns.
type LatentFlip struct {
	Samples    *sd.Latent `input:"samples"`
	FlipMethod string     `input:"flip_method"`
}

// Schema implements nodes.Typed.
func (*LatentFlip) Schema() graph.Schema {
	return graph.Schema{
		Name: "LatentFlip", DisplayName: "Flip Latent", Category: "latent/transform",
		Inputs:  []graph.Input{socket("samples", "LATENT"), combo("flip_method", "x-axis: vertically", "y-axis: horizontally")},
		Outputs: outputs("LATENT"),
	}
}

// Run implements nodes.Typed.
func (n *LatentFlip) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	a, err := latentArray(n.Samples)
	if err != nil {
		return nodes.Result{}, err
	}
	h, w := a.s[2], a.s[3]
	vertical := n.FlipMethod[0] == 'x'
	out := make([]float32, len(a.data))
	for p := 0; p < a.s[0]*a.s[1]; p++ {
		for yy := 0; yy < h; yy++ {
			for xx := 0; xx < w; xx++ {
				sy, sx := yy, w-1-xx
				if vertical {
					sy, sx = h-1-yy, xx
				}
				out[(p*h+yy)*w+xx] = a.data[(p*h+sy)*w+sx]
			}
		}
	}
	return nodes.One(newLatent(n.Samples, out, a.s))
}

// LatentRotate is nodes.py LatentRotate: torch.rot90 over dims [3, 2], which turns the
// latent clockwise.
type LatentRotate struct {
	Samples  *sd.Latent `input:"samples"`
	Rotation string     `input:"rotation"`
}

// Schema implements nodes.Typed.
func (*LatentRotate) Schema() graph.Schema {
	return graph.Schema{
		Name: "LatentRotate", DisplayName: "Rotate Latent", Category: "latent/transform",
		Inputs:  []graph.Input{socket("samples", "LATENT"), combo("rotation", "none", "90 degrees", "180 degrees", "270 degrees")},
		Outputs: outputs("LATENT"),
	}
}

// Run implements nodes.Typed.
func (n *LatentRotate) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	a, err := latentArray(n.Samples)
	if err != nil {
		return nodes.Result{}, err
	}
	k := map[string]int{"90 degrees": 1, "180 degrees": 2, "270 degrees": 3}[n.Rotation]
	if k == 0 {
		return nodes.One(a.result(n.Samples))
	}
	h, w := a.s[2], a.s[3]
	oh, ow := h, w
	if k != 2 {
		oh, ow = w, h
	}
	out := make([]float32, len(a.data))
	for p := 0; p < a.s[0]*a.s[1]; p++ {
		for i := 0; i < oh; i++ {
			for j := 0; j < ow; j++ {
				var sy, sx int
				switch k {
				case 1: // out[i][j] = in[h-1-j][i]
					sy, sx = h-1-j, i
				case 2:
					sy, sx = h-1-i, w-1-j
				case 3: // out[i][j] = in[j][w-1-i]
					sy, sx = j, w-1-i
				}
				out[(p*oh+i)*ow+j] = a.data[(p*h+sy)*w+sx]
			}
		}
	}
	return nodes.One(newLatent(n.Samples, out, [4]int{a.s[0], a.s[1], oh, ow}))
}

// Interface guards.
var (
	_ nodes.Typed = (*LatentBlend)(nil)
	_ nodes.Typed = (*LatentCompositeMasked)(nil)
	_ nodes.Typed = (*LatentCrop)(nil)
	_ nodes.Typed = (*LatentFlip)(nil)
	_ nodes.Typed = (*LatentRotate)(nil)
)

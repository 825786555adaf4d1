package builtin

import (
	"context"
	"fmt"

	"github.com/forgeflow/forgeflow/gpu/resample"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// ImageCompositeMasked (comfy_extras/nodes_mask.py) and the batch helpers of
// comfy_extras/nodes_images.py (RepeatImageBatch, ImageFromBatch).

// ImageCompositeMasked is ComfyUI's ImageCompositeMasked.
type ImageCompositeMasked struct {
	Destination  *Image `input:"destination"`
	Source       *Image `input:"source"`
	X            int    `input:"x"`
	Y            int    `input:"y"`
	ResizeSource bool   `input:"resize_source"`
	Mask         *Mask  `input:"mask"` // optional: nil pastes the whole source
}

// Schema implements nodes.Typed.
func (*ImageCompositeMasked) Schema() graph.Schema {
	return graph.Schema{
		Name: "ImageCompositeMasked", DisplayName: "ImageCompositeMasked", Category: "image", PythonModule: maskModule,
		Inputs: []graph.Input{
			socket("destination", "IMAGE"), socket("source", "IMAGE"), offset("x"), offset("y"),
			{Name: "resize_source", Type: graph.TypeBoolean, Default: false},
			{Name: "mask", Type: "MASK", Section: graph.Optional, Bare: true},
		},
		Outputs: outputs("IMAGE"),
	}
}

// repeatToBatch is comfy.utils.repeat_to_batch_size on the batch axis: the first n items,
// or the batch tiled until it has n.
func repeatToBatch(pix []float32, batch, n int) []float32 {
	per := len(pix) / max(batch, 1)
	out := make([]float32, n*per)
	for b := 0; b < n; b++ {
		copy(out[b*per:(b+1)*per], pix[(b%batch)*per:])
	}
	return out
}

// Run implements nodes.Typed (nodes_mask.py composite with multiplier 1): the source
// (optionally resized bilinearly to the destination's size, its batch repeated to the
// destination's) is pasted at (x, y) through the mask (bilinearly resized to the
// source's size; all ones without a mask): out = m·source + (1 - m)·destination, clipped
// to the destination's bounds. An RGBA source over an RGB destination loses its alpha
// (node_helpers.image_alpha_fix); the reverse fails, as it does in ComfyUI.
func (n *ImageCompositeMasked) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	dst, src, x, y, mask := n.Destination, n.Source, n.X, n.Y, n.Mask
	var err error
	switch {
	case dst.Channels < src.Channels:
		src = keepChannels(src, dst.Channels)
	case dst.Channels > src.Channels:
		return nodes.Result{}, fmt.Errorf("builtin: ImageCompositeMasked: destination has %d channels but source only %d", dst.Channels, src.Channels)
	}
	if n.ResizeSource && (src.Height != dst.Height || src.Width != dst.Width) {
		if src, err = upscale(src, dst.Width, dst.Height, "bilinear", "disabled"); err != nil {
			return nodes.Result{}, err
		}
	}
	B, C := dst.Batch, dst.Channels
	sh, sw := src.Height, src.Width
	if src.Batch == 0 || sh == 0 || sw == 0 {
		return nodes.One(dst, nil)
	}
	srcPix := repeatToBatch(src.Pix, src.Batch, B)
	// The mask becomes one plane per batch item at the source's size.
	var mpix []float32
	if mask != nil {
		mp := mask.Pix
		if mask.Height != sh || mask.Width != sw {
			if mask.Height == 0 || mask.Width == 0 {
				return nodes.Result{}, fmt.Errorf("builtin: ImageCompositeMasked: empty %dx%d mask", mask.Width, mask.Height)
			}
			if mp, err = resample.Upscale(mask.Pix, mask.Batch, 1, mask.Height, mask.Width, sw, sh, "bilinear", "disabled"); err != nil {
				return nodes.Result{}, fmt.Errorf("builtin: ImageCompositeMasked: %w", err)
			}
		}
		if mask.Batch == 0 {
			return nodes.Result{}, fmt.Errorf("builtin: ImageCompositeMasked: empty mask batch")
		}
		mpix = repeatToBatch(mp, mask.Batch, B)
	}
	out := &Image{Batch: B, Height: dst.Height, Width: dst.Width, Channels: C, Pix: append([]float32(nil), dst.Pix...)}
	right, bottom := min(x+sw, dst.Width), min(y+sh, dst.Height)
	for b := 0; b < B; b++ {
		if err := ctx.Err(); err != nil {
			return nodes.Result{}, err
		}
		o := out.Frame(b)
		s := srcPix[b*sh*sw*C : (b+1)*sh*sw*C]
		for yy := y; yy < bottom; yy++ {
			for xx := x; xx < right; xx++ {
				si := (yy-y)*sw + (xx - x)
				m := float32(1)
				if mpix != nil {
					m = mpix[b*sh*sw+si]
				}
				inv := 1 - m
				for c := 0; c < C; c++ {
					oi := (yy*dst.Width+xx)*C + c
					o[oi] = m*s[si*C+c] + inv*o[oi]
				}
			}
		}
	}
	return nodes.One(out, nil)
}

// RepeatImageBatch is ComfyUI's RepeatImageBatch: the batch repeated amount times.
type RepeatImageBatch struct {
	Image  *Image `input:"image"`
	Amount int    `input:"amount"`
}

// Schema implements nodes.Typed.
func (*RepeatImageBatch) Schema() graph.Schema {
	return graph.Schema{
		Name: "RepeatImageBatch", DisplayName: "RepeatImageBatch", Category: "image/batch", PythonModule: imagesModule,
		Inputs: []graph.Input{socket("image", "IMAGE"),
			{Name: "amount", Type: graph.TypeInt, Default: 1, Min: graph.Num(1), Max: graph.Num(4096)}},
		Outputs: outputs("IMAGE"),
	}
}

// Run implements nodes.Typed: image.repeat((amount, 1, 1, 1)), the whole batch tiled.
func (n *RepeatImageBatch) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	im := n.Image
	out, err := NewImage(im.Batch*n.Amount, im.Height, im.Width, im.Channels)
	if err != nil {
		return nodes.Result{}, err
	}
	for i := 0; i < n.Amount; i++ {
		copy(out.Pix[i*len(im.Pix):], im.Pix)
	}
	return nodes.One(out, nil)
}

// ImageFromBatch is ComfyUI's ImageFromBatch.
type ImageFromBatch struct {
	Image      *Image `input:"image"`
	BatchIndex int    `input:"batch_index"`
	Length     int    `input:"length"`
}

// Schema implements nodes.Typed.
func (*ImageFromBatch) Schema() graph.Schema {
	return graph.Schema{
		Name: "ImageFromBatch", DisplayName: "ImageFromBatch", Category: "image/batch", PythonModule: imagesModule,
		Inputs: []graph.Input{socket("image", "IMAGE"),
			{Name: "batch_index", Type: graph.TypeInt, Default: 0, Min: graph.Num(0), Max: graph.Num(4095)},
			{Name: "length", Type: graph.TypeInt, Default: 1, Min: graph.Num(1), Max: graph.Num(4096)}},
		Outputs: outputs("IMAGE"),
	}
}

// Run implements nodes.Typed (nodes_images.py ImageFromBatch.frombatch): the index is
// clamped to the last item and the length to what is left.
func (n *ImageFromBatch) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	im := n.Image
	if im.Batch == 0 {
		return nodes.One(im, nil)
	}
	idx := min(im.Batch-1, n.BatchIndex)
	length := min(im.Batch-idx, n.Length)
	per := im.Height * im.Width * im.Channels
	out := &Image{Batch: length, Height: im.Height, Width: im.Width, Channels: im.Channels,
		Pix: append([]float32(nil), im.Pix[idx*per:(idx+length)*per]...)}
	return nodes.One(out, nil)
}

// Interface guards.
var (
	_ nodes.Typed = (*ImageCompositeMasked)(nil)
	_ nodes.Typed = (*RepeatImageBatch)(nil)
	_ nodes.Typed = (*ImageFromBatch)(nil)
)

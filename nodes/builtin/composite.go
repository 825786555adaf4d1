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
type ImageCompositeMasked struct{ schema graph.Schema }

func newImageCompositeMasked() *ImageCompositeMasked {
	pos := func(name string) graph.Input {
		return widget(name, graph.TypeInt, map[string]any{"default": 0, "min": 0, "max": MaxResolution, "step": 1})
	}
	mask := socket("mask", "MASK")
	mask.Section = graph.Optional
	return &ImageCompositeMasked{graph.Schema{
		Name: "ImageCompositeMasked", DisplayName: "ImageCompositeMasked", Category: "image", PythonModule: maskModule,
		Inputs: []graph.Input{
			socket("destination", "IMAGE"), socket("source", "IMAGE"), pos("x"), pos("y"),
			widget("resize_source", graph.TypeBoolean, map[string]any{"default": false}),
			mask,
		},
		Outputs: outputs("IMAGE"),
	}}
}

// Schema implements nodes.Node.
func (n *ImageCompositeMasked) Schema() *graph.Schema { return &n.schema }

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

// Run implements nodes.Node (nodes_mask.py composite with multiplier 1): the source
// (optionally resized bilinearly to the destination's size, its batch repeated to the
// destination's) is pasted at (x, y) through the mask (bilinearly resized to the
// source's size; all ones without a mask): out = m·source + (1 - m)·destination, clipped
// to the destination's bounds. An RGBA source over an RGB destination loses its alpha
// (node_helpers.image_alpha_fix); the reverse fails, as it does in ComfyUI.
func (n *ImageCompositeMasked) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	dst, err := imageInput(in, "destination")
	if err != nil {
		return nodes.Result{}, err
	}
	src, err := imageInput(in, "source")
	if err != nil {
		return nodes.Result{}, err
	}
	x, err := intIn(in, "x", 0, MaxResolution)
	if err != nil {
		return nodes.Result{}, err
	}
	y, err := intIn(in, "y", 0, MaxResolution)
	if err != nil {
		return nodes.Result{}, err
	}
	resize, err := in.Bool("resize_source")
	if err != nil {
		return nodes.Result{}, err
	}
	var mask *Mask
	if in.Has("mask") {
		if mask, err = maskInput(in, "mask"); err != nil {
			return nodes.Result{}, err
		}
	}
	switch {
	case dst.Channels < src.Channels:
		src = keepChannels(src, dst.Channels)
	case dst.Channels > src.Channels:
		return nodes.Result{}, fmt.Errorf("builtin: ImageCompositeMasked: destination has %d channels but source only %d", dst.Channels, src.Channels)
	}
	if resize && (src.Height != dst.Height || src.Width != dst.Width) {
		if src, err = upscale(src, dst.Width, dst.Height, "bilinear", "disabled"); err != nil {
			return nodes.Result{}, err
		}
	}
	B, C := dst.Batch, dst.Channels
	sh, sw := src.Height, src.Width
	if src.Batch == 0 || sh == 0 || sw == 0 {
		return nodes.Result{Outputs: []any{dst}}, nil
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
	return nodes.Result{Outputs: []any{out}}, nil
}

// RepeatImageBatch is ComfyUI's RepeatImageBatch: the batch repeated amount times.
type RepeatImageBatch struct{ schema graph.Schema }

func newRepeatImageBatch() *RepeatImageBatch {
	return &RepeatImageBatch{graph.Schema{
		Name: "RepeatImageBatch", DisplayName: "RepeatImageBatch", Category: "image/batch",
		PythonModule: "comfy_extras.nodes_images",
		Inputs: []graph.Input{socket("image", "IMAGE"),
			widget("amount", graph.TypeInt, map[string]any{"default": 1, "min": 1, "max": 4096})},
		Outputs: outputs("IMAGE"),
	}}
}

// Schema implements nodes.Node.
func (n *RepeatImageBatch) Schema() *graph.Schema { return &n.schema }

// Run implements nodes.Node: image.repeat((amount, 1, 1, 1)), the whole batch tiled.
func (n *RepeatImageBatch) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	im, err := imageInput(in, "image")
	if err != nil {
		return nodes.Result{}, err
	}
	amount, err := intIn(in, "amount", 1, 4096)
	if err != nil {
		return nodes.Result{}, err
	}
	out, err := NewImage(im.Batch*amount, im.Height, im.Width, im.Channels)
	if err != nil {
		return nodes.Result{}, err
	}
	for i := 0; i < amount; i++ {
		copy(out.Pix[i*len(im.Pix):], im.Pix)
	}
	return nodes.Result{Outputs: []any{out}}, nil
}

// ImageFromBatch is ComfyUI's ImageFromBatch.
type ImageFromBatch struct{ schema graph.Schema }

func newImageFromBatch() *ImageFromBatch {
	return &ImageFromBatch{graph.Schema{
		Name: "ImageFromBatch", DisplayName: "ImageFromBatch", Category: "image/batch",
		PythonModule: "comfy_extras.nodes_images",
		Inputs: []graph.Input{socket("image", "IMAGE"),
			widget("batch_index", graph.TypeInt, map[string]any{"default": 0, "min": 0, "max": 4095}),
			widget("length", graph.TypeInt, map[string]any{"default": 1, "min": 1, "max": 4096})},
		Outputs: outputs("IMAGE"),
	}}
}

// Schema implements nodes.Node.
func (n *ImageFromBatch) Schema() *graph.Schema { return &n.schema }

// Run implements nodes.Node (nodes_images.py ImageFromBatch.frombatch): the index is
// clamped to the last item and the length to what is left.
func (n *ImageFromBatch) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	im, err := imageInput(in, "image")
	if err != nil {
		return nodes.Result{}, err
	}
	idx, err := intIn(in, "batch_index", 0, 4095)
	if err != nil {
		return nodes.Result{}, err
	}
	length, err := intIn(in, "length", 1, 4096)
	if err != nil {
		return nodes.Result{}, err
	}
	if im.Batch == 0 {
		return nodes.Result{Outputs: []any{im}}, nil
	}
	idx = min(im.Batch-1, idx)
	length = min(im.Batch-idx, length)
	per := im.Height * im.Width * im.Channels
	out := &Image{Batch: length, Height: im.Height, Width: im.Width, Channels: im.Channels,
		Pix: append([]float32(nil), im.Pix[idx*per:(idx+length)*per]...)}
	return nodes.Result{Outputs: []any{out}}, nil
}

// Interface guards.
var (
	_ nodes.Node = (*ImageCompositeMasked)(nil)
	_ nodes.Node = (*RepeatImageBatch)(nil)
	_ nodes.Node = (*ImageFromBatch)(nil)
)

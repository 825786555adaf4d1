package builtin

import (
	"context"
	"fmt"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// The mask family of comfy_extras/nodes_mask.py: ImageToMask, MaskToImage, SolidMask,
// InvertMask.

const maskModule = "comfy_extras.nodes_mask"

// ImageToMask is ComfyUI's ImageToMask ("Convert Image to Mask").
type ImageToMask struct{ schema graph.Schema }

// imageChannels are ImageToMask's channel choices; the index is the channel taken.
var imageChannels = []string{"red", "green", "blue", "alpha"}

func newImageToMask() *ImageToMask {
	return &ImageToMask{graph.Schema{
		Name: "ImageToMask", DisplayName: "Convert Image to Mask", Category: "mask",
		PythonModule: maskModule,
		Inputs:       []graph.Input{socket("image", "IMAGE"), combo("channel", imageChannels...)},
		Outputs:      outputs("MASK"),
	}}
}

// Schema implements nodes.Node.
func (n *ImageToMask) Schema() *graph.Schema { return &n.schema }

// Run implements nodes.Node: the mask is image[:, :, :, channel] (nodes_mask.py
// ImageToMask.image_to_mask). Asking for alpha of an RGB image is an error, as the
// tensor index is in ComfyUI.
func (n *ImageToMask) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	im, err := imageInput(in, "image")
	if err != nil {
		return nodes.Result{}, err
	}
	ch, err := in.String("channel")
	if err != nil {
		return nodes.Result{}, err
	}
	c := -1
	for i, name := range imageChannels {
		if name == ch {
			c = i
		}
	}
	if c < 0 {
		return nodes.Result{}, fmt.Errorf("builtin: ImageToMask: unknown channel %q", ch)
	}
	if c >= im.Channels {
		return nodes.Result{}, fmt.Errorf("builtin: ImageToMask: channel %q needs %d channels, the image has %d", ch, c+1, im.Channels)
	}
	m, err := NewMask(im.Batch, im.Height, im.Width)
	if err != nil {
		return nodes.Result{}, err
	}
	for i := range m.Pix {
		m.Pix[i] = im.Pix[i*im.Channels+c]
	}
	return nodes.Result{Outputs: []any{m}}, nil
}

// MaskToImage is ComfyUI's MaskToImage ("Convert Mask to Image").
type MaskToImage struct{ schema graph.Schema }

func newMaskToImage() *MaskToImage {
	return &MaskToImage{graph.Schema{
		Name: "MaskToImage", DisplayName: "Convert Mask to Image", Category: "mask",
		PythonModule: maskModule,
		Inputs:       []graph.Input{socket("mask", "MASK")},
		Outputs:      outputs("IMAGE"),
	}}
}

// Schema implements nodes.Node.
func (n *MaskToImage) Schema() *graph.Schema { return &n.schema }

// Run implements nodes.Node: the mask repeated into three grey channels
// (nodes_mask.py MaskToImage.mask_to_image).
func (n *MaskToImage) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	m, err := maskInput(in, "mask")
	if err != nil {
		return nodes.Result{}, err
	}
	im, err := maskImage(m)
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.Result{Outputs: []any{im}}, nil
}

// maskImage is the mask as a grey RGB image: reshape to [B, 1, H, W], movedim, expand to
// three channels.
func maskImage(m *Mask) (*Image, error) {
	im, err := NewImage(m.Batch, m.Height, m.Width, 3)
	if err != nil {
		return nil, err
	}
	for i, v := range m.Pix {
		im.Pix[3*i], im.Pix[3*i+1], im.Pix[3*i+2] = v, v, v
	}
	return im, nil
}

// SolidMask is ComfyUI's SolidMask.
type SolidMask struct{ schema graph.Schema }

func newSolidMask() *SolidMask {
	return &SolidMask{graph.Schema{
		Name: "SolidMask", DisplayName: "SolidMask", Category: "mask",
		PythonModule: maskModule,
		Inputs: []graph.Input{
			widget("value", graph.TypeFloat, map[string]any{"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
			size("width", 1), size("height", 1),
		},
		Outputs: outputs("MASK"),
	}}
}

// Schema implements nodes.Node.
func (n *SolidMask) Schema() *graph.Schema { return &n.schema }

// Run implements nodes.Node: a [1, height, width] mask filled with value, stored as
// float32 (nodes_mask.py SolidMask.solid).
func (n *SolidMask) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	v, err := floatIn(in, "value", 0, 1)
	if err != nil {
		return nodes.Result{}, err
	}
	w, err := intIn(in, "width", 1, MaxResolution)
	if err != nil {
		return nodes.Result{}, err
	}
	h, err := intIn(in, "height", 1, MaxResolution)
	if err != nil {
		return nodes.Result{}, err
	}
	m, err := NewMask(1, h, w)
	if err != nil {
		return nodes.Result{}, err
	}
	fv := float32(v)
	for i := range m.Pix {
		m.Pix[i] = fv
	}
	return nodes.Result{Outputs: []any{m}}, nil
}

// InvertMask is ComfyUI's InvertMask.
type InvertMask struct{ schema graph.Schema }

func newInvertMask() *InvertMask {
	return &InvertMask{graph.Schema{
		Name: "InvertMask", DisplayName: "InvertMask", Category: "mask",
		PythonModule: maskModule,
		Inputs:       []graph.Input{socket("mask", "MASK")},
		Outputs:      outputs("MASK"),
	}}
}

// Schema implements nodes.Node.
func (n *InvertMask) Schema() *graph.Schema { return &n.schema }

// Run implements nodes.Node: 1 - mask (nodes_mask.py InvertMask.invert).
func (n *InvertMask) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	m, err := maskInput(in, "mask")
	if err != nil {
		return nodes.Result{}, err
	}
	out := &Mask{Batch: m.Batch, Height: m.Height, Width: m.Width, Pix: make([]float32, len(m.Pix))}
	for i, v := range m.Pix {
		out.Pix[i] = 1 - v
	}
	return nodes.Result{Outputs: []any{out}}, nil
}

// Interface guards.
var (
	_ nodes.Node = (*ImageToMask)(nil)
	_ nodes.Node = (*MaskToImage)(nil)
	_ nodes.Node = (*SolidMask)(nil)
	_ nodes.Node = (*InvertMask)(nil)
)

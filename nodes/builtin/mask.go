package builtin

import (
	"context"
	"fmt"
	"slices"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// The mask family of comfy_extras/nodes_mask.py: ImageToMask, MaskToImage, SolidMask,
// InvertMask.

const maskModule = "comfy_extras.nodes_mask"

// imageChannels are ImageToMask's channel choices; the index is the channel taken.
var imageChannels = []string{"red", "green", "blue", "alpha"}

// ImageToMask is ComfyUI's ImageToMask ("Convert Image to Mask").
type ImageToMask struct {
	Image   *Image `input:"image"`
	Channel string `input:"channel"`
}

// Schema implements nodes.Typed.
func (*ImageToMask) Schema() graph.Schema {
	return graph.Schema{
		Name: "ImageToMask", DisplayName: "Convert Image to Mask", Category: "mask",
		PythonModule: maskModule,
		Inputs:       []graph.Input{socket("image", "IMAGE"), combo("channel", imageChannels...)},
		Outputs:      outputs("MASK"),
	}
}

// Run implements nodes.Typed: the mask is image[:, :, :, channel] (nodes_mask.py
// ImageToMask.image_to_mask). Asking for alpha of an RGB image is an error, as the
// tensor index is in ComfyUI.
func (n *ImageToMask) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	im := n.Image
	c := slices.Index(imageChannels, n.Channel)
	if c >= im.Channels {
		return nodes.Result{}, fmt.Errorf("builtin: ImageToMask: channel %q needs %d channels, the image has %d", n.Channel, c+1, im.Channels)
	}
	m, err := NewMask(im.Batch, im.Height, im.Width)
	if err != nil {
		return nodes.Result{}, err
	}
	for i := range m.Pix {
		m.Pix[i] = im.Pix[i*im.Channels+c]
	}
	return nodes.One(m, nil)
}

// MaskToImage is ComfyUI's MaskToImage ("Convert Mask to Image").
type MaskToImage struct {
	Mask *Mask `input:"mask"`
}

// Schema implements nodes.Typed.
func (*MaskToImage) Schema() graph.Schema {
	return graph.Schema{
		Name: "MaskToImage", DisplayName: "Convert Mask to Image", Category: "mask",
		PythonModule: maskModule,
		Inputs:       []graph.Input{socket("mask", "MASK")},
		Outputs:      outputs("IMAGE"),
	}
}

// Run implements nodes.Typed: the mask repeated into three grey channels
// (nodes_mask.py MaskToImage.mask_to_image).
func (n *MaskToImage) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(maskImage(n.Mask))
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
type SolidMask struct {
	Value  float64 `input:"value"`
	Width  int     `input:"width"`
	Height int     `input:"height"`
}

// Schema implements nodes.Typed.
func (*SolidMask) Schema() graph.Schema {
	return graph.Schema{
		Name: "SolidMask", DisplayName: "SolidMask", Category: "mask",
		PythonModule: maskModule,
		Inputs: []graph.Input{
			{Name: "value", Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(0.0), Max: graph.Num(1.0), Step: graph.Num(0.01)},
			size("width", 1), size("height", 1),
		},
		Outputs: outputs("MASK"),
	}
}

// Run implements nodes.Typed: a [1, height, width] mask filled with value, stored as
// float32 (nodes_mask.py SolidMask.solid).
func (n *SolidMask) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	m, err := NewMask(1, n.Height, n.Width)
	if err != nil {
		return nodes.Result{}, err
	}
	fv := float32(n.Value)
	for i := range m.Pix {
		m.Pix[i] = fv
	}
	return nodes.One(m, nil)
}

// InvertMask is ComfyUI's InvertMask.
type InvertMask struct {
	Mask *Mask `input:"mask"`
}

// Schema implements nodes.Typed.
func (*InvertMask) Schema() graph.Schema {
	return graph.Schema{
		Name: "InvertMask", DisplayName: "InvertMask", Category: "mask",
		PythonModule: maskModule,
		Inputs:       []graph.Input{socket("mask", "MASK")},
		Outputs:      outputs("MASK"),
	}
}

// Run implements nodes.Typed: 1 - mask (nodes_mask.py InvertMask.invert).
func (n *InvertMask) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	m := n.Mask
	out := &Mask{Batch: m.Batch, Height: m.Height, Width: m.Width, Pix: make([]float32, len(m.Pix))}
	for i, v := range m.Pix {
		out.Pix[i] = 1 - v
	}
	return nodes.One(out, nil)
}

// Interface guards.
var (
	_ nodes.Typed = (*ImageToMask)(nil)
	_ nodes.Typed = (*MaskToImage)(nil)
	_ nodes.Typed = (*SolidMask)(nil)
	_ nodes.Typed = (*InvertMask)(nil)
)

package builtin

import (
	"context"

	"github.com/forgeflow/forgeflow/diffusion/rng"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// ImageAddNoise (comfy_extras/nodes_images.py).

// ImageAddNoise is ComfyUI's ImageAddNoise: gaussian noise from torch's CPU generator.
type ImageAddNoise struct {
	Image    *Image  `input:"image"`
	Seed     uint64  `input:"seed"`
	Strength float64 `input:"strength"`
}

// Schema implements nodes.Typed.
func (*ImageAddNoise) Schema() graph.Schema {
	return graph.Schema{
		Name: "ImageAddNoise", DisplayName: "ImageAddNoise", Category: "image", PythonModule: imagesModule,
		Inputs: []graph.Input{
			socket("image", "IMAGE"),
			seedInput("seed", "The random seed used for creating the noise."),
			{Name: "strength", Type: graph.TypeFloat, Default: 0.5, Min: graph.Num(0.0), Max: graph.Num(1.0), Step: graph.Num(0.01)},
		},
		Outputs: outputs("IMAGE"),
	}
}

// Run implements nodes.Typed: clip(image + strength · randn(image.shape), 0, 1), the
// noise drawn as torch.randn with a generator seeded by torch.manual_seed(seed), over
// the [B, H, W, C] tensor in its memory order. Seeds run to 2^64-1, as torch's.
func (n *ImageAddNoise) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	im := n.Image
	out := &Image{Batch: im.Batch, Height: im.Height, Width: im.Width, Channels: im.Channels,
		Pix: make([]float32, len(im.Pix))}
	rng.New(n.Seed).Randn(out.Pix)
	s := float32(n.Strength)
	for i, v := range im.Pix {
		out.Pix[i] = clamp01(v + s*out.Pix[i])
	}
	return nodes.One(out, nil)
}

// Interface guard.
var _ nodes.Typed = (*ImageAddNoise)(nil)

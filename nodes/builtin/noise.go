package builtin

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"

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

// seedIn reads a 64-bit unsigned seed (ComfyUI's seeds run to 2^64-1). int64 values are
// taken as they are; a float64 (how a JSON number above 2^63 may arrive) must be integral
// and in range.
func seedIn(in nodes.Inputs, name string) (uint64, error) {
	switch v := in[name].(type) {
	case int64:
		if v >= 0 {
			return uint64(v), nil
		}
	case int:
		if v >= 0 {
			return uint64(v), nil
		}
	case uint64:
		return v, nil
	case float64:
		if v >= 0 && v < 1<<64 && v == math.Trunc(v) {
			return uint64(v), nil
		}
	case json.Number:
		if u, err := strconv.ParseUint(v.String(), 10, 64); err == nil {
			return u, nil
		}
	case nil:
		return 0, fmt.Errorf("builtin: input %q: missing", name)
	}
	return 0, fmt.Errorf("builtin: input %q: %v is not a seed in [0, 2^64)", name, in[name])
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

package sd

import (
	"math"

	"github.com/forgeflow/forgeflow/gpu"
)

// DeepShrink is PatchModelAddDownscale's pair of UNet patches ("Kohya Deep Shrink",
// comfy_extras/nodes_model_downscale.py): while SigmaEnd ≤ σ ≤ SigmaStart, input block
// Block's output is resized by 1/Factor (each side round(side·(1/Factor)), Python's
// half-to-even round) with DownMethod, so the deeper blocks run on a smaller latent; at
// every output block whose hidden state's height differs from its skip connection's,
// the hidden state is resized to the skip's size with UpMethod. Methods are
// common_upscale's ("bicubic", "nearest-exact", "bilinear", "area", "bislerp"), without
// crop. Install the input half with Model.WithInputBlockPatch (after the skip for
// downscale_after_skip) and the output half with WithOutputBlockPatch.
type DeepShrink struct {
	Block                int
	Factor               float64
	SigmaStart, SigmaEnd float64
	DownMethod, UpMethod string
}

func (p DeepShrink) inputBlock(rt *gpu.Runtime, i int, sigma float32, h *gpu.Tensor) (*gpu.Tensor, error) {
	s := float64(sigma)
	if i != p.Block || !(s <= p.SigmaStart && s >= p.SigmaEnd) {
		return h, nil
	}
	inv := 1.0 / p.Factor
	w := int(math.RoundToEven(float64(h.Dim(3)) * inv))
	ht := int(math.RoundToEven(float64(h.Dim(2)) * inv))
	return gpu.Upscale(rt, h, gpu.UpscaleParams{Width: w, Height: ht, Method: p.DownMethod, Crop: "disabled"})
}

func (p DeepShrink) outputBlock(rt *gpu.Runtime, _ *Model, _ int, h, skip *gpu.Tensor) (*gpu.Tensor, *gpu.Tensor, error) {
	if h.Dim(2) == skip.Dim(2) {
		return h, skip, nil
	}
	up, err := gpu.Upscale(rt, h, gpu.UpscaleParams{Width: skip.Dim(3), Height: skip.Dim(2), Method: p.UpMethod, Crop: "disabled"})
	return up, skip, err
}

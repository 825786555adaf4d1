package unet

import (
	"context"
	"fmt"

	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/gpu"
)

// Inputs are one UNet evaluation's inputs.
type Inputs struct {
	X         *gpu.Tensor // (N, C, H, W) latent, already scaled for the model
	Timesteps *gpu.Tensor // (N) timesteps as floats
	Context   *gpu.Tensor // (N, T, D) cross-attention context
	Y         *gpu.Tensor // (N, adm) SDXL label vector, or nil
}

// Forward evaluates the UNet (UNetModel.forward): timestep (and label) embedding, the
// input blocks with their outputs kept for the skip connections, the middle block, the
// output blocks concatenating those skips, and the output head. It checks ctx between
// blocks.
func (m *Model) Forward(ctx context.Context, rt *gpu.Runtime, in Inputs) (*gpu.Tensor, error) {
	if in.X == nil || in.Timesteps == nil || in.Context == nil {
		return nil, fmt.Errorf("unet: x, timesteps and context are required")
	}
	if (m.LabelEmbed.L1.Weight != nil) != (in.Y != nil) {
		return nil, fmt.Errorf("unet: the model %s a label vector y", map[bool]string{true: "needs", false: "takes no"}[m.LabelEmbed.L1.Weight != nil])
	}
	emb, err := m.embed(rt, in)
	if err != nil {
		return nil, err
	}
	embSiLU, err := then(emb, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.SiLU(rt, t) })
	if err != nil {
		return nil, err
	}
	defer embSiLU.Release()

	var skips []*gpu.Tensor
	defer func() {
		for _, s := range skips {
			s.Release()
		}
	}()
	h, err := gpu.Contiguous(rt, in.X)
	if err != nil {
		return nil, err
	}
	for i, block := range m.Input {
		if err := ctx.Err(); err != nil {
			h.Release()
			return nil, err
		}
		if h, err = m.runBlock(rt, block, h, embSiLU, in.Context, nil); err != nil {
			return nil, fmt.Errorf("unet: input block %d: %w", i, err)
		}
		keep, err := gpu.Contiguous(rt, h) // a second reference for the skip
		if err != nil {
			h.Release()
			return nil, err
		}
		skips = append(skips, keep)
	}
	if h, err = m.runBlock(rt, m.Middle, h, embSiLU, in.Context, nil); err != nil {
		return nil, fmt.Errorf("unet: middle block: %w", err)
	}
	for i, block := range m.Output {
		if err := ctx.Err(); err != nil {
			h.Release()
			return nil, err
		}
		skip := skips[len(skips)-1]
		skips = skips[:len(skips)-1]
		cat, err := gpu.Concat(rt, 1, h, skip)
		h.Release()
		skip.Release()
		if err != nil {
			return nil, err
		}
		// An output block's upsampler resizes to the next skip's size (UNetModel.forward's
		// output_shape), so that latents whose sides are not multiples of the total
		// downsampling (33 → 17 → 9 → 5 at 264 px) come back up as 5 → 9 → 17 → 33.
		var upTo *gpu.Tensor
		if len(skips) > 0 {
			upTo = skips[len(skips)-1]
		}
		if h, err = m.runBlock(rt, block, cat, embSiLU, in.Context, upTo); err != nil {
			return nil, fmt.Errorf("unet: output block %d: %w", i, err)
		}
	}
	h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return groupNorm(rt, &m.OutNorm, t, 1e-5, true) })
	if err != nil {
		return nil, err
	}
	return then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return m.OutConv.Same(rt, t, 1) })
}

// embed is time_embed(timestep_embedding(t)) (+ label_emb(y)).
func (m *Model) embed(rt *gpu.Runtime, in Inputs) (*gpu.Tensor, error) {
	te, err := gpu.TimestepEmbedding(rt, in.Timesteps, gpu.TimestepParams{Dim: m.ModelChannels, MaxPeriod: 10000})
	if err != nil {
		return nil, err
	}
	mlp := func(x *gpu.Tensor, a, b *nn.Linear) (*gpu.Tensor, error) {
		h, err := a.Forward(rt, x)
		if err != nil {
			return nil, err
		}
		if h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.SiLU(rt, t) }); err != nil {
			return nil, err
		}
		return then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return b.Forward(rt, t) })
	}
	emb, err := then(te, func(t *gpu.Tensor) (*gpu.Tensor, error) { return mlp(t, &m.TimeEmbed1, &m.TimeEmbed2) })
	if err != nil || in.Y == nil {
		return emb, err
	}
	le, err := mlp(in.Y, &m.LabelEmbed.L1, &m.LabelEmbed.L2)
	if err != nil {
		emb.Release()
		return nil, err
	}
	defer le.Release()
	return then(emb, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Add(rt, t, le) })
}

// runBlock applies a block's modules in order, consuming h. An upsampler doubles the
// size, or with upTo resizes to upTo's height and width (Upsample.forward's
// output_shape, "nearest" as F.interpolate does; for an exact doubling nearest and
// nearest-exact pick the same pixels).
func (m *Model) runBlock(rt *gpu.Runtime, block []Module, h, embSiLU, context, upTo *gpu.Tensor) (*gpu.Tensor, error) {
	var err error
	for _, mod := range block {
		switch {
		case mod.In != nil:
			h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return mod.In.Same(rt, t, 1) })
		case mod.Res != nil:
			h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return mod.Res.forward(rt, t, embSiLU) })
		case mod.Transformer != nil:
			h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return mod.Transformer.forward(rt, t, context, m.Heads) })
		case mod.Down != nil:
			h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return mod.Down.Same(rt, t, 2) })
		case mod.Up != nil:
			h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) {
				w, ht := 2*t.Dim(3), 2*t.Dim(2)
				if upTo != nil {
					w, ht = upTo.Dim(3), upTo.Dim(2)
				}
				up, err := gpu.Upscale(rt, t, gpu.UpscaleParams{Width: w, Height: ht, Method: "nearest", Crop: "disabled"})
				if err != nil {
					return nil, err
				}
				return then(up, func(u *gpu.Tensor) (*gpu.Tensor, error) { return mod.Up.Same(rt, u, 1) })
			})
		}
		if err != nil {
			return nil, err
		}
	}
	return h, nil
}

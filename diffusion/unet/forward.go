package unet

import (
	"context"
	"fmt"
	"slices"

	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/gpu"
)

// Inputs are one UNet evaluation's inputs.
type Inputs struct {
	X         *gpu.Tensor // (N, C, H, W) latent, already scaled for the model
	Timesteps *gpu.Tensor // (N) timesteps as floats
	Context   *gpu.Tensor // (N, T, D) cross-attention context
	Y         *gpu.Tensor // (N, adm) SDXL label vector, or nil
	// Control holds ControlNet / T2I-Adapter residuals added inside the pass, or nil.
	Control *Control
	// Hooks are the pass's patches (hooks.go), or nil.
	Hooks *Hooks
}

// Control holds the residuals a ControlNet or T2I-Adapter adds inside a forward pass:
// ComfyUI's control dict as openaimodel.py apply_control consumes it, indexed by block
// instead of popped from the end of each list. A nil entry adds nothing; every other
// entry must have the shape of what it is added to.
type Control struct {
	// Input[i] is added to input block i's output before it is kept as a skip
	// connection (the "input" list: T2I-Adapters).
	Input []*gpu.Tensor
	// Middle is added to the middle block's output (the "middle" list).
	Middle *gpu.Tensor
	// Output[j] is added to the skip connection output block j concatenates (the
	// "output" list: ControlNets).
	Output []*gpu.Tensor
}

// at returns list[i], or nil past its end.
func at(list []*gpu.Tensor, i int) *gpu.Tensor {
	if i < len(list) {
		return list[i]
	}
	return nil
}

// addResidual returns h + r (h when r is nil), releasing h; where and block (−1 for
// none) name the block in the error of a shape mismatch, formatted only then.
func addResidual(rt *gpu.Runtime, h, r *gpu.Tensor, where string, block int) (*gpu.Tensor, error) {
	if r == nil {
		return h, nil
	}
	if !slices.Equal(h.Shape(), r.Shape()) {
		h.Release()
		if block >= 0 {
			where = fmt.Sprintf("%s %d", where, block)
		}
		return nil, fmt.Errorf("unet: control residual %v does not fit %s output %v", r.Shape(), where, h.Shape())
	}
	return then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Add(rt, t, r) })
}

// Forward evaluates the UNet (UNetModel.forward): timestep (and label) embedding, the
// input blocks with their outputs kept for the skip connections, the middle block, the
// output blocks concatenating those skips, and the output head, with in.Control's
// residuals added where apply_control adds them. It checks ctx between blocks.
func (m *Model) Forward(ctx context.Context, rt *gpu.Runtime, in Inputs) (*gpu.Tensor, error) {
	var ctl Control
	if in.Control != nil {
		ctl = *in.Control
	}
	ps := &pass{hooks: in.Hooks}
	// The skip connections live in this frame's array (a UNet has at most a dozen or so
	// input blocks), not on the heap.
	var skipBuf [16]*gpu.Tensor
	embSiLU, skips, h, err := m.trunk(ctx, rt, in, nil, ctl.Input, ctl.Middle, ps, skipBuf[:0])
	if err != nil {
		return nil, err
	}
	defer embSiLU.Release()
	defer func() {
		for _, s := range skips {
			s.Release()
		}
	}()
	for i, block := range m.Output {
		if err := ctx.Err(); err != nil {
			h.Release()
			return nil, err
		}
		skip := skips[len(skips)-1]
		skips = skips[:len(skips)-1]
		if skip, err = addResidual(rt, skip, at(ctl.Output, i), "the skip into output block", i); err != nil {
			h.Release()
			return nil, err
		}
		// output_block_patch sees the skip with the control added (apply_control runs first).
		if h, skip, err = ps.outputBlock(rt, i, h, skip); err != nil {
			return nil, err
		}
		cat, err := gpu.Concat(rt, 1, h, skip)
		h.Release()
		skip.Release()
		if err != nil {
			return nil, err
		}
		// An upsampler takes the size of the skip the next block concatenates
		// (UNetModel's output_shape), which is not 2× for odd sizes.
		var upH, upW int
		if len(skips) > 0 {
			upH, upW = skips[len(skips)-1].Dim(2), skips[len(skips)-1].Dim(3)
		}
		ps.block = Block{PartOutput, i}
		if h, err = m.runBlockTo(rt, block, cat, embSiLU, in.Context, upH, upW, ps); err != nil {
			return nil, fmt.Errorf("unet: output block %d: %w", i, err)
		}
	}
	h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return groupNorm(rt, &m.OutNorm, t, 1e-5, true) })
	if err != nil {
		return nil, err
	}
	return then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return m.OutConv.Same(rt, t, 1) })
}

// Trunk is what the input and middle blocks produce: each input block's output and
// the middle block's (the part of the network a ControlNet copies).
type Trunk struct {
	Blocks []*gpu.Tensor
	Middle *gpu.Tensor
}

// Release frees the trunk's tensors.
func (t *Trunk) Release() {
	for _, b := range t.Blocks {
		b.Release()
	}
	t.Middle.Release()
}

// Encode runs the embedding, input blocks and middle block as ComfyUI's ControlNet
// (comfy/cldm/cldm.py ControlNet.forward) runs its copy of them: embAdd (or nil) is
// added to the timestep embedding before the label embedding, hint (or nil) to the
// first input block's output. A model loaded with LoadTrunk has no output blocks and
// can only Encode.
func (m *Model) Encode(ctx context.Context, rt *gpu.Runtime, in Inputs, embAdd, hint *gpu.Tensor) (*Trunk, error) {
	embSiLU, skips, h, err := m.trunk(ctx, rt, in, embAdd, []*gpu.Tensor{hint}, nil, nil, nil)
	if err != nil {
		return nil, err
	}
	embSiLU.Release()
	return &Trunk{Blocks: skips, Middle: h}, nil
}

// trunk runs the embedding (plus embAdd), the input blocks (each output plus add[i],
// kept as a skip, appended to skips) and the middle block (plus mid), with the hooks of
// ps (or nil). It returns SiLU(emb), the skips and the middle block's output.
func (m *Model) trunk(ctx context.Context, rt *gpu.Runtime, in Inputs, embAdd *gpu.Tensor, add []*gpu.Tensor, mid *gpu.Tensor, ps *pass, skips []*gpu.Tensor) (embSiLU *gpu.Tensor, _ []*gpu.Tensor, h *gpu.Tensor, err error) {
	if in.X == nil || in.Timesteps == nil || in.Context == nil {
		return nil, nil, nil, fmt.Errorf("unet: x, timesteps and context are required")
	}
	if (m.LabelEmbed.L1.Weight != nil) != (in.Y != nil) {
		return nil, nil, nil, fmt.Errorf("unet: the model %s a label vector y", map[bool]string{true: "needs", false: "takes no"}[m.LabelEmbed.L1.Weight != nil])
	}
	emb, err := m.embed(rt, in, embAdd)
	if err != nil {
		return nil, nil, nil, err
	}
	if embSiLU, err = then(emb, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.SiLU(rt, t) }); err != nil {
		return nil, nil, nil, err
	}
	fail := func(err error) (*gpu.Tensor, []*gpu.Tensor, *gpu.Tensor, error) {
		embSiLU.Release()
		for _, s := range skips {
			s.Release()
		}
		return nil, nil, nil, err
	}
	if h, err = gpu.Contiguous(rt, in.X); err != nil {
		return fail(err)
	}
	for i, block := range m.Input {
		if err := ctx.Err(); err != nil {
			h.Release()
			return fail(err)
		}
		if ps != nil {
			ps.block = Block{PartInput, i}
		}
		if h, err = m.runBlock(rt, block, h, embSiLU, in.Context, ps); err != nil {
			return fail(fmt.Errorf("unet: input block %d: %w", i, err))
		}
		if h, err = addResidual(rt, h, at(add, i), "input block", i); err != nil {
			return fail(err)
		}
		before, after := ps.inputHooks()
		if h, err = ps.inputBlock(rt, before, i, h); err != nil {
			return fail(err)
		}
		keep, err := gpu.Contiguous(rt, h) // a second reference for the skip
		if err != nil {
			h.Release()
			return fail(err)
		}
		skips = append(skips, keep)
		if h, err = ps.inputBlock(rt, after, i, h); err != nil {
			return fail(err)
		}
	}
	if ps != nil {
		ps.block = Block{PartMiddle, 0}
	}
	if h, err = m.runBlock(rt, m.Middle, h, embSiLU, in.Context, ps); err != nil {
		return fail(fmt.Errorf("unet: middle block: %w", err))
	}
	if h, err = addResidual(rt, h, mid, "the middle block", -1); err != nil {
		return fail(err)
	}
	return embSiLU, skips, h, nil
}

// embed is time_embed(timestep_embedding(t)) (+ embAdd) (+ label_emb(y)).
func (m *Model) embed(rt *gpu.Runtime, in Inputs, embAdd *gpu.Tensor) (*gpu.Tensor, error) {
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
	if err == nil && embAdd != nil {
		emb, err = then(emb, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Add(rt, t, embAdd) })
	}
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

// runBlock applies a block's modules in order, consuming h; ps (or nil) carries the
// pass's hooks.
func (m *Model) runBlock(rt *gpu.Runtime, block []Module, h, embSiLU, context *gpu.Tensor, ps *pass) (*gpu.Tensor, error) {
	return m.runBlockTo(rt, block, h, embSiLU, context, 0, 0, ps)
}

// runBlockTo is runBlock with an upsampler's output size upH×upW; 0×0 doubles.
func (m *Model) runBlockTo(rt *gpu.Runtime, block []Module, h, embSiLU, context *gpu.Tensor, upH, upW int, ps *pass) (*gpu.Tensor, error) {
	var err error
	for _, mod := range block {
		switch {
		case mod.In != nil:
			h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return mod.In.Same(rt, t, 1) })
		case mod.Res != nil:
			h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return mod.Res.forward(rt, t, embSiLU) })
		case mod.Transformer != nil:
			h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return mod.Transformer.forward(rt, t, context, m.Heads, ps) })
			if ps != nil {
				ps.transformer++
			}
		case mod.Down != nil:
			h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return mod.Down.Same(rt, t, 2) })
		case mod.Up != nil:
			h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) {
				// F.interpolate(mode="nearest"): at exactly 2× the same as nearest-exact.
				p := gpu.UpscaleParams{Width: 2 * t.Dim(3), Height: 2 * t.Dim(2), Method: "nearest-exact", Crop: "disabled"}
				if upH != 0 && (upH != p.Height || upW != p.Width) {
					p.Height, p.Width, p.Method = upH, upW, "nearest"
				}
				up, err := gpu.Upscale(rt, t, p)
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

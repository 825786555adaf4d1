package flux

import (
	"context"
	"fmt"
	"slices"

	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/gpu"
)

// Inputs are one evaluation's inputs (the arguments of ComfyUI's Flux.forward).
type Inputs struct {
	X         *gpu.Tensor // (B, C, H, W) latent as the model sees it (process_in applied)
	Timesteps *gpu.Tensor // (B) or (1): the model timestep (= sigma for Flux)
	Context   *gpu.Tensor // (B, T, ContextInDim): T5 hidden states
	Y         *gpu.Tensor // (B, ≥ VecInDim): CLIP-L pooled output; nil means zeros
	// Guidance (B) or (1) is the distilled guidance (FluxGuidance, 3.5 by default in
	// ComfyUI); nil or a model without guidance_in ignores it.
	Guidance *gpu.Tensor
	// Concat (B, C', H, W) is joined to X on the channel axis first (apply_model's
	// c_concat: Flux Fill's masked image and mask); nil for most models.
	Concat *gpu.Tensor
	// RefLatents are Kontext's reference latents (each (B|1, C, h, w), process_in
	// applied), added as extra tokens with their own position ids.
	RefLatents []*gpu.Tensor
	// RefMethod places the reference tokens: "offset" (default), "index" or "uxo"
	// (ReferenceLatent / FluxKontextMultiReferenceLatentMethod).
	RefMethod string
	// SkipDouble and SkipSingle list blocks to leave out, their input passed on
	// unchanged (Skip Layer Guidance: ComfyUI's patches_replace of the "double_block" /
	// "single_block" with the identity).
	SkipDouble, SkipSingle []int
	// AttentionMask (B or 1, L, L) is an additive F32 bias on every block's attention
	// scores over the joint sequence of L = text + image (+ reference) tokens, text
	// first (ComfyUI's attention_mask, e.g. StyleModelApply's attn_bias); nil for none.
	AttentionMask *gpu.Tensor
}

// Forward is Flux.forward: it pads x to whole patches (circularly), patchifies it into
// tokens with (0, row, column) ids, appends the reference latents' tokens, embeds the
// timestep, guidance and pooled vector, runs the double-stream blocks on the text and
// image tokens, the single-stream blocks on both joined, the final layer on the image
// tokens, and unpatchifies to (B, OutChannels, H, W). It checks ctx between blocks.
func (m *Model) Forward(ctx context.Context, rt *gpu.Runtime, in Inputs) (*gpu.Tensor, error) {
	c := m.Config
	if in.X == nil || in.Timesteps == nil || in.Context == nil {
		return nil, fmt.Errorf("flux: x, timesteps and context are required")
	}
	var a arena
	defer a.release()
	x := in.X
	if in.Concat != nil {
		var err error
		if x, err = a.add(gpu.Concat(rt, 1, in.X, in.Concat)); err != nil {
			return nil, fmt.Errorf("flux: concat input: %w", err)
		}
	}
	if x.Rank() != 4 || x.Dim(1) != c.InChannels {
		return nil, fmt.Errorf("flux: latent %v: want (B, %d, H, W)", x.Shape(), c.InChannels)
	}
	b, h, w := x.Dim(0), x.Dim(2), x.Dim(3)
	if b == 0 || h == 0 || w == 0 {
		return nil, fmt.Errorf("flux: empty latent %v", x.Shape())
	}
	ctxT := in.Context
	if ctxT.Rank() != 3 || ctxT.Dim(0) != b || ctxT.Dim(2) != c.ContextInDim {
		return nil, fmt.Errorf("flux: context %v: want (%d, T, %d)", ctxT.Shape(), b, c.ContextInDim)
	}
	img, ids, err := m.imageTokens(rt, &a, x, in.RefLatents, in.RefMethod)
	if err != nil {
		return nil, err
	}
	imgTokens := patches(h, c.PatchSize) * patches(w, c.PatchSize)

	vec, err := a.add(m.vector(rt, in, b))
	if err != nil {
		return nil, err
	}
	vecSiLU, err := a.add(gpu.SiLU(rt, vec))
	if err != nil {
		return nil, err
	}
	a.free(vec)
	one, err := a.add(rt.FromFloat32([]float32{1}, 1))
	if err != nil {
		return nil, err
	}
	if img, err = a.add(m.ImgIn.Forward(rt, img)); err != nil {
		return nil, err
	}
	txt, err := a.add(m.TxtIn.Forward(rt, ctxT))
	if err != nil {
		return nil, err
	}
	lt := txt.Dim(1)
	// txt_ids are zeros, placed before the image ids; the table is shared by the batch.
	allIDs := append(make([]float32, 3*lt), ids...)
	idT, err := a.add(rt.FromFloat32(allIDs, 1, len(allIDs)/3, 3))
	if err != nil {
		return nil, err
	}
	pe, err := a.add(gpu.RoPEFreqs(rt, idT, c.AxesDim, float64(c.Theta)))
	if err != nil {
		return nil, err
	}
	mask, err := a.add(attentionMask(rt, in.AttentionMask, b, lt+img.Dim(1)))
	if err != nil {
		return nil, err
	}
	for i := range m.DoubleBlocks {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if slices.Contains(in.SkipDouble, i) {
			continue
		}
		ni, nt, err := m.DoubleBlocks[i].forward(rt, img, txt, vecSiLU, pe, mask, one, c.NumHeads)
		if err != nil {
			return nil, fmt.Errorf("flux: double block %d: %w", i, err)
		}
		a.free(img, txt)
		img, _ = a.add(ni, nil)
		txt, _ = a.add(nt, nil)
	}
	joint, err := a.add(gpu.Concat(rt, 1, txt, img))
	if err != nil {
		return nil, err
	}
	a.free(txt, img)
	for i := range m.SingleBlocks {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if slices.Contains(in.SkipSingle, i) {
			continue
		}
		nj, err := m.SingleBlocks[i].forward(rt, joint, vecSiLU, pe, mask, one, c.NumHeads)
		if err != nil {
			return nil, fmt.Errorf("flux: single block %d: %w", i, err)
		}
		a.free(joint)
		joint, _ = a.add(nj, nil)
	}
	// Only the generated image's tokens are decoded (the reference tokens are dropped,
	// as Flux.forward drops them after the final layer; it works per token).
	imgOut, err := a.add(gpu.Narrow(joint, 1, lt, imgTokens))
	if err != nil {
		return nil, err
	}
	out, err := a.add(m.FinalLayer.forward(rt, imgOut, vecSiLU, one))
	if err != nil {
		return nil, err
	}
	ph, pw := patches(h, c.PatchSize)*c.PatchSize, patches(w, c.PatchSize)*c.PatchSize
	full, err := a.add(gpu.Unpatchify(rt, out, c.PatchSize, ph, pw))
	if err != nil {
		return nil, err
	}
	if ph == h && pw == w {
		return gpu.Contiguous(rt, full)
	}
	crop, err := a.add(gpu.Narrow(full, 2, 0, h))
	if err != nil {
		return nil, err
	}
	if crop, err = a.add(gpu.Narrow(crop, 3, 0, w)); err != nil {
		return nil, err
	}
	return gpu.Contiguous(rt, crop)
}

// attentionMask checks an Inputs.AttentionMask against the batch and the joint
// sequence length l and views it as (B|1, 1, l, l), shared by the heads; nil for none.
func attentionMask(rt *gpu.Runtime, m *gpu.Tensor, b, l int) (*gpu.Tensor, error) {
	if m == nil {
		return nil, nil
	}
	if m.DType() != gpu.F32 || m.Rank() != 3 || (m.Dim(0) != 1 && m.Dim(0) != b) || m.Dim(1) != l || m.Dim(2) != l {
		return nil, fmt.Errorf("flux: attention mask %s: want F32 (%d or 1, %d, %d) over the joint text and image tokens", m, b, l, l)
	}
	return gpu.Reshape(rt, m, m.Dim(0), 1, l, l)
}

// vector is vec: time_in(embed(t)) [+ guidance_in(embed(guidance))] + vector_in(y).
func (m *Model) vector(rt *gpu.Runtime, in Inputs, b int) (*gpu.Tensor, error) {
	var a arena
	defer a.release()
	embed := func(name string, t *gpu.Tensor, e *MLPEmbedder) (*gpu.Tensor, error) {
		vals, err := batchValues(name, t, b)
		if err != nil {
			return nil, err
		}
		tt, err := a.add(rt.FromFloat32(vals, b))
		if err != nil {
			return nil, err
		}
		emb, err := a.add(gpu.TimestepEmbedding(rt, tt, gpu.TimestepParams{Dim: timeEmbedDim, MaxPeriod: 10000, Scale: 1000}))
		if err != nil {
			return nil, err
		}
		return a.add(e.forward(rt, emb))
	}
	vec, err := embed("timesteps", in.Timesteps, &m.TimeIn)
	if err != nil {
		return nil, err
	}
	if m.Guidance() && in.Guidance != nil {
		g, err := embed("guidance", in.Guidance, &m.GuidanceIn)
		if err != nil {
			return nil, err
		}
		if vec, err = a.add(gpu.Add(rt, vec, g)); err != nil {
			return nil, err
		}
	}
	y := in.Y
	vd := m.Config.VecInDim
	if y == nil {
		if y, err = a.add(rt.Zeros(gpu.F32, b, vd)); err != nil {
			return nil, err
		}
	}
	if y.Rank() != 2 || y.Dim(0) != b || y.Dim(1) < vd {
		return nil, fmt.Errorf("flux: pooled vector y %v: want (%d, ≥%d)", y.Shape(), b, vd)
	}
	if y.Dim(1) > vd { // y[:, :vec_in_dim]
		if y, err = a.add(gpu.Narrow(y, 1, 0, vd)); err != nil {
			return nil, err
		}
	}
	v, err := a.add(m.VectorIn.forward(rt, y))
	if err != nil {
		return nil, err
	}
	return gpu.Add(rt, vec, v)
}

// batchValues reads a (B) or (1) tensor as B values.
func batchValues(name string, t *gpu.Tensor, b int) ([]float32, error) {
	if t.Rank() != 1 || (t.Dim(0) != b && t.Dim(0) != 1) {
		return nil, fmt.Errorf("flux: %s %v: want (%d) or (1)", name, t.Shape(), b)
	}
	v, err := t.Float32()
	if err != nil {
		return nil, err
	}
	for len(v) < b {
		v = append(v, v[0])
	}
	return v, nil
}

// Denoise is model_base.Flux.apply_model: the input scaled for ms's prediction type
// (unchanged for flow), the timestep ms.Timestep(sigma) (sigma itself for Flux), the
// model run, and the output turned into the denoised latent (x − σ·v for flow, CONST).
// in.X is the noisy latent; in.Timesteps is ignored.
func (m *Model) Denoise(ctx context.Context, rt *gpu.Runtime, ms sampling.ModelSampling, sigma float32, in Inputs) (*gpu.Tensor, error) {
	if in.X == nil {
		return nil, fmt.Errorf("flux: x is required")
	}
	shape := in.X.Shape()
	xv, err := in.X.Float32()
	if err != nil {
		return nil, err
	}
	pred := ms.Prediction()
	xin := make([]float32, len(xv))
	sampling.CalculateInput(pred, sigma, xv, xin)
	xt, err := rt.FromFloat32(xin, shape...)
	if err != nil {
		return nil, err
	}
	defer xt.Release()
	ts := make([]float32, shape[0])
	for i := range ts {
		ts[i] = ms.Timestep(sigma)
	}
	tt, err := rt.FromFloat32(ts, len(ts))
	if err != nil {
		return nil, err
	}
	defer tt.Release()
	run := in
	run.X, run.Timesteps = xt, tt
	out, err := m.Forward(ctx, rt, run)
	if err != nil {
		return nil, err
	}
	ov, err := out.Float32()
	out.Release()
	if err != nil {
		return nil, err
	}
	den := make([]float32, len(xv))
	sampling.CalculateDenoised(pred, sigma, ov, xv, den)
	return rt.FromFloat32(den, shape...)
}

// DefaultSampling is the model sampling ComfyUI gives a Flux without a ModelSampling
// node (comfy/supported_models.py): dev (guidance embedding) is ModelSamplingFlux with
// shift 1.15, schnell a discrete flow with shift 1 and multiplier 1.
func (m *Model) DefaultSampling() sampling.ModelSampling {
	if m.Guidance() {
		return sampling.NewFlux(1.15)
	}
	return sampling.NewFlowShift(1, 1, 1000)
}

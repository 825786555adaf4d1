package mmdit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/forgeflow/forgeflow/gpu"
)

// Inputs are one batch of the model's arguments (OpenAISignatureMMDITWrapper.forward).
type Inputs struct {
	X         *gpu.Tensor // (B, C, H, W), the noisy latent as the model sampling scales it
	Timesteps *gpu.Tensor // (B), the model sampling's timesteps (1000·σ for SD3)
	Context   *gpu.Tensor // (B, T, ContextInDim): the text tokens
	// Y is the pooled text vector (B, ADMInChannels); nil (or a model without a
	// y_embedder) leaves the conditioning vector at the timestep embedding.
	Y *gpu.Tensor
	// Skip lists joint blocks to leave out: Skip Layer Guidance replaces
	// ("double_block", i) with the identity (comfy_extras/nodes_slg.py).
	Skip []int
}

// Forward runs MMDiT.forward: patch embedding plus the centre crop of the position
// table, c = t_embedder(t) + y_embedder(y), the context embedder, the joint blocks, the
// final layer, unpatchify, and the crop back to H×W (inputs whose sides are not whole
// patches are padded circularly first, as PatchEmbed does). It checks ctx between
// blocks. The result is (B, OutChannels, H, W) F32.
func (m *Model) Forward(ctx context.Context, rt *gpu.Runtime, in Inputs) (*gpu.Tensor, error) {
	c := &m.Config
	if in.X == nil || in.Timesteps == nil || in.Context == nil {
		return nil, errors.New("mmdit: x, timesteps and context are required")
	}
	if in.X.Rank() != 4 || in.X.Dim(1) != c.InChannels || in.X.DType() != gpu.F32 {
		return nil, fmt.Errorf("mmdit: x %v must be F32 (B, %d, H, W)", in.X.Shape(), c.InChannels)
	}
	bsz, hh, ww := in.X.Dim(0), in.X.Dim(2), in.X.Dim(3)
	if in.Timesteps.Rank() != 1 || in.Timesteps.Dim(0) != bsz {
		return nil, fmt.Errorf("mmdit: timesteps %v, want (%d)", in.Timesteps.Shape(), bsz)
	}
	ctxDim := c.ContextInDim
	if ctxDim == 0 {
		ctxDim = c.Hidden // no context embedder: the tokens enter as they are
	}
	if s := in.Context.Shape(); len(s) != 3 || s[0] != bsz || s[2] != ctxDim {
		return nil, fmt.Errorf("mmdit: context %v, want (%d, tokens, %d)", s, bsz, ctxDim)
	}
	if in.Y != nil && c.ADMInChannels > 0 {
		if s := in.Y.Shape(); len(s) != 2 || s[0] != bsz || s[1] != c.ADMInChannels {
			return nil, fmt.Errorf("mmdit: y %v, want (%d, %d)", s, bsz, c.ADMInChannels)
		}
	}
	for _, i := range in.Skip {
		if i < 0 {
			return nil, fmt.Errorf("mmdit: skip layer %d", i)
		}
	}
	p := c.PatchSize
	ph, pw := (hh+p-1)/p, (ww+p-1)/p
	if c.PosEmbedMaxSize > 0 && (ph > c.PosEmbedMaxSize || pw > c.PosEmbedMaxSize) {
		return nil, fmt.Errorf("mmdit: a %d×%d latent is %d×%d patches; the model's position table covers at most %d×%d",
			ww, hh, pw, ph, c.PosEmbedMaxSize, c.PosEmbedMaxSize)
	}
	var a arena
	defer a.release()
	one, err := a.add(rt.FromFloat32([]float32{1}, 1))
	if err != nil {
		return nil, err
	}
	x, err := m.embedPatches(rt, &a, in.X)
	if err != nil {
		return nil, err
	}
	cs, err := m.conditioning(rt, &a, in)
	if err != nil {
		return nil, err
	}
	txt := in.Context
	if c.ContextInDim > 0 {
		if txt, err = a.add(m.ContextEmbedder.forward(rt, txt)); err != nil {
			return nil, err
		}
	}
	for i := range m.JointBlocks {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if slices.Contains(in.Skip, i) {
			continue
		}
		ct, xt, err := m.JointBlocks[i].forward(rt, txt, x, cs, one, c.Heads)
		if err != nil {
			return nil, fmt.Errorf("mmdit: joint block %d: %w", i, err)
		}
		a.free(x)
		x = xt
		a.add(x, nil)
		if ct != nil {
			if txt != in.Context {
				a.free(txt)
			}
			txt = ct
			a.add(txt, nil)
		}
	}
	out, err := a.add(m.FinalLayer.forward(rt, x, cs, one))
	if err != nil {
		return nil, err
	}
	a.free(x)
	return m.unpatchify(rt, &a, out, bsz, ph, pw, hh, ww)
}

// embedPatches is x_embedder(x) + cropped_pos_embed: the latent padded circularly to
// whole patches, each patch's values (channel, row, column) times the convolution's
// weight viewed as a matrix, plus the position table. The result (B, patches, hidden)
// is registered with a.
func (m *Model) embedPatches(rt *gpu.Runtime, a *arena, x *gpu.Tensor) (*gpu.Tensor, error) {
	c := &m.Config
	p := c.PatchSize
	hh, ww := x.Dim(2), x.Dim(3)
	ph, pw := (hh+p-1)/p, (ww+p-1)/p
	if ph*p != hh || pw*p != ww {
		padded, err := a.add(padCircular(rt, x, ph*p, pw*p))
		if err != nil {
			return nil, err
		}
		x = padded
	}
	tok, err := a.add(gpu.Patchify(rt, x, p))
	if err != nil {
		return nil, err
	}
	w, err := a.add(gpu.Reshape(rt, m.XEmbedder.Proj.Weight, c.Hidden, c.InChannels*p*p))
	if err != nil {
		return nil, err
	}
	emb, err := a.add(gpu.Linear(rt, tok, w, m.XEmbedder.Proj.Bias))
	if err != nil {
		return nil, err
	}
	a.free(tok)
	pos, err := a.add(m.positions(rt, ph, pw))
	if err != nil {
		return nil, err
	}
	out, err := a.add(gpu.Add(rt, emb, pos))
	if err != nil {
		return nil, err
	}
	a.free(emb, pos)
	return out, nil
}

// positions is cropped_pos_embed for an h×w patch grid: the centre of the stored
// M×M table (top = (M−h)/2, left = (M−w)/2), or a table computed for the grid when the
// model stores none. The result is (1, h·w, hidden) F32.
func (m *Model) positions(rt *gpu.Runtime, h, w int) (*gpu.Tensor, error) {
	c := &m.Config
	if m.PosEmbed == nil {
		return rt.FromFloat32(sincosPositions(c.Hidden, w, h), 1, h*w, c.Hidden)
	}
	ms := c.PosEmbedMaxSize
	grid, err := gpu.Reshape(rt, m.PosEmbed, ms, ms, c.Hidden)
	if err != nil {
		return nil, err
	}
	defer grid.Release()
	rows, err := gpu.Narrow(grid, 0, (ms-h)/2, h)
	if err != nil {
		return nil, err
	}
	defer rows.Release()
	crop, err := gpu.Narrow(rows, 1, (ms-w)/2, w)
	if err != nil {
		return nil, err
	}
	defer crop.Release()
	var f *gpu.Tensor
	if crop.DType() == gpu.F32 {
		f, err = gpu.Contiguous(rt, crop)
	} else {
		f, err = gpu.Cast(rt, crop, gpu.F32)
	}
	if err != nil {
		return nil, err
	}
	defer f.Release()
	return gpu.Reshape(rt, f, 1, h*w, c.Hidden)
}

// sincosPositions is get_2d_sincos_pos_embed_torch(dim, w, h) with its defaults
// (val_center 7.5, val_magnitude 7.5): a grid spanning ±7.5·(side/shorter side) around
// 7.5 on each axis, each position the sines then cosines of its coordinate times
// 1/10000^(2j/(dim/2)), the column (w) half before the row (h) half. float32 as torch
// computes it; linspace as torch's CPU kernel steps it (from both ends).
func sincosPositions(dim, w, h int) []float32 {
	small := float32(min(h, w))
	valH := float32(h) / small * 7.5
	valW := float32(w) / small * 7.5
	gh := linspace(-valH+7.5, valH+7.5, h)
	gw := linspace(-valW+7.5, valW+7.5, w)
	half := dim / 2
	quarter := half / 2
	omega := make([]float32, quarter)
	for j := range omega {
		e := float32(j) / float32(float64(half)/2)
		omega[j] = 1 / float32(math.Pow(10000, float64(e)))
	}
	out := make([]float32, h*w*dim)
	for i := 0; i < h; i++ {
		for k := 0; k < w; k++ {
			row := out[(i*w+k)*dim:]
			put := func(dst []float32, pos float32) {
				for j, o := range omega {
					v := float64(pos * o)
					dst[j] = float32(math.Sin(v))
					dst[quarter+j] = float32(math.Cos(v))
				}
			}
			put(row[:half], gw[k])
			put(row[half:], gh[i])
		}
	}
	return out
}

// linspace is torch.linspace in float32: the first half stepped from the start, the
// second half from the end (aten/src/ATen/native/cpu/RangeFactoriesKernel.cpp).
func linspace(start, end float32, n int) []float32 {
	out := make([]float32, n)
	if n == 1 {
		out[0] = start
		return out
	}
	step := (end - start) / float32(n-1)
	halfway := n / 2
	for i := range out {
		if i < halfway {
			out[i] = start + step*float32(i)
		} else {
			out[i] = end - step*float32(n-i-1)
		}
	}
	return out
}

// conditioning returns SiLU(c), c = t_embedder(timesteps) (+ y_embedder(y)): the input
// of every adaLN projection. It is registered with a.
func (m *Model) conditioning(rt *gpu.Runtime, a *arena, in Inputs) (*gpu.Tensor, error) {
	tf, err := a.add(gpu.TimestepEmbedding(rt, in.Timesteps, gpu.TimestepParams{Dim: 256}))
	if err != nil {
		return nil, err
	}
	c, err := a.add(m.TEmbedder.forward(rt, tf))
	if err != nil {
		return nil, err
	}
	if in.Y != nil && m.Config.ADMInChannels > 0 {
		y, err := a.add(m.YEmbedder.forward(rt, in.Y))
		if err != nil {
			return nil, err
		}
		if c, err = a.add(gpu.Add(rt, c, y)); err != nil {
			return nil, err
		}
	}
	return a.add(gpu.SiLU(rt, c))
}

// unpatchify turns patch values (B, h·w, p·p·C), laid out (row, column, channel) within
// a patch, into (B, C, h·p, w·p) and crops it to hh×ww.
func (m *Model) unpatchify(rt *gpu.Runtime, a *arena, out *gpu.Tensor, b, h, w, hh, ww int) (*gpu.Tensor, error) {
	p, co := m.Config.PatchSize, m.Config.OutChannels
	v, err := a.add(gpu.Reshape(rt, out, b, h, w, p, p, co))
	if err != nil {
		return nil, err
	}
	perm, err := a.add(gpu.Permute(v, 0, 5, 1, 3, 2, 4)) // n h w p q c → n c h p w q
	if err != nil {
		return nil, err
	}
	img, err := a.add(gpu.Reshape(rt, perm, b, co, h*p, w*p))
	if err != nil {
		return nil, err
	}
	if h*p == hh && w*p == ww {
		return a.keep(img), nil
	}
	rows, err := a.add(gpu.Narrow(img, 2, 0, hh))
	if err != nil {
		return nil, err
	}
	crop, err := a.add(gpu.Narrow(rows, 3, 0, ww))
	if err != nil {
		return nil, err
	}
	return gpu.Contiguous(rt, crop)
}

// padCircular is comfy.ldm.common_dit.pad_to_patch_size with padding_mode "circular":
// x (B, C, H, W) extended to H'×W' at the bottom and right by wrapping around.
func padCircular(rt *gpu.Runtime, x *gpu.Tensor, hp, wp int) (*gpu.Tensor, error) {
	v, err := x.Float32()
	if err != nil {
		return nil, err
	}
	b, c, h, w := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
	if hp-h > h || wp-w > w {
		return nil, fmt.Errorf("mmdit: cannot pad a %d×%d latent circularly to %d×%d", w, h, wp, hp)
	}
	out := make([]float32, b*c*hp*wp)
	for bc := 0; bc < b*c; bc++ {
		for y := 0; y < hp; y++ {
			src := v[(bc*h+y%h)*w:]
			dst := out[(bc*hp+y)*wp:]
			for xx := 0; xx < wp; xx++ {
				dst[xx] = src[xx%w]
			}
		}
	}
	return rt.FromFloat32(out, b, c, hp, wp)
}

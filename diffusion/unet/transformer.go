package unet

import (
	"fmt"
	"math"

	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/gpu"
)

// SpatialTransformer attends over the H·W positions of a feature map: group norm, input
// projection (1×1 conv, or linear for SD2.x/SDXL), transformer blocks with self- and
// cross-attention, output projection, residual.
type SpatialTransformer struct {
	Norm nn.Norm `sd:"norm"`
	// ProjIn and ProjOut are 1×1 convs (4-D weight, run through AsConv) or linears
	// (2-D weight).
	ProjIn  nn.Linear          `sd:"proj_in"`
	Blocks  []TransformerBlock `sd:"transformer_blocks"`
	ProjOut nn.Linear          `sd:"proj_out"`
}

// TransformerBlock is BasicTransformerBlock: self-attention, cross-attention to the text
// context, GEGLU feed-forward, each pre-normed and residual.
type TransformerBlock struct {
	Norm1 nn.Norm     `sd:"norm1"`
	Attn1 Attention   `sd:"attn1"`
	Norm2 nn.Norm     `sd:"norm2"`
	Attn2 Attention   `sd:"attn2"`
	Norm3 nn.Norm     `sd:"norm3"`
	FF    FeedForward `sd:"ff.net"`
}

// FeedForward is the GEGLU feed-forward of the transformer blocks (FeedForward with
// glu=True): proj to 2·inner, value·GELU(gate), project back.
type FeedForward struct {
	Proj nn.Linear `sd:"0.proj"`
	Out  nn.Linear `sd:"2"`
}

// Attention is CrossAttention: bias-free q/k/v projections and an output projection.
type Attention struct {
	Q   nn.Linear `sd:"to_q"`
	K   nn.Linear `sd:"to_k"`
	V   nn.Linear `sd:"to_v"`
	Out nn.Linear `sd:"to_out.0"`
}

func (st *SpatialTransformer) forward(rt *gpu.Runtime, x, context *gpu.Tensor, heads Heads, ps *pass) (*gpu.Tensor, error) {
	n, h, w := x.Dim(0), x.Dim(2), x.Dim(3)
	linear := st.ProjIn.Weight.Rank() == 2
	hn, err := st.Norm.Group(rt, x, 32, 1e-6)
	if err != nil {
		return nil, err
	}
	if !linear {
		conv := st.ProjIn.AsConv()
		if hn, err = then(hn, func(t *gpu.Tensor) (*gpu.Tensor, error) { return conv.Same(rt, t, 1) }); err != nil {
			return nil, err
		}
	}
	inner := hn.Dim(1)
	// (N, C, H, W) → (N, H·W, C)
	tok, err := then(hn, func(t *gpu.Tensor) (*gpu.Tensor, error) { return toTokens(rt, t) })
	if err != nil {
		return nil, err
	}
	if linear {
		if tok, err = then(tok, func(t *gpu.Tensor) (*gpu.Tensor, error) { return st.ProjIn.Forward(rt, t) }); err != nil {
			return nil, err
		}
		inner = tok.Dim(2)
	}
	nh, dh := heads.split(inner)
	for i := range st.Blocks {
		if tok, err = then(tok, func(t *gpu.Tensor) (*gpu.Tensor, error) { return st.Blocks[i].forward(rt, t, context, nh, dh, ps, i) }); err != nil {
			return nil, err
		}
	}
	if linear {
		if tok, err = then(tok, func(t *gpu.Tensor) (*gpu.Tensor, error) { return st.ProjOut.Forward(rt, t) }); err != nil {
			return nil, err
		}
	}
	img, err := then(tok, func(t *gpu.Tensor) (*gpu.Tensor, error) { return fromTokens(rt, t, n, h, w) })
	if err != nil {
		return nil, err
	}
	if !linear {
		conv := st.ProjOut.AsConv()
		if img, err = then(img, func(t *gpu.Tensor) (*gpu.Tensor, error) { return conv.Same(rt, t, 1) }); err != nil {
			return nil, err
		}
	}
	return addTo(rt, x, img)
}

// toTokens turns (N, C, H, W) into a contiguous (N, H·W, C).
func toTokens(rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error) {
	n, c, h, w := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
	r, err := gpu.Reshape(rt, x, n, c, h*w)
	if err != nil {
		return nil, err
	}
	p, err := then(r, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Permute(t, 0, 2, 1) })
	if err != nil {
		return nil, err
	}
	return then(p, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Contiguous(rt, t) })
}

// fromTokens turns (N, H·W, C) back into a contiguous (N, C, H, W).
func fromTokens(rt *gpu.Runtime, x *gpu.Tensor, n, h, w int) (*gpu.Tensor, error) {
	c := x.Dim(2)
	p, err := gpu.Permute(x, 0, 2, 1)
	if err != nil {
		return nil, err
	}
	cp, err := then(p, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Contiguous(rt, t) })
	if err != nil {
		return nil, err
	}
	return then(cp, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Reshape(rt, t, n, c, h, w) })
}

// forward runs the block; ps (or nil) carries the pass's hooks and index is the
// block's position in its spatial transformer.
func (b *TransformerBlock) forward(rt *gpu.Runtime, x, context *gpu.Tensor, heads, dimHead int, ps *pass, index int) (*gpu.Tensor, error) {
	sub := func(x *gpu.Tensor, norm *nn.Norm, f func(*gpu.Tensor) (*gpu.Tensor, error)) (*gpu.Tensor, error) {
		h, err := norm.Layer(rt, x, 1e-5)
		if err != nil {
			return nil, err
		}
		y, err := then(h, f)
		if err != nil {
			return nil, err
		}
		return addTo(rt, x, y)
	}
	// attention runs a with its inputs patched when the pass has attention-input
	// patches, with f's product when f is set (an attn1 replacement).
	attention := func(a *Attention, which int, h, kv *gpu.Tensor, f AttentionFunc) (*gpu.Tensor, error) {
		q, k, v := h, kv, kv
		if ps.patchesAttn() {
			var done func()
			var err error
			if q, k, v, done, err = ps.attnInputs(rt, index, which, h, kv); err != nil {
				return nil, err
			}
			defer done()
		}
		if f != nil {
			return a.replaced(rt, q, k, v, heads, f)
		}
		return a.forward(rt, q, k, v, heads, dimHead)
	}
	replace := ps.attn1(index)
	attn1 := func(h *gpu.Tensor) (*gpu.Tensor, error) { return attention(&b.Attn1, 1, h, h, replace) }
	x1, err := sub(x, &b.Norm1, attn1)
	if err != nil {
		return nil, err
	}
	if x1, err = ps.afterAttn1(rt, index, x1); err != nil {
		return nil, err
	}
	x2, err := then(x1, func(x *gpu.Tensor) (*gpu.Tensor, error) {
		return sub(x, &b.Norm2, func(h *gpu.Tensor) (*gpu.Tensor, error) { return attention(&b.Attn2, 2, h, context, nil) })
	})
	if err != nil {
		return nil, err
	}
	return then(x2, func(x *gpu.Tensor) (*gpu.Tensor, error) {
		return sub(x, &b.Norm3, func(h *gpu.Tensor) (*gpu.Tensor, error) { return b.FF.Forward(rt, h) })
	})
}

// Forward runs the feed-forward on h (…, dim).
func (f *FeedForward) Forward(rt *gpu.Runtime, h *gpu.Tensor) (*gpu.Tensor, error) {
	p, err := f.Proj.Forward(rt, h)
	if err != nil {
		return nil, err
	}
	defer p.Release()
	var pieces [2]*gpu.Tensor // the halves' slice stays on the stack
	parts, err := gpu.ChunkInto(pieces[:0], p, 2, -1)
	if err != nil {
		return nil, err
	}
	defer parts[0].Release()
	defer parts[1].Release()
	g, err := gpu.GELU(rt, parts[1])
	if err != nil {
		return nil, err
	}
	m, err := then(g, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Mul(rt, parts[0], t) })
	if err != nil {
		return nil, err
	}
	return then(m, func(t *gpu.Tensor) (*gpu.Tensor, error) { return f.Out.Forward(rt, t) })
}

// Forward attends from x (N, Lq, dim) to context (N, Lk, context dim) with heads of
// dimHead channels; x as context is self-attention.
func (a *Attention) Forward(rt *gpu.Runtime, x, context *gpu.Tensor, heads, dimHead int) (*gpu.Tensor, error) {
	return a.forward(rt, x, context, context, heads, dimHead)
}

// forward is Forward with the values projected from their own input vin (ComfyUI's
// CrossAttention.forward with value): keys from kin, values from vin, both (N, Lk, …).
func (a *Attention) forward(rt *gpu.Runtime, x, kin, vin *gpu.Tensor, heads, dimHead int) (*gpu.Tensor, error) {
	n, lq, lk := x.Dim(0), x.Dim(1), kin.Dim(1)
	if vin.Dim(1) != lk {
		return nil, fmt.Errorf("unet: attention keys from %d tokens, values from %d", lk, vin.Dim(1))
	}
	proj := func(l *nn.Linear, src *gpu.Tensor, length int) (*gpu.Tensor, error) {
		t, err := l.Forward(rt, src)
		if err != nil {
			return nil, err
		}
		r, err := then(t, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Reshape(rt, t, n, length, heads, dimHead) })
		if err != nil {
			return nil, err
		}
		return then(r, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Permute(t, 0, 2, 1, 3) })
	}
	q, err := proj(&a.Q, x, lq)
	if err != nil {
		return nil, err
	}
	defer q.Release()
	k, err := proj(&a.K, kin, lk)
	if err != nil {
		return nil, err
	}
	defer k.Release()
	v, err := proj(&a.V, vin, lk)
	if err != nil {
		return nil, err
	}
	defer v.Release()
	o, err := gpu.Attention(rt, q, k, v, nil, gpu.AttentionParams{Scale: 1 / math.Sqrt(float64(dimHead))})
	if err != nil {
		return nil, err
	}
	op, err := then(o, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Permute(t, 0, 2, 1, 3) })
	if err != nil {
		return nil, err
	}
	oc, err := then(op, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Contiguous(rt, t) })
	if err != nil {
		return nil, err
	}
	or, err := then(oc, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Reshape(rt, t, n, lq, heads*dimHead) })
	if err != nil {
		return nil, err
	}
	return then(or, func(t *gpu.Tensor) (*gpu.Tensor, error) { return a.Out.Forward(rt, t) })
}

// replaced is the self-attention with its product replaced by f (BasicTransformerBlock
// with an attn1 replace patch): f gets to_q of x, to_k of kin and to_v of vin (all the
// normed tokens unless an attention-input patch changed them) and its result goes
// through to_out.
func (a *Attention) replaced(rt *gpu.Runtime, x, kin, vin *gpu.Tensor, heads int, f AttentionFunc) (*gpu.Tensor, error) {
	q, err := a.Q.Forward(rt, x)
	if err != nil {
		return nil, err
	}
	defer q.Release()
	k, err := a.K.Forward(rt, kin)
	if err != nil {
		return nil, err
	}
	defer k.Release()
	v, err := a.V.Forward(rt, vin)
	if err != nil {
		return nil, err
	}
	defer v.Release()
	o, err := f(rt, q, k, v, heads)
	if err != nil {
		return nil, err
	}
	return then(o, func(t *gpu.Tensor) (*gpu.Tensor, error) { return a.Out.Forward(rt, t) })
}

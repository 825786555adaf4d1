package flux

import (
	"fmt"

	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/gpu"
)

// DoubleBlock is a double-stream block (layers.py DoubleStreamBlock): image and text
// tokens keep their own weights but attend jointly, text first.
type DoubleBlock struct {
	ImgMod  Modulation    `sd:"img_mod"`
	ImgAttn SelfAttention `sd:"img_attn"`
	ImgMLP  MLP           `sd:"img_mlp"`
	TxtMod  Modulation    `sd:"txt_mod"`
	TxtAttn SelfAttention `sd:"txt_attn"`
	TxtMLP  MLP           `sd:"txt_mlp"`
}

// SingleBlock is a single-stream block (layers.py SingleStreamBlock) over the joined
// text and image tokens: linear1 makes q, k, v and the MLP input in one product,
// linear2 takes the attention output and the activated MLP input together.
type SingleBlock struct {
	Linear1    nn.Linear  `sd:"linear1"`
	Linear2    nn.Linear  `sd:"linear2"`
	Norm       QKNorm     `sd:"norm"`
	Modulation Modulation `sd:"modulation"`
}

// LastLayer is the final adaLN modulation and the projection to patch values.
type LastLayer struct {
	AdaLN  nn.Linear `sd:"adaLN_modulation.1"`
	Linear nn.Linear `sd:"linear"`
}

// stream is one token range of a joint attention and the QK norm its heads use.
type stream struct {
	n    int
	norm *QKNorm
}

// forward runs the block on img (B, Li, D) and txt (B, Lt, D); vecSiLU is SiLU(vec)
// (B, D), pe the rotary table of the Lt+Li tokens.
func (b *DoubleBlock) forward(rt *gpu.Runtime, img, txt, vecSiLU, pe, mask, one *gpu.Tensor, heads int) (imgOut, txtOut *gpu.Tensor, err error) {
	var a arena
	defer a.release()
	im, err := b.ImgMod.forward(rt, &a, vecSiLU, one)
	if err != nil {
		return nil, nil, err
	}
	tm, err := b.TxtMod.forward(rt, &a, vecSiLU, one)
	if err != nil {
		return nil, nil, err
	}
	if len(im) != 2 || len(tm) != 2 {
		return nil, nil, fmt.Errorf("flux: double block modulation gives %d and %d sets, want 2", len(im), len(tm))
	}
	project := func(x *gpu.Tensor, m modOut, attn *SelfAttention) (*gpu.Tensor, error) {
		xm, err := modulate(rt, x, m)
		if err != nil {
			return nil, err
		}
		defer xm.Release()
		return attn.QKV.Forward(rt, xm)
	}
	txtQKV, err := a.add(project(txt, tm[0], &b.TxtAttn))
	if err != nil {
		return nil, nil, err
	}
	imgQKV, err := a.add(project(img, im[0], &b.ImgAttn))
	if err != nil {
		return nil, nil, err
	}
	qkv, err := a.add(gpu.Concat(rt, 1, txtQKV, imgQKV))
	if err != nil {
		return nil, nil, err
	}
	a.free(txtQKV, imgQKV)
	lt, li := txt.Dim(1), img.Dim(1)
	hv, err := a.add(headView(rt, qkv, 3*img.Dim(2), heads))
	if err != nil {
		return nil, nil, err
	}
	attn, err := a.add(attend(rt, hv, heads, []stream{{lt, &b.TxtAttn.Norm}, {li, &b.ImgAttn.Norm}}, pe, mask))
	if err != nil {
		return nil, nil, err
	}
	a.free(hv, qkv)
	txtAttn, err := a.add(gpu.Narrow(attn, 1, 0, lt))
	if err != nil {
		return nil, nil, err
	}
	imgAttn, err := a.add(gpu.Narrow(attn, 1, lt, li))
	if err != nil {
		return nil, nil, err
	}
	update := func(x, xattn *gpu.Tensor, m []modOut, sa *SelfAttention, mlp *MLP) (*gpu.Tensor, error) {
		var a arena
		defer a.release()
		p, err := a.add(sa.Proj.Forward(rt, xattn))
		if err != nil {
			return nil, err
		}
		x1, err := a.add(addGated(rt, x, p, m[0].gate))
		if err != nil {
			return nil, err
		}
		a.free(p)
		xm, err := a.add(modulate(rt, x1, m[1]))
		if err != nil {
			return nil, err
		}
		h, err := a.add(mlp.forward(rt, xm))
		if err != nil {
			return nil, err
		}
		a.free(xm)
		return addGated(rt, x1, h, m[1].gate)
	}
	if imgOut, err = update(img, imgAttn, im, &b.ImgAttn, &b.ImgMLP); err != nil {
		return nil, nil, err
	}
	if txtOut, err = update(txt, txtAttn, tm, &b.TxtAttn, &b.TxtMLP); err != nil {
		imgOut.Release()
		return nil, nil, err
	}
	return imgOut, txtOut, nil
}

// forward runs the block on x (B, L, D), the text tokens followed by the image tokens.
func (b *SingleBlock) forward(rt *gpu.Runtime, x, vecSiLU, pe, mask, one *gpu.Tensor, heads int) (*gpu.Tensor, error) {
	var a arena
	defer a.release()
	mods, err := b.Modulation.forward(rt, &a, vecSiLU, one)
	if err != nil {
		return nil, err
	}
	if len(mods) != 1 {
		return nil, fmt.Errorf("flux: single block modulation gives %d sets, want 1", len(mods))
	}
	xm, err := a.add(modulate(rt, x, mods[0]))
	if err != nil {
		return nil, err
	}
	h, err := a.add(b.Linear1.Forward(rt, xm))
	if err != nil {
		return nil, err
	}
	a.free(xm)
	d := x.Dim(2)
	mlpWidth := h.Dim(2) - 3*d
	hv, err := a.add(headView(rt, h, 3*d, heads))
	if err != nil {
		return nil, err
	}
	attn, err := a.add(attend(rt, hv, heads, []stream{{x.Dim(1), &b.Norm}}, pe, mask))
	if err != nil {
		return nil, err
	}
	a.free(hv)
	mlp, err := a.add(gpu.Narrow(h, 2, 3*d, mlpWidth))
	if err != nil {
		return nil, err
	}
	act, err := a.add(gpu.GELUTanh(rt, mlp))
	if err != nil {
		return nil, err
	}
	a.free(mlp, h)
	cat, err := a.add(gpu.Concat(rt, 2, attn, act))
	if err != nil {
		return nil, err
	}
	a.free(attn, act)
	out, err := a.add(b.Linear2.Forward(rt, cat))
	if err != nil {
		return nil, err
	}
	a.free(cat)
	return addGated(rt, x, out, mods[0].gate)
}

// forward maps the image tokens x (B, L, D) to patch values (B, L, p²·C).
func (l *LastLayer) forward(rt *gpu.Runtime, x, vecSiLU, one *gpu.Tensor) (*gpu.Tensor, error) {
	var a arena
	defer a.release()
	sets, err := modulations(rt, &a, &l.AdaLN, vecSiLU, one, 2)
	if err != nil {
		return nil, err
	}
	if len(sets) != 1 {
		return nil, fmt.Errorf("flux: final layer modulation gives %d sets, want 1", len(sets))
	}
	xm, err := a.add(modulate(rt, x, sets[0]))
	if err != nil {
		return nil, err
	}
	return l.Linear.Forward(rt, xm)
}

// headView views the first qkvWidth columns of h (B, L, W) as heads of the head width
// qkvWidth/(3·heads): (B, L, n, d) with q, k, v at heads [0, H), [H, 2H), [2H, 3H). A
// width that is not a whole number of heads is copied out first.
func headView(rt *gpu.Runtime, h *gpu.Tensor, qkvWidth, heads int) (*gpu.Tensor, error) {
	b, l, w := h.Dim(0), h.Dim(1), h.Dim(2)
	d := qkvWidth / (3 * heads)
	if d*3*heads != qkvWidth || qkvWidth > w {
		return nil, fmt.Errorf("flux: a q/k/v width of %d does not split into 3×%d heads", qkvWidth, heads)
	}
	if w%d == 0 {
		return gpu.Reshape(rt, h, b, l, w/d, d)
	}
	qkv, err := gpu.Narrow(h, 2, 0, qkvWidth)
	if err != nil {
		return nil, err
	}
	defer qkv.Release()
	return gpu.Reshape(rt, qkv, b, l, 3*heads, d)
}

// attend is math.py attention for the heads of hv (B, L, n, d): each stream's queries
// and keys are RMS-normalised with its own scales, rotated by pe, and all tokens attend
// to all; the result is (B, L, H·d).
func attend(rt *gpu.Runtime, hv *gpu.Tensor, heads int, streams []stream, pe, mask *gpu.Tensor) (*gpu.Tensor, error) {
	var a arena
	defer a.release()
	b, l, d := hv.Dim(0), hv.Dim(1), hv.Dim(3)
	part := func(i int) (*gpu.Tensor, error) { return a.add(gpu.Narrow(hv, 2, i*heads, heads)) }
	q, err := part(0)
	if err != nil {
		return nil, err
	}
	k, err := part(1)
	if err != nil {
		return nil, err
	}
	v, err := part(2)
	if err != nil {
		return nil, err
	}
	qr, err := a.add(normRotate(rt, q, streams, pe, func(n *QKNorm) *gpu.Tensor { return n.Query }))
	if err != nil {
		return nil, err
	}
	kr, err := a.add(normRotate(rt, k, streams, pe, func(n *QKNorm) *gpu.Tensor { return n.Key }))
	if err != nil {
		return nil, err
	}
	vp, err := a.add(gpu.Permute(v, 0, 2, 1, 3))
	if err != nil {
		return nil, err
	}
	o, err := a.add(gpu.Attention(rt, qr, kr, vp, mask, gpu.AttentionParams{}))
	if err != nil {
		return nil, err
	}
	a.free(qr, kr)
	op, err := a.add(gpu.Permute(o, 0, 2, 1, 3))
	if err != nil {
		return nil, err
	}
	return gpu.Reshape(rt, op, b, l, heads*d)
}

// normRotate RMS-normalises (eps 1e-6) the heads of x (B, L, H, d), each stream's
// token range with its own scale, and applies the rotary table: (B, H, L, d).
func normRotate(rt *gpu.Runtime, x *gpu.Tensor, streams []stream, pe *gpu.Tensor, scale func(*QKNorm) *gpu.Tensor) (*gpu.Tensor, error) {
	var a arena
	defer a.release()
	parts := make([]*gpu.Tensor, 0, len(streams))
	at := 0
	for _, s := range streams {
		seg, err := a.add(gpu.Narrow(x, 1, at, s.n))
		if err != nil {
			return nil, err
		}
		at += s.n
		p, err := a.add(gpu.Permute(seg, 0, 2, 1, 3))
		if err != nil {
			return nil, err
		}
		n, err := a.add(gpu.RMSNorm(rt, p, scale(s.norm), 1e-6))
		if err != nil {
			return nil, err
		}
		parts = append(parts, n)
	}
	joined := parts[0]
	if len(parts) > 1 {
		var err error
		if joined, err = a.add(gpu.Concat(rt, 2, parts...)); err != nil {
			return nil, err
		}
	}
	return gpu.RoPE(rt, joined, pe)
}

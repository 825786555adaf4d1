package mmdit

import (
	"fmt"

	"github.com/forgeflow/forgeflow/gpu"
)

// stream is one token range of a joint attention: its q/k/v projection (B, L, 3·D) and
// the attention whose q/k norms it uses.
type stream struct {
	qkv  *gpu.Tensor
	attn *Attention
}

// forward is mmdit.py _block_mixing: both halves are modulated and projected, their
// tokens attend jointly (text first), and each half takes its share of the result
// through its own output projection and MLP. cs is SiLU(c) (B, D); one a (1) tensor of
// 1. The context block of the last joint block is pre-only and returns no context.
func (jb *JointBlock) forward(rt *gpu.Runtime, ctxTokens, x, cs, one *gpu.Tensor, h int) (ctxOut, xOut *gpu.Tensor, err error) {
	var a arena
	defer a.release()
	cb, xb := &jb.Context, &jb.X
	cm, err := modulations(rt, &a, &cb.AdaLN, cs)
	if err != nil {
		return nil, nil, err
	}
	xm, err := modulations(rt, &a, &xb.AdaLN, cs)
	if err != nil {
		return nil, nil, err
	}
	if len(cm) != cb.mods || len(xm) != xb.mods {
		return nil, nil, fmt.Errorf("mmdit: modulation gives %d and %d vectors, want %d and %d", len(cm), len(xm), cb.mods, xb.mods)
	}
	project := func(normed *gpu.Tensor, shift, scale *gpu.Tensor, attn *Attention) (*gpu.Tensor, error) {
		m, err := pair(rt, &a, shift, scale, one)
		if err != nil {
			return nil, err
		}
		in, err := modulateNormed(rt, normed, m)
		if err != nil {
			return nil, err
		}
		defer in.Release()
		return a.add(attn.QKV.forward(rt, in))
	}
	cNorm, err := a.add(gpu.LayerNorm(rt, ctxTokens, nil, nil, 1e-6))
	if err != nil {
		return nil, nil, err
	}
	cQKV, err := project(cNorm, cm[0], cm[1], &cb.Attn)
	if err != nil {
		return nil, nil, err
	}
	a.free(cNorm)
	xNorm, err := a.add(gpu.LayerNorm(rt, x, nil, nil, 1e-6))
	if err != nil {
		return nil, nil, err
	}
	xQKV, err := project(xNorm, xm[0], xm[1], &xb.Attn)
	if err != nil {
		return nil, nil, err
	}
	dual := xb.mods == 9
	var xQKV2 *gpu.Tensor
	if dual {
		// pre_attention_x: both attentions read the same norm1(x), modulated apart.
		if xQKV2, err = project(xNorm, xm[6], xm[7], &xb.Attn2); err != nil {
			return nil, nil, err
		}
	}
	a.free(xNorm)
	lc, lx := ctxTokens.Dim(1), x.Dim(1)
	attn, err := a.add(attend(rt, []stream{{cQKV, &cb.Attn}, {xQKV, &xb.Attn}}, h))
	if err != nil {
		return nil, nil, err
	}
	a.free(cQKV, xQKV)
	cAttn, err := a.add(gpu.Narrow(attn, 1, 0, lc))
	if err != nil {
		return nil, nil, err
	}
	xAttn, err := a.add(gpu.Narrow(attn, 1, lc, lx))
	if err != nil {
		return nil, nil, err
	}
	if cb.mods != 2 {
		if ctxOut, err = cb.post(rt, ctxTokens, cAttn, nil, cm, one); err != nil {
			return nil, nil, err
		}
		a.add(ctxOut, nil)
	}
	var xAttn2 *gpu.Tensor
	if dual {
		if xAttn2, err = a.add(attend(rt, []stream{{xQKV2, &xb.Attn2}}, h)); err != nil {
			return nil, nil, err
		}
		a.free(xQKV2)
	}
	if xOut, err = xb.post(rt, x, xAttn, xAttn2, xm, one); err != nil {
		return nil, nil, err
	}
	if ctxOut != nil {
		a.keep(ctxOut)
	}
	return ctxOut, xOut, nil
}

// post is DismantledBlock.post_attention (post_attention_x with a second attention):
// the gated attention output(s) added to x, then the gated MLP of the modulated result.
// m holds the block's modulation vectors in chunk order.
func (b *Block) post(rt *gpu.Runtime, x, attn, attn2 *gpu.Tensor, m []*gpu.Tensor, one *gpu.Tensor) (*gpu.Tensor, error) {
	var a arena
	defer a.release()
	p, err := a.add(b.Attn.Proj.forward(rt, attn))
	if err != nil {
		return nil, err
	}
	x1, err := a.add(addGated(rt, x, p, m[2]))
	if err != nil {
		return nil, err
	}
	a.free(p)
	if attn2 != nil {
		// gate_cat: stack([x, gate·attn1, gate2·attn2]).sum(0).
		p2, err := a.add(b.Attn2.Proj.forward(rt, attn2))
		if err != nil {
			return nil, err
		}
		if x1, err = a.add(addGated(rt, x1, p2, m[8])); err != nil {
			return nil, err
		}
		a.free(p2)
	}
	mm, err := pair(rt, &a, m[3], m[4], one)
	if err != nil {
		return nil, err
	}
	xm, err := a.add(modulate(rt, x1, mm))
	if err != nil {
		return nil, err
	}
	hid, err := a.add(b.MLP.forward(rt, xm))
	if err != nil {
		return nil, err
	}
	a.free(xm)
	return addGated(rt, x1, hid, m[5])
}

// attend is the (joint) attention of streams, concatenated in order along the tokens:
// each stream's q and k are RMS-normalised per head with its own weights when the model
// has q/k norms (ln_q, ln_k), then every token attends to every token. The result is
// (B, L, H·d), L the streams' total.
func attend(rt *gpu.Runtime, streams []stream, h int) (*gpu.Tensor, error) {
	var a arena
	defer a.release()
	qkv := streams[0].qkv
	if len(streams) > 1 {
		ts := make([]*gpu.Tensor, len(streams))
		for i, s := range streams {
			ts[i] = s.qkv
		}
		var err error
		if qkv, err = a.add(gpu.Concat(rt, 1, ts...)); err != nil {
			return nil, err
		}
	}
	hv, err := a.add(heads(rt, qkv, h))
	if err != nil {
		return nil, err
	}
	b, l, d := hv.Dim(0), hv.Dim(1), hv.Dim(3)
	part := func(i int, norm func(*Attention) *gpu.Tensor) (*gpu.Tensor, error) {
		p, err := a.add(gpu.Narrow(hv, 2, i*h, h))
		if err != nil {
			return nil, err
		}
		if norm == nil || norm(streams[0].attn) == nil {
			return a.add(gpu.Permute(p, 0, 2, 1, 3))
		}
		normed := make([]*gpu.Tensor, len(streams))
		at := 0
		for j, s := range streams {
			n := s.qkv.Dim(1)
			seg, err := a.add(gpu.Narrow(p, 1, at, n))
			if err != nil {
				return nil, err
			}
			at += n
			if normed[j], err = a.add(gpu.RMSNorm(rt, seg, norm(s.attn), 1e-6)); err != nil {
				return nil, err
			}
		}
		joined := normed[0]
		if len(normed) > 1 {
			if joined, err = a.add(gpu.Concat(rt, 1, normed...)); err != nil {
				return nil, err
			}
		}
		return a.add(gpu.Permute(joined, 0, 2, 1, 3))
	}
	q, err := part(0, func(at *Attention) *gpu.Tensor { return at.LnQ })
	if err != nil {
		return nil, err
	}
	k, err := part(1, func(at *Attention) *gpu.Tensor { return at.LnK })
	if err != nil {
		return nil, err
	}
	v, err := part(2, nil)
	if err != nil {
		return nil, err
	}
	o, err := a.add(gpu.Attention(rt, q, k, v, nil, gpu.AttentionParams{}))
	if err != nil {
		return nil, err
	}
	op, err := a.add(gpu.Permute(o, 0, 2, 1, 3))
	if err != nil {
		return nil, err
	}
	return gpu.Reshape(rt, op, b, l, h*d)
}

// forward maps the image tokens x (B, L, D) to patch values (B, L, p²·C) (FinalLayer).
func (f *FinalLayer) forward(rt *gpu.Runtime, x, cs, one *gpu.Tensor) (*gpu.Tensor, error) {
	var a arena
	defer a.release()
	v, err := modulations(rt, &a, &f.AdaLN, cs)
	if err != nil {
		return nil, err
	}
	if len(v) != 2 {
		return nil, fmt.Errorf("mmdit: final layer modulation gives %d vectors, want 2", len(v))
	}
	m, err := pair(rt, &a, v[0], v[1], one)
	if err != nil {
		return nil, err
	}
	xm, err := a.add(modulate(rt, x, m))
	if err != nil {
		return nil, err
	}
	return f.Linear.forward(rt, xm)
}

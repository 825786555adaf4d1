package clipvision

import (
	"context"
	"fmt"
	"math"

	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/gpu"
)

// Output is ComfyUI's CLIP_VISION_OUTPUT (comfy/clip_vision.py Output).
type Output struct {
	// LastHidden is last_hidden_state: the last layer's output (B, L, D) (SigLIP's
	// after post_layernorm).
	LastHidden *gpu.Tensor
	// Penultimate is penultimate_hidden_states: the output of the layer before the last
	// (B, L, D).
	Penultimate *gpu.Tensor
	// ImageEmbeds is image_embeds: the projected, normed class token (B, proj); for
	// SigLIP, which has no projection, the normed hidden states (B, L, D).
	ImageEmbeds *gpu.Tensor
}

// Release frees the output's tensors.
func (o *Output) Release() {
	for _, t := range []*gpu.Tensor{o.LastHidden, o.Penultimate, o.ImageEmbeds} {
		if t != nil {
			t.Release()
		}
	}
}

// Encode runs the tower on preprocessed pixels (B, 3, S, S) (Preprocess), as
// CLIPVisionModelProjection.forward with intermediate_output −2: patch and position
// embeddings (with the class token for CLIP), pre_layrnorm, the encoder layers
// (non-causal attention), then for CLIP post_layernorm of the class token and the
// projection, for SigLIP post_layernorm of every token. It checks ctx between layers.
func (m *Model) Encode(ctx context.Context, rt *gpu.Runtime, pixels *gpu.Tensor) (*Output, error) {
	c := m.Config
	if s := pixels.Shape(); len(s) != 4 || s[1] != 3 || s[2] != c.ImageSize || s[3] != c.ImageSize {
		return nil, fmt.Errorf("clipvision: pixels %v, the model takes (B, 3, %d, %d)", s, c.ImageSize, c.ImageSize)
	}
	x, err := m.embed(rt, pixels)
	if err != nil {
		return nil, err
	}
	if !c.SigLIP {
		if x, err = then(x, func(t *gpu.Tensor) (*gpu.Tensor, error) { return m.Vision.PreNorm.Layer(rt, t, layerNormEps) }); err != nil {
			return nil, err
		}
	}
	out := &Output{}
	penult := len(m.Vision.Layers) - 2
	for i := range m.Vision.Layers {
		if err := ctx.Err(); err != nil {
			x.Release()
			out.Release()
			return nil, err
		}
		if x, err = then(x, func(t *gpu.Tensor) (*gpu.Tensor, error) { return m.Vision.Layers[i].forward(rt, t, c) }); err != nil {
			out.Release()
			return nil, fmt.Errorf("clipvision: layer %d: %w", i, err)
		}
		if i == penult {
			if out.Penultimate, err = gpu.Contiguous(rt, x); err != nil {
				x.Release()
				return nil, err
			}
		}
	}
	if c.SigLIP {
		if x, err = then(x, func(t *gpu.Tensor) (*gpu.Tensor, error) { return m.Vision.PostNorm.Layer(rt, t, layerNormEps) }); err != nil {
			out.Release()
			return nil, err
		}
		out.LastHidden = x
		if out.ImageEmbeds, err = gpu.Contiguous(rt, x); err != nil {
			out.Release()
			return nil, err
		}
		return out, nil
	}
	out.LastHidden = x
	cls, err := gpu.Narrow(x, 1, 0, 1)
	if err != nil {
		out.Release()
		return nil, err
	}
	pooled, err := then(cls, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Reshape(rt, t, t.Dim(0), c.Width) })
	if err == nil {
		pooled, err = then(pooled, func(t *gpu.Tensor) (*gpu.Tensor, error) { return m.Vision.PostNorm.Layer(rt, t, layerNormEps) })
	}
	if err == nil && m.Projection != nil {
		pooled, err = then(pooled, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Linear(rt, t, m.Projection, nil) })
	}
	if err != nil {
		out.Release()
		return nil, err
	}
	out.ImageEmbeds = pooled
	return out, nil
}

// embed is CLIPVisionEmbeddings: the patch convolution as a linear map over patches,
// the class token in front, plus the position embeddings.
func (m *Model) embed(rt *gpu.Runtime, pixels *gpu.Tensor) (*gpu.Tensor, error) {
	c := m.Config
	e := &m.Vision.Embeddings
	tok, err := gpu.Patchify(rt, pixels, c.Patch)
	if err != nil {
		return nil, err
	}
	w, err := gpu.Reshape(rt, e.Patch.Weight, c.Width, 3*c.Patch*c.Patch)
	if err != nil {
		tok.Release()
		return nil, err
	}
	emb, err := gpu.Linear(rt, tok, w, e.Patch.Bias)
	tok.Release()
	w.Release()
	if err != nil {
		return nil, err
	}
	if e.Class != nil {
		b := emb.Dim(0)
		cls, err := e.Class.Float32()
		if err != nil {
			emb.Release()
			return nil, err
		}
		rows := make([]float32, 0, b*c.Width)
		for range b {
			rows = append(rows, cls...)
		}
		ct, err := rt.FromFloat32(rows, b, 1, c.Width)
		if err != nil {
			emb.Release()
			return nil, err
		}
		emb, err = then(emb, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Concat(rt, 1, ct, t) })
		ct.Release()
		if err != nil {
			return nil, err
		}
	}
	return then(emb, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Add(rt, t, e.Position) })
}

func (l *Layer) forward(rt *gpu.Runtime, x *gpu.Tensor, c Config) (*gpu.Tensor, error) {
	h, err := l.Norm1.Layer(rt, x, layerNormEps)
	if err != nil {
		return nil, err
	}
	a, err := then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return l.attention(rt, t, c.Heads) })
	if err != nil {
		return nil, err
	}
	x1, err := gpu.Add(rt, x, a)
	a.Release()
	if err != nil {
		return nil, err
	}
	h, err = l.Norm2.Layer(rt, x1, layerNormEps)
	if err != nil {
		x1.Release()
		return nil, err
	}
	f, err := then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return l.mlp(rt, t, c.Activation) })
	if err != nil {
		x1.Release()
		return nil, err
	}
	out, err := gpu.Add(rt, x1, f)
	x1.Release()
	f.Release()
	return out, err
}

func (l *Layer) attention(rt *gpu.Runtime, h *gpu.Tensor, heads int) (*gpu.Tensor, error) {
	b, n, d := h.Dim(0), h.Dim(1), h.Dim(2)
	split := func(p *nn.Linear) (*gpu.Tensor, error) {
		t, err := p.Forward(rt, h)
		if err != nil {
			return nil, err
		}
		r, err := then(t, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Reshape(rt, t, b, n, heads, d/heads) })
		if err != nil {
			return nil, err
		}
		return then(r, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Permute(t, 0, 2, 1, 3) })
	}
	q, err := split(&l.Attn.Q)
	if err != nil {
		return nil, err
	}
	defer q.Release()
	k, err := split(&l.Attn.K)
	if err != nil {
		return nil, err
	}
	defer k.Release()
	v, err := split(&l.Attn.V)
	if err != nil {
		return nil, err
	}
	defer v.Release()
	o, err := gpu.Attention(rt, q, k, v, nil, gpu.AttentionParams{Scale: 1 / math.Sqrt(float64(d/heads))})
	if err != nil {
		return nil, err
	}
	o, err = then(o, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Permute(t, 0, 2, 1, 3) })
	if err == nil {
		o, err = then(o, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Contiguous(rt, t) })
	}
	if err == nil {
		o, err = then(o, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Reshape(rt, t, b, n, d) })
	}
	if err != nil {
		return nil, err
	}
	return then(o, func(t *gpu.Tensor) (*gpu.Tensor, error) { return l.Attn.Out.Forward(rt, t) })
}

func (l *Layer) mlp(rt *gpu.Runtime, h *gpu.Tensor, act string) (*gpu.Tensor, error) {
	f, err := l.MLP.FC1.Forward(rt, h)
	if err != nil {
		return nil, err
	}
	f, err = then(f, func(t *gpu.Tensor) (*gpu.Tensor, error) {
		switch act {
		case "gelu":
			return gpu.GELU(rt, t)
		case "gelu_pytorch_tanh":
			return gpu.GELUTanh(rt, t)
		}
		return gpu.QuickGELU(rt, t)
	})
	if err != nil {
		return nil, err
	}
	return then(f, func(t *gpu.Tensor) (*gpu.Tensor, error) { return l.MLP.FC2.Forward(rt, t) })
}

// then applies f to x and releases x.
func then(x *gpu.Tensor, f func(*gpu.Tensor) (*gpu.Tensor, error)) (*gpu.Tensor, error) {
	y, err := f(x)
	x.Release()
	return y, err
}

package clip

import (
	"errors"
	"fmt"
	"math"

	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/gpu"
)

// normEps is the layer norms' eps (CLIP's 1e-5).
const normEps = 1e-5

// TextModel is CLIP's text transformer (comfy/clip_model.py CLIPTextModel), fields named
// after the checkpoint keys under "…text_model.".
type TextModel struct {
	// Module records the prefix the model was bound at, the root of its layers' keys.
	nn.Module
	Embeddings struct {
		Token    *gpu.Tensor `sd:"token_embedding.weight"`
		Position *gpu.Tensor `sd:"position_embedding.weight"`
	} `sd:"embeddings"`
	Layers    []EncoderLayer `sd:"encoder.layers"`
	FinalNorm nn.Norm        `sd:"final_layer_norm"`

	// Heads is the number of attention heads (hidden/64 in every released CLIP).
	Heads int
	// Activation is "quick_gelu" (CLIP-L) or "gelu" (OpenCLIP).
	Activation string
	// EOS is the end token whose first position gives the pooled output.
	EOS int
}

// EncoderLayer is one pre-norm transformer block.
type EncoderLayer struct {
	Norm1 nn.Norm `sd:"layer_norm1"`
	Attn  struct {
		Q   nn.Linear `sd:"q_proj"`
		K   nn.Linear `sd:"k_proj"`
		V   nn.Linear `sd:"v_proj"`
		Out nn.Linear `sd:"out_proj"`
	} `sd:"self_attn"`
	Norm2 nn.Norm `sd:"layer_norm2"`
	MLP   struct {
		FC1 nn.Linear `sd:"fc1"`
		FC2 nn.Linear `sd:"fc2"`
	} `sd:"mlp"`
}

// Input is one batch item: 77 token slots, each a vocabulary id or (Embed non-nil) a
// textual-inversion vector.
type Input []Token

// Output holds a forward pass's results for a batch.
type Output struct {
	// Last is final_layer_norm(x) after the last layer, (B, L, D).
	Last *gpu.Tensor
	// Hidden is the output of layer HiddenLayer (normed if asked), (B, L, D); nil when
	// no intermediate layer was requested.
	Hidden *gpu.Tensor
	// Pooled is Last at each item's first end token, (B, D).
	Pooled *gpu.Tensor
}

// Release frees the output tensors.
func (o *Output) Release() {
	for _, t := range []*gpu.Tensor{o.Last, o.Hidden, o.Pooled} {
		if t != nil {
			t.Release()
		}
	}
}

// NoHidden asks Forward for no intermediate output.
const NoHidden = math.MinInt

// Forward runs the transformer with CLIP's causal mask. hiddenLayer selects an
// intermediate output by layer index (negative counts from the end: −2 is "clip skip
// 2"); NoHidden asks for none. normHidden applies the final layer norm to it.
func (m *TextModel) Forward(rt *gpu.Runtime, batch []Input, hiddenLayer int, normHidden bool) (*Output, error) {
	if len(batch) == 0 {
		return nil, errors.New("clip: empty batch")
	}
	if m.Heads <= 0 {
		return nil, errors.New("clip: model has no head count")
	}
	x, err := m.embed(rt, batch)
	if err != nil {
		return nil, err
	}
	n := len(m.Layers)
	if hiddenLayer != NoHidden && hiddenLayer < 0 {
		hiddenLayer += n
	}
	if hiddenLayer != NoHidden && (hiddenLayer < 0 || hiddenLayer >= n) {
		return nil, fmt.Errorf("clip: layer %d does not exist in a %d-layer model", hiddenLayer, n)
	}
	length := x.Dim(1)
	mask, err := causalMask(rt, length)
	if err != nil {
		x.Release()
		return nil, err
	}
	defer mask.Release()
	out := &Output{}
	for i := range m.Layers {
		nx, err := m.Layers[i].forward(rt, x, mask, m.Heads, m.Activation)
		x.Release()
		if err != nil {
			out.Release()
			return nil, fmt.Errorf("clip: layer %d: %w", i, err)
		}
		x = nx
		if i == hiddenLayer {
			// Contiguous of a contiguous tensor is a new reference to the same storage.
			h, err := gpu.Contiguous(rt, x)
			if err != nil {
				x.Release()
				return nil, err
			}
			out.Hidden = h
		}
	}
	last, err := m.FinalNorm.Layer(rt, x, normEps)
	x.Release()
	if err != nil {
		out.Release()
		return nil, err
	}
	out.Last = last
	if out.Hidden != nil && normHidden {
		h, err := m.FinalNorm.Layer(rt, out.Hidden, normEps)
		out.Hidden.Release()
		out.Hidden = h
		if err != nil {
			out.Release()
			return nil, err
		}
	}
	if out.Pooled, err = m.pool(rt, last, batch); err != nil {
		out.Release()
		return nil, err
	}
	return out, nil
}

// embed builds token + position embeddings, (B, L, D).
func (m *TextModel) embed(rt *gpu.Runtime, batch []Input) (*gpu.Tensor, error) {
	length := len(batch[0])
	dim := m.Embeddings.Token.Dim(1)
	if length > m.Embeddings.Position.Dim(0) {
		return nil, fmt.Errorf("clip: %d tokens exceed the %d positions", length, m.Embeddings.Position.Dim(0))
	}
	vocab := m.Embeddings.Token.Dim(0)
	data := make([]float32, 0, len(batch)*length*dim)
	for bi, in := range batch {
		if len(in) != length {
			return nil, fmt.Errorf("clip: batch item %d has %d tokens, want %d", bi, len(in), length)
		}
		ids := make([]int, length)
		for i, t := range in {
			if t.Embed == nil && (t.ID < 0 || t.ID >= vocab) {
				return nil, fmt.Errorf("clip: token id %d outside the vocabulary of %d", t.ID, vocab)
			}
			ids[i] = max(t.ID, 0)
		}
		e, err := gpu.Embedding(rt, m.Embeddings.Token, ids)
		if err != nil {
			return nil, err
		}
		vals, err := e.Float32()
		e.Release()
		if err != nil {
			return nil, err
		}
		for i, t := range in {
			if t.Embed != nil {
				if len(t.Embed) != dim {
					return nil, fmt.Errorf("clip: embedding vector of width %d, model width %d", len(t.Embed), dim)
				}
				copy(vals[i*dim:(i+1)*dim], t.Embed)
			}
		}
		data = append(data, vals...)
	}
	tok, err := rt.FromFloat32(data, len(batch), length, dim)
	if err != nil {
		return nil, err
	}
	defer tok.Release()
	posIDs := make([]int, length)
	for i := range posIDs {
		posIDs[i] = i
	}
	pos, err := gpu.Embedding(rt, m.Embeddings.Position, posIDs)
	if err != nil {
		return nil, err
	}
	defer pos.Release()
	return gpu.Add(rt, tok, pos)
}

// causalMask is the additive (L, L) mask with −max_float above the diagonal.
func causalMask(rt *gpu.Runtime, n int) (*gpu.Tensor, error) {
	m := make([]float32, n*n)
	for i := 0; i < n; i++ {
		for j := i + 1; j < n; j++ {
			m[i*n+j] = -math.MaxFloat32
		}
	}
	return rt.FromFloat32(m, n, n)
}

// pool picks each item's hidden state at its first end token (argmax of ids == EOS,
// which is position 0 when there is none).
func (m *TextModel) pool(rt *gpu.Runtime, last *gpu.Tensor, batch []Input) (*gpu.Tensor, error) {
	vals, err := last.Float32()
	if err != nil {
		return nil, err
	}
	length, dim := last.Dim(1), last.Dim(2)
	out := make([]float32, 0, len(batch)*dim)
	for bi, in := range batch {
		at := 0
		for i, t := range in {
			if t.Embed == nil && t.ID == m.EOS {
				at = i
				break
			}
		}
		row := vals[(bi*length+at)*dim : (bi*length+at+1)*dim]
		out = append(out, row...)
	}
	return rt.FromFloat32(out, len(batch), dim)
}

func (l *EncoderLayer) forward(rt *gpu.Runtime, x, mask *gpu.Tensor, heads int, act string) (*gpu.Tensor, error) {
	h, err := l.Norm1.Layer(rt, x, normEps)
	if err != nil {
		return nil, err
	}
	a, err := l.attention(rt, h, mask, heads)
	h.Release()
	if err != nil {
		return nil, err
	}
	x1, err := gpu.Add(rt, x, a)
	a.Release()
	if err != nil {
		return nil, err
	}
	h, err = l.Norm2.Layer(rt, x1, normEps)
	if err != nil {
		x1.Release()
		return nil, err
	}
	f, err := l.mlp(rt, h, act)
	h.Release()
	if err != nil {
		x1.Release()
		return nil, err
	}
	out, err := gpu.Add(rt, x1, f)
	x1.Release()
	f.Release()
	return out, err
}

func (l *EncoderLayer) attention(rt *gpu.Runtime, h, mask *gpu.Tensor, heads int) (*gpu.Tensor, error) {
	b, n, d := h.Dim(0), h.Dim(1), h.Dim(2)
	if d%heads != 0 {
		return nil, fmt.Errorf("width %d is not divisible by %d heads", d, heads)
	}
	split := func(p *nn.Linear) (*gpu.Tensor, error) {
		t, err := p.Forward(rt, h)
		if err != nil {
			return nil, err
		}
		r, err := gpu.Reshape(rt, t, b, n, heads, d/heads)
		t.Release()
		if err != nil {
			return nil, err
		}
		return gpu.Permute(r, 0, 2, 1, 3)
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
	o, err := gpu.Attention(rt, q, k, v, mask, gpu.AttentionParams{Scale: 1 / math.Sqrt(float64(d/heads))})
	if err != nil {
		return nil, err
	}
	op, err := gpu.Permute(o, 0, 2, 1, 3)
	if err != nil {
		o.Release()
		return nil, err
	}
	oc, err := gpu.Contiguous(rt, op)
	op.Release()
	if err != nil {
		return nil, err
	}
	or, err := gpu.Reshape(rt, oc, b, n, d)
	oc.Release()
	if err != nil {
		return nil, err
	}
	defer or.Release()
	return l.Attn.Out.Forward(rt, or)
}

func (l *EncoderLayer) mlp(rt *gpu.Runtime, h *gpu.Tensor, act string) (*gpu.Tensor, error) {
	f, err := l.MLP.FC1.Forward(rt, h)
	if err != nil {
		return nil, err
	}
	var g *gpu.Tensor
	switch act {
	case "gelu":
		g, err = gpu.GELU(rt, f)
	default:
		g, err = gpu.QuickGELU(rt, f)
	}
	f.Release()
	if err != nil {
		return nil, err
	}
	defer g.Release()
	return l.MLP.FC2.Forward(rt, g)
}

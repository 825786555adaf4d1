package t5

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
)

// Model is a T5 encoder (comfy/text_encoders/t5.py T5 and its T5Stack), fields named after
// the transformers checkpoint keys. Load fills it; the hyper-parameters come from the
// tensor shapes.
type Model struct {
	// Shared is the token embedding (vocab, d_model); some exports name it
	// encoder.embed_tokens (EmbedTokens) instead.
	Shared      *gpu.Tensor `sd:"shared.weight,optional"`
	EmbedTokens *gpu.Tensor `sd:"encoder.embed_tokens.weight,optional"`
	Blocks      []Block     `sd:"encoder.block"`
	FinalNorm   nn.RMSNorm  `sd:"encoder.final_layer_norm"`

	// Module records the prefix the model was bound at, the root of its layers' keys.
	nn.Module
	Config
	rt *gpu.Runtime
}

// Config is what the network's shapes say, plus the two settings they cannot say.
type Config struct {
	DModel, DFF, Heads, DKV, Layers, Vocab int
	// NumBuckets is relative_attention_num_buckets (the bias table's rows, 32).
	NumBuckets int
	// MaxDistance is relative_attention_max_distance: 128 in every released T5 (ComfyUI
	// hard-codes it); the shapes do not hold it.
	MaxDistance int
	// Eps is the RMS norms' layer_norm_epsilon (1e-6).
	Eps float64
}

// Block is one T5Block: self-attention then the gated feed-forward, each pre-normed with
// a residual.
type Block struct {
	Attn     SelfAttention `sd:"layer.0.SelfAttention"`
	AttnNorm nn.RMSNorm    `sd:"layer.0.layer_norm"`
	FF       FeedForward   `sd:"layer.1.DenseReluDense"`
	FFNorm   nn.RMSNorm    `sd:"layer.1.layer_norm"`
}

// SelfAttention is T5Attention. RelativeBias (num_buckets, heads) is in block 0 only for
// T5 (shared by every block) and in every block for UMT5.
type SelfAttention struct {
	Q            nn.Linear   `sd:"q"`
	K            nn.Linear   `sd:"k"`
	V            nn.Linear   `sd:"v"`
	O            nn.Linear   `sd:"o"`
	RelativeBias *gpu.Tensor `sd:"relative_attention_bias.weight,optional"`
}

// FeedForward is T5 v1.1's T5DenseGatedActDense: wo(gelu_tanh(wi_0 x) · wi_1 x).
type FeedForward struct {
	Gate nn.Linear `sd:"wi_0"`
	Up   nn.Linear `sd:"wi_1"`
	Down nn.Linear `sd:"wo"`
}

// DefaultMaxDistance and DefaultEps are T5's relative_attention_max_distance and
// layer_norm_epsilon, the same in every released T5 encoder.
const (
	DefaultMaxDistance = 128
	DefaultEps         = 1e-6
)

// Load binds a T5 encoder from src, keys under prefix ("" for a t5xxl_*.safetensors file,
// "text_encoders.t5xxl.transformer." in an all-in-one SD3 checkpoint). llama.cpp's GGUF
// names (token_embd, enc.blk.N.attn_q, …) are recognised and served under the
// transformers names without copying. Weights stay in their stored dtype (F32, F16, BF16,
// F8, GGUF blocks) and are converted inside the kernels. MaxDistance and Eps take
// their defaults; the report lists keys under prefix that no field used.
func Load(rt *gpu.Runtime, src statedict.Source, prefix string) (*Model, *statedict.Report, error) {
	if hasKey(src, prefix+ggufProbe) {
		src = newGGUFNames(src, prefix)
	}
	if !hasKey(src, prefix+"encoder.block.0.layer.0.SelfAttention.q.weight") {
		return nil, nil, fmt.Errorf("t5: no encoder.block.0.layer.0.SelfAttention.q.weight (or GGUF enc.blk.0.attn_q.weight) under %q", prefix)
	}
	if !hasKey(src, prefix+"encoder.block.0.layer.1.DenseReluDense.wi_0.weight") && hasKey(src, prefix+"encoder.block.0.layer.1.DenseReluDense.wi.weight") {
		return nil, nil, errors.New("t5: the original T5's relu feed-forward (DenseReluDense.wi) is not implemented; T5 v1.1 encoders (wi_0, wi_1) are")
	}
	m := &Model{rt: rt}
	rep, err := statedict.Bind(rt, src, prefix, m)
	if err != nil {
		return nil, rep, fmt.Errorf("t5: %w", err)
	}
	if err := m.configure(); err != nil {
		m.Release()
		return nil, rep, err
	}
	return m, rep, nil
}

func hasKey(src statedict.Source, key string) bool {
	for _, k := range src.Keys() {
		if k == key {
			return true
		}
	}
	return false
}

// configure reads the hyper-parameters off the bound shapes and checks that every tensor
// agrees with them.
func (m *Model) configure() error {
	switch {
	case m.Shared == nil:
		m.Shared = m.EmbedTokens
	case m.EmbedTokens != nil:
		// transformers exports tie the two; ComfyUI reads shared.weight.
		m.EmbedTokens.Release()
	}
	m.EmbedTokens = nil
	if m.Shared == nil {
		return errors.New("t5: no token embedding (shared.weight or encoder.embed_tokens.weight)")
	}
	if len(m.Blocks) == 0 {
		return errors.New("t5: no encoder blocks")
	}
	b0 := &m.Blocks[0].Attn
	if b0.RelativeBias == nil {
		return errors.New("t5: block 0 has no relative_attention_bias")
	}
	if b0.RelativeBias.Rank() != 2 || b0.Q.Weight.Rank() != 2 {
		return fmt.Errorf("t5: relative_attention_bias %v and q %v must be matrices", b0.RelativeBias.Shape(), b0.Q.Weight.Shape())
	}
	c := Config{
		DModel:      b0.Q.Weight.Dim(1),
		NumBuckets:  b0.RelativeBias.Dim(0),
		Heads:       b0.RelativeBias.Dim(1),
		DFF:         m.Blocks[0].FF.Gate.Weight.Dim(0),
		Layers:      len(m.Blocks),
		Vocab:       m.Shared.Dim(0),
		MaxDistance: DefaultMaxDistance,
		Eps:         DefaultEps,
	}
	inner := b0.Q.Weight.Dim(0)
	if c.Heads == 0 || inner%c.Heads != 0 {
		return fmt.Errorf("t5: q projects to %d, not a multiple of the %d heads of relative_attention_bias", inner, c.Heads)
	}
	c.DKV = inner / c.Heads
	if c.NumBuckets < 4 {
		return fmt.Errorf("t5: %d relative attention buckets; bidirectional buckets need at least 4", c.NumBuckets)
	}
	m.Config = c
	if err := checkShape("shared.weight", m.Shared, c.Vocab, c.DModel); err != nil {
		return err
	}
	if err := checkShape("encoder.final_layer_norm.weight", m.FinalNorm.Weight, c.DModel); err != nil {
		return err
	}
	for i := range m.Blocks {
		b := &m.Blocks[i]
		at := func(s string) string { return fmt.Sprintf("encoder.block.%d.%s", i, s) }
		checks := []struct {
			name string
			t    *gpu.Tensor
			dims []int
		}{
			{"layer.0.SelfAttention.q.weight", b.Attn.Q.Weight, []int{inner, c.DModel}},
			{"layer.0.SelfAttention.k.weight", b.Attn.K.Weight, []int{inner, c.DModel}},
			{"layer.0.SelfAttention.v.weight", b.Attn.V.Weight, []int{inner, c.DModel}},
			{"layer.0.SelfAttention.o.weight", b.Attn.O.Weight, []int{c.DModel, inner}},
			{"layer.0.layer_norm.weight", b.AttnNorm.Weight, []int{c.DModel}},
			{"layer.1.DenseReluDense.wi_0.weight", b.FF.Gate.Weight, []int{c.DFF, c.DModel}},
			{"layer.1.DenseReluDense.wi_1.weight", b.FF.Up.Weight, []int{c.DFF, c.DModel}},
			{"layer.1.DenseReluDense.wo.weight", b.FF.Down.Weight, []int{c.DModel, c.DFF}},
			{"layer.1.layer_norm.weight", b.FFNorm.Weight, []int{c.DModel}},
		}
		for _, ch := range checks {
			if err := checkShape(at(ch.name), ch.t, ch.dims...); err != nil {
				return err
			}
		}
		if rb := b.Attn.RelativeBias; rb != nil {
			if err := checkShape(at("layer.0.SelfAttention.relative_attention_bias.weight"), rb, c.NumBuckets, c.Heads); err != nil {
				return err
			}
			if !rb.DType().IsFloat() {
				return fmt.Errorf("t5: %s is %s; the bias table must be a float dtype", at("layer.0.SelfAttention.relative_attention_bias.weight"), rb.DType())
			}
		}
		for _, l := range []*nn.Linear{&b.Attn.Q, &b.Attn.K, &b.Attn.V, &b.Attn.O, &b.FF.Gate, &b.FF.Up, &b.FF.Down} {
			if err := checkScale(l); err != nil {
				return fmt.Errorf("t5: block %d: %w", i, err)
			}
		}
	}
	return nil
}

func checkShape(name string, t *gpu.Tensor, dims ...int) error {
	s := t.Shape()
	if len(s) != len(dims) {
		return fmt.Errorf("t5: %s has shape %v, want %v", name, s, dims)
	}
	for i := range dims {
		if s[i] != dims[i] {
			return fmt.Errorf("t5: %s has shape %v, want %v", name, s, dims)
		}
	}
	return nil
}

// checkScale checks a scaled-fp8 scale_weight: one value, which nn.Linear multiplies the
// product by.
func checkScale(l *nn.Linear) error {
	if l.ScaleWeight != nil && l.ScaleWeight.Numel() != 1 {
		return fmt.Errorf("scale_weight has %d values, want 1", l.ScaleWeight.Numel())
	}
	return nil
}

// Release frees the model's tensors (the mapped file stays with its owner).
func (m *Model) Release() {
	rel := func(ts ...*gpu.Tensor) {
		for _, t := range ts {
			if t != nil {
				t.Release()
			}
		}
	}
	rel(m.Shared, m.EmbedTokens, m.FinalNorm.Weight)
	for i := range m.Blocks {
		b := &m.Blocks[i]
		rel(b.AttnNorm.Weight, b.FFNorm.Weight, b.Attn.RelativeBias)
		for _, l := range []*nn.Linear{&b.Attn.Q, &b.Attn.K, &b.Attn.V, &b.Attn.O, &b.FF.Gate, &b.FF.Up, &b.FF.Down} {
			rel(l.Weight, l.Bias, l.ScaleWeight)
		}
	}
	m.Blocks = nil
}

// Runtime is the runtime the model's tensors live on.
func (m *Model) Runtime() *gpu.Runtime { return m.rt }

// Embed looks up the token embeddings of ids, (B, T, d_model) F32; every row of ids must
// have the same length.
func (m *Model) Embed(ids [][]int) (*gpu.Tensor, error) {
	if len(ids) == 0 {
		return nil, errors.New("t5: no tokens")
	}
	n := len(ids[0])
	flat := make([]int, 0, len(ids)*n)
	for i, row := range ids {
		if len(row) != n {
			return nil, fmt.Errorf("t5: token row %d has %d ids, row 0 has %d", i, len(row), n)
		}
		for j, id := range row {
			if id < 0 || id >= m.Vocab {
				return nil, fmt.Errorf("t5: token id %d at row %d position %d outside the vocabulary of %d", id, i, j, m.Vocab)
			}
		}
		flat = append(flat, row...)
	}
	e, err := gpu.Embedding(m.rt, m.Shared, flat)
	if err != nil {
		return nil, err
	}
	if d := m.Shared.DType(); d == gpu.F8E4M3FN || d == gpu.F8E5M2 {
		// T5.forward runs nan_to_num on fp8 embeddings ("Fix for fp8 T5 base").
		if err := nanToNum(e); err != nil {
			e.Release()
			return nil, err
		}
	}
	out, err := gpu.Reshape(m.rt, e, len(ids), n, m.DModel)
	e.Release()
	return out, err
}

// nanToNum replaces NaN by 0 and ±Inf by ±MaxFloat32 in place, as torch.nan_to_num.
func nanToNum(t *gpu.Tensor) error {
	v, ok := t.HostFloat32()
	if !ok {
		return errors.New("t5: nan_to_num needs a host F32 tensor")
	}
	for i, x := range v {
		switch {
		case x != x:
			v[i] = 0
		case math.IsInf(float64(x), 1):
			v[i] = math.MaxFloat32
		case math.IsInf(float64(x), -1):
			v[i] = -math.MaxFloat32
		}
	}
	return nil
}

// Params selects what Forward returns besides the final output.
type Params struct {
	// Mask, when set, holds one row per batch item of T values: keys whose value is 0
	// are hidden from every query (ComfyUI's attention_mask; −max_float added to their
	// logits). nil hides nothing.
	Mask [][]int
	// Intermediate, when ≥ 0 (or negative, counting from the end), also returns the
	// hidden state after that block; NoIntermediate returns none.
	Intermediate int
	// NormIntermediate applies the final layer norm to it (SDClipModel's
	// layer_norm_hidden_state, true for T5XXLModel).
	NormIntermediate bool
}

// NoIntermediate asks Forward for no intermediate output.
const NoIntermediate = math.MinInt

// Output holds a forward pass's results.
type Output struct {
	// Last is final_layer_norm(x) after the last block, (B, T, d_model).
	Last *gpu.Tensor
	// Intermediate is the hidden state after the requested block, or nil.
	Intermediate *gpu.Tensor
}

// Release frees the output tensors.
func (o *Output) Release() {
	for _, t := range []*gpu.Tensor{o.Last, o.Intermediate} {
		if t != nil {
			t.Release()
		}
	}
}

// Encode embeds ids (B rows of T ids) and runs the encoder: the final hidden states
// (B, T, d_model) F32. mask is nil (every token attends to every token, as Flux's T5) or
// one row of T 0/1 values per item (0 hides that key; SD3.5-style masks).
func (m *Model) Encode(ctx context.Context, ids [][]int, mask [][]int) (*gpu.Tensor, error) {
	x, err := m.Embed(ids)
	if err != nil {
		return nil, err
	}
	out, err := m.Forward(ctx, x, Params{Mask: mask, Intermediate: NoIntermediate})
	x.Release()
	if err != nil {
		return nil, err
	}
	return out.Last, nil
}

// Forward runs the encoder stack on embeddings x (B, T, d_model) F32 (T5Stack.forward).
func (m *Model) Forward(ctx context.Context, x *gpu.Tensor, p Params) (*Output, error) {
	rt := m.rt
	if x.Rank() != 3 || x.Dim(2) != m.DModel || x.DType() != gpu.F32 {
		return nil, fmt.Errorf("t5: input %v %s, want (B, T, %d) F32", x.Shape(), x.DType(), m.DModel)
	}
	b, n := x.Dim(0), x.Dim(1)
	if p.Mask != nil && len(p.Mask) != b {
		return nil, fmt.Errorf("t5: %d mask rows for a batch of %d", len(p.Mask), b)
	}
	for i, row := range p.Mask {
		if len(row) != n {
			return nil, fmt.Errorf("t5: mask row %d has %d values for %d tokens", i, len(row), n)
		}
	}
	inter := p.Intermediate
	if inter != NoIntermediate && inter < 0 {
		inter += len(m.Blocks)
	}
	if inter != NoIntermediate && (inter < 0 || inter >= len(m.Blocks)) {
		return nil, fmt.Errorf("t5: block %d does not exist in a %d-block encoder", p.Intermediate, len(m.Blocks))
	}
	h, err := gpu.Contiguous(rt, x)
	if err != nil {
		return nil, err
	}
	out := &Output{}
	var bias *gpu.Tensor
	defer func() {
		if bias != nil {
			bias.Release()
		}
	}()
	for i := range m.Blocks {
		if err := ctx.Err(); err != nil {
			h.Release()
			out.Release()
			return nil, err
		}
		blk := &m.Blocks[i]
		if blk.Attn.RelativeBias != nil {
			// Block 0's table serves every later block (past_bias) unless a block has its
			// own (UMT5).
			if bias != nil {
				bias.Release()
			}
			if bias, err = m.attentionBias(blk.Attn.RelativeBias, n, p.Mask); err != nil {
				h.Release()
				out.Release()
				return nil, err
			}
		}
		nh, err := m.block(blk, h, bias)
		h.Release()
		if err != nil {
			out.Release()
			return nil, fmt.Errorf("t5: block %d: %w", i, err)
		}
		h = nh
		if i == inter {
			// A contiguous tensor's Contiguous is a second reference to it.
			if out.Intermediate, err = gpu.Contiguous(rt, h); err != nil {
				h.Release()
				return nil, err
			}
		}
	}
	out.Last, err = m.FinalNorm.Forward(rt, h, m.Eps)
	h.Release()
	if err != nil {
		out.Release()
		return nil, err
	}
	if out.Intermediate != nil && p.NormIntermediate {
		normed, err := m.FinalNorm.Forward(rt, out.Intermediate, m.Eps)
		out.Intermediate.Release()
		out.Intermediate = normed
		if err != nil {
			out.Release()
			return nil, err
		}
	}
	return out, nil
}

// block is T5Block.forward: x + attention(norm(x)), then + feed_forward(norm(x)).
func (m *Model) block(blk *Block, x, bias *gpu.Tensor) (*gpu.Tensor, error) {
	rt := m.rt
	h, err := blk.AttnNorm.Forward(rt, x, m.Eps)
	if err != nil {
		return nil, err
	}
	a, err := m.attention(&blk.Attn, h, bias)
	h.Release()
	if err != nil {
		return nil, err
	}
	x1, err := gpu.Add(rt, x, a)
	a.Release()
	if err != nil {
		return nil, err
	}
	h, err = blk.FFNorm.Forward(rt, x1, m.Eps)
	if err != nil {
		x1.Release()
		return nil, err
	}
	f, err := blk.FF.forward(rt, h)
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

// attention is T5Attention.forward: softmax(q·kᵀ + bias + mask)·v per head, with no
// 1/√d_kv on the logits (ComfyUI multiplies k by √d_kv to undo its attention's scale).
func (m *Model) attention(a *SelfAttention, h, bias *gpu.Tensor) (*gpu.Tensor, error) {
	rt := m.rt
	b, n := h.Dim(0), h.Dim(1)
	heads := func(l *nn.Linear) (*gpu.Tensor, error) {
		t, err := l.Forward(rt, h)
		if err != nil {
			return nil, err
		}
		r, err := gpu.Reshape(rt, t, b, n, m.Heads, m.DKV)
		t.Release()
		if err != nil {
			return nil, err
		}
		return gpu.Permute(r, 0, 2, 1, 3)
	}
	q, err := heads(&a.Q)
	if err != nil {
		return nil, err
	}
	defer q.Release()
	k, err := heads(&a.K)
	if err != nil {
		return nil, err
	}
	defer k.Release()
	v, err := heads(&a.V)
	if err != nil {
		return nil, err
	}
	defer v.Release()
	o, err := gpu.Attention(rt, q, k, v, bias, gpu.AttentionParams{Scale: 1})
	if err != nil {
		return nil, err
	}
	op, err := gpu.Permute(o, 0, 2, 1, 3)
	o.Release()
	if err != nil {
		return nil, err
	}
	oc, err := gpu.Contiguous(rt, op)
	op.Release()
	if err != nil {
		return nil, err
	}
	or, err := gpu.Reshape(rt, oc, b, n, m.Heads*m.DKV)
	oc.Release()
	if err != nil {
		return nil, err
	}
	defer or.Release()
	return a.O.Forward(rt, or)
}

// forward is T5DenseGatedActDense: wo(gelu_tanh(wi_0·x) ⊙ wi_1·x).
func (f *FeedForward) forward(rt *gpu.Runtime, h *gpu.Tensor) (*gpu.Tensor, error) {
	g, err := f.Gate.Forward(rt, h)
	if err != nil {
		return nil, err
	}
	ga, err := gpu.GELUTanh(rt, g)
	g.Release()
	if err != nil {
		return nil, err
	}
	defer ga.Release()
	u, err := f.Up.Forward(rt, h)
	if err != nil {
		return nil, err
	}
	p, err := gpu.Mul(rt, ga, u)
	u.Release()
	if err != nil {
		return nil, err
	}
	defer p.Release()
	return f.Down.Forward(rt, p)
}

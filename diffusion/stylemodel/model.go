package stylemodel

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// Model is a style model: it turns a CLIP vision model's last hidden state (B, L, D)
// into tokens (B, T, context) for StyleModelApply.
type Model interface {
	// Cond is StyleModel.get_cond: the style tokens of the vision output's
	// last_hidden_state.
	Cond(ctx context.Context, rt *gpu.Runtime, lastHidden *gpu.Tensor) (*gpu.Tensor, error)
	// Kind names the model ("redux" or "t2i_style").
	Kind() string
}

// Redux is Flux Redux's ReduxImageEncoder: redux_down(SiLU(redux_up(x))).
type Redux struct {
	Up   nn.Linear `sd:"redux_up"`
	Down nn.Linear `sd:"redux_down"`
}

// Kind implements Model.
func (*Redux) Kind() string { return "redux" }

// Cond implements Model.
func (r *Redux) Cond(ctx context.Context, rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error) {
	if x.Rank() != 3 || x.Dim(2) != r.Up.Weight.Dim(1) {
		return nil, fmt.Errorf("stylemodel: Redux takes (B, tokens, %d) vision features (SigLIP), got %v", r.Up.Weight.Dim(1), x.Shape())
	}
	h, err := r.Up.Forward(rt, x)
	if err != nil {
		return nil, err
	}
	h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.SiLU(rt, t) })
	if err != nil {
		return nil, err
	}
	return then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return r.Down.Forward(rt, t) })
}

// Block is a ResidualAttentionBlock (torch.nn.MultiheadAttention and a QuickGELU MLP).
type Block struct {
	Attn struct {
		InWeight *gpu.Tensor `sd:"in_proj_weight"`
		InBias   *gpu.Tensor `sd:"in_proj_bias"`
		Out      nn.Linear   `sd:"out_proj"`
	} `sd:"attn"`
	LN1 nn.Norm `sd:"ln_1"`
	MLP struct {
		FC   nn.Linear `sd:"c_fc"`
		Proj nn.Linear `sd:"c_proj"`
	} `sd:"mlp"`
	LN2 nn.Norm `sd:"ln_2"`
}

// StyleAdapter is the T2I-Adapter style model: learned style tokens appended to the
// vision features, a transformer, and the style tokens' outputs projected to the text
// context width.
type StyleAdapter struct {
	Embedding *gpu.Tensor `sd:"style_embedding"` // (1, tokens, width)
	Layers    []Block     `sd:"transformer_layes"`
	LNPre     nn.Norm     `sd:"ln_pre"`
	LNPost    nn.Norm     `sd:"ln_post"`
	// Proj is proj (width, context), bound transposed as a linear layer's weight.
	Proj *gpu.Tensor `sd:"proj_t"`
	// Heads is ComfyUI's num_head (8; the file does not hold it).
	Heads int
}

// adapterHeads is load_style_model's num_head.
const adapterHeads = 8

// Kind implements Model.
func (*StyleAdapter) Kind() string { return "t2i_style" }

// Cond implements Model (StyleAdapter.forward).
func (s *StyleAdapter) Cond(ctx context.Context, rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error) {
	tokens, width := s.Embedding.Dim(1), s.Embedding.Dim(2)
	if x.Rank() != 3 || x.Dim(2) != width {
		return nil, fmt.Errorf("stylemodel: the style adapter takes (B, tokens, %d) vision features (CLIP ViT-L), got %v", width, x.Shape())
	}
	b, l := x.Dim(0), x.Dim(1)
	emb, err := s.Embedding.Float32()
	if err != nil {
		return nil, err
	}
	xs, err := x.Float32()
	if err != nil {
		return nil, err
	}
	// cat([x, style_embedding], dim=1) per batch item.
	data := make([]float32, 0, b*(l+tokens)*width)
	for bi := 0; bi < b; bi++ {
		data = append(data, xs[bi*l*width:(bi+1)*l*width]...)
		data = append(data, emb...)
	}
	h, err := rt.FromFloat32(data, b, l+tokens, width)
	if err != nil {
		return nil, err
	}
	if h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return s.LNPre.Layer(rt, t, layerNormEps) }); err != nil {
		return nil, err
	}
	for i := range s.Layers {
		if err := ctx.Err(); err != nil {
			h.Release()
			return nil, err
		}
		if h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return s.Layers[i].forward(rt, t, s.Heads) }); err != nil {
			return nil, fmt.Errorf("stylemodel: layer %d: %w", i, err)
		}
	}
	last, err := gpu.Narrow(h, 1, l, tokens)
	h.Release()
	if err != nil {
		return nil, err
	}
	last, err = then(last, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Contiguous(rt, t) })
	if err == nil {
		last, err = then(last, func(t *gpu.Tensor) (*gpu.Tensor, error) { return s.LNPost.Layer(rt, t, layerNormEps) })
	}
	if err != nil {
		return nil, err
	}
	return then(last, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Linear(rt, t, s.Proj, nil) })
}

func (blk *Block) forward(rt *gpu.Runtime, x *gpu.Tensor, heads int) (*gpu.Tensor, error) {
	h, err := blk.LN1.Layer(rt, x, layerNormEps)
	if err != nil {
		return nil, err
	}
	a, err := then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return blk.attention(rt, t, heads) })
	if err != nil {
		return nil, err
	}
	x1, err := gpu.Add(rt, x, a)
	a.Release()
	if err != nil {
		return nil, err
	}
	h, err = blk.LN2.Layer(rt, x1, layerNormEps)
	if err == nil {
		h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return blk.MLP.FC.Forward(rt, t) })
	}
	if err == nil {
		h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.QuickGELU(rt, t) })
	}
	if err == nil {
		h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return blk.MLP.Proj.Forward(rt, t) })
	}
	if err != nil {
		x1.Release()
		return nil, err
	}
	out, err := gpu.Add(rt, x1, h)
	x1.Release()
	h.Release()
	return out, err
}

// attention is nn.MultiheadAttention(x, x, x) without a mask: the fused input
// projection split into q, k and v, scaled dot-product attention per head, the output
// projection.
func (blk *Block) attention(rt *gpu.Runtime, h *gpu.Tensor, heads int) (*gpu.Tensor, error) {
	b, n, d := h.Dim(0), h.Dim(1), h.Dim(2)
	if d%heads != 0 {
		return nil, fmt.Errorf("width %d is not divisible by %d heads", d, heads)
	}
	qkv, err := gpu.Linear(rt, h, blk.Attn.InWeight, blk.Attn.InBias)
	if err != nil {
		return nil, err
	}
	defer qkv.Release()
	parts, err := gpu.Chunk(qkv, 3, -1)
	if err != nil {
		return nil, err
	}
	split := make([]*gpu.Tensor, 3)
	defer func() {
		for _, p := range append(parts, split...) {
			if p != nil {
				p.Release()
			}
		}
	}()
	for i, p := range parts {
		c, err := gpu.Contiguous(rt, p)
		if err != nil {
			return nil, err
		}
		r, err := then(c, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Reshape(rt, t, b, n, heads, d/heads) })
		if err != nil {
			return nil, err
		}
		if split[i], err = then(r, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Permute(t, 0, 2, 1, 3) }); err != nil {
			return nil, err
		}
	}
	o, err := gpu.Attention(rt, split[0], split[1], split[2], nil, gpu.AttentionParams{Scale: 1 / math.Sqrt(float64(d/heads))})
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
	return then(o, func(t *gpu.Tensor) (*gpu.Tensor, error) { return blk.Attn.Out.Forward(rt, t) })
}

// File is a style model loaded from a file it aliases; Close unmaps it.
type File struct {
	Model
	file *tensorfile.File
}

// Close releases the mapping.
func (f *File) Close() error { return f.file.Close() }

// Bytes is the size of the file's tensors.
func (f *File) Bytes() int64 {
	var n int64
	for _, in := range f.file.Tensors() {
		n += in.Size
	}
	return n
}

// LoadFile loads a style model file as load_style_model does: "style_embedding" makes it
// the T2I style adapter, "redux_down.weight" Flux Redux; anything else is refused.
func LoadFile(rt *gpu.Runtime, path string) (*File, error) {
	f, err := tensorfile.Open(path, tensorfile.Safetensors, tensorfile.Torch)
	if err != nil {
		return nil, fmt.Errorf("stylemodel: %w", err)
	}
	m, err := Load(rt, statedict.NewFileSource(rt, f))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return &File{Model: m, file: f}, nil
}

// Load binds a style model from src (keys at the top level).
func Load(rt *gpu.Runtime, src *statedict.FileSource) (Model, error) {
	switch {
	case src.Has("style_embedding"):
		s := &StyleAdapter{Heads: adapterHeads}
		if src.Has("proj") {
			src.Alias("proj_t", statedict.Derived{Stored: "proj", Transpose: true})
		}
		if _, err := statedict.Bind(rt, src, "", s); err != nil {
			return nil, fmt.Errorf("stylemodel: style adapter: %w", err)
		}
		return s, s.check()
	case src.Has("redux_down.weight"):
		r := &Redux{}
		if _, err := statedict.Bind(rt, src, "", r); err != nil {
			return nil, fmt.Errorf("stylemodel: redux: %w", err)
		}
		if r.Up.Weight.Rank() != 2 || r.Down.Weight.Rank() != 2 || r.Down.Weight.Dim(1) != r.Up.Weight.Dim(0) {
			return nil, fmt.Errorf("stylemodel: redux_up %v and redux_down %v do not chain", r.Up.Weight.Shape(), r.Down.Weight.Shape())
		}
		return r, nil
	}
	return nil, errors.New("stylemodel: invalid style model (neither style_embedding nor redux_down.weight)")
}

func (s *StyleAdapter) check() error {
	e := s.Embedding.Shape()
	if len(e) != 3 || e[0] != 1 || e[1] == 0 {
		return fmt.Errorf("stylemodel: style_embedding %v is not (1, tokens, width)", e)
	}
	if p := s.Proj.Shape(); len(p) != 2 || p[1] != e[2] {
		return fmt.Errorf("stylemodel: proj %v is not (%d, context)", []int{p[1], p[0]}, e[2])
	}
	if len(s.Layers) == 0 {
		return errors.New("stylemodel: the style adapter has no transformer layers")
	}
	return nil
}

// then applies f to x and releases x.
func then(x *gpu.Tensor, f func(*gpu.Tensor) (*gpu.Tensor, error)) (*gpu.Tensor, error) {
	y, err := f(x)
	x.Release()
	return y, err
}

// layerNormEps is torch.nn.LayerNorm's default eps, which the style adapter keeps.
const layerNormEps = 1e-5

package gligen

import (
	"fmt"
	"math"

	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
)

// MaxObjects is how many grounding tokens the position net makes (Gligen.max_objs):
// the boxes given, then null tokens.
const MaxObjects = 30

// fourierFreqs is PositionNet's fourier_freqs: each box coordinate becomes 8 sines
// and 8 cosines, so a box (x1, y1, x2, y2) becomes 64 features.
const fourierFreqs = 8

// positionDim is the width of a box's fourier features.
const positionDim = fourierFreqs * 2 * 4

// Fuser is GatedSelfAttentionDense: the grounding tokens, projected to the image
// tokens' width, join the image tokens for one self-attention whose image part is
// added back through a tanh gate, then a gated feed-forward.
type Fuser struct {
	Linear     nn.Linear        `sd:"linear"`
	Attn       unet.Attention   `sd:"attn"`
	FF         unet.FeedForward `sd:"ff.net"`
	Norm1      nn.Norm          `sd:"norm1"`
	Norm2      nn.Norm          `sd:"norm2"`
	AlphaAttn  *gpu.Tensor      `sd:"alpha_attn"`
	AlphaDense *gpu.Tensor      `sd:"alpha_dense"`

	// Block is the UNet block whose spatial transformer the fuser belongs to.
	Block unet.Block
	// Heads and DimHead split the attention as load_gligen does: 8 heads for a
	// 768-wide text embedding (SD1.x), 64-wide heads otherwise.
	Heads, DimHead int
	gateAttn       float32 // tanh(alpha_attn)
	gateDense      float32 // tanh(alpha_dense)
}

// PositionNet turns boxes and their text embeddings into grounding tokens: the
// embedding beside the box's fourier features, through a three-layer SiLU MLP; the
// padding slots use learned null features instead.
type PositionNet struct {
	L0           nn.Linear   `sd:"linears.0"`
	L1           nn.Linear   `sd:"linears.2"`
	L2           nn.Linear   `sd:"linears.4"`
	NullPositive *gpu.Tensor `sd:"null_positive_feature"`
	NullPosition *gpu.Tensor `sd:"null_position_feature"`
}

// Model is a loaded GLIGEN: the fusers in the order the UNet's spatial transformers
// run (transformer_index) and the position net.
type Model struct {
	Fusers   []*Fuser
	Position PositionNet
	// KeyDim is the width of the text embeddings the boxes carry.
	KeyDim int
	// nullPositive and nullPosition are the position net's null features.
	nullPositive, nullPosition []float32
}

// Box is one grounded phrase as GLIGENTextBoxApply records it: the text's pooled CLIP
// embedding (not projected) and a rectangle in latent units (pixels / 8).
type Box struct {
	Pooled              []float32
	Height, Width, Y, X int
}

// Objects returns the grounding tokens (batch, MaxObjects, out) for boxes on a latent
// of h×w (Gligen.set_position, then the position net).
func (m *Model) Objects(rt *gpu.Runtime, boxes []Box, h, w, batch int) (*gpu.Tensor, error) {
	if len(boxes) > MaxObjects {
		return nil, fmt.Errorf("gligen: %d text boxes, at most %d", len(boxes), MaxObjects)
	}
	if h <= 0 || w <= 0 || batch <= 0 {
		return nil, fmt.Errorf("gligen: bad latent %d×%d, batch %d", h, w, batch)
	}
	inDim := len(m.nullPositive)
	row := make([]float32, 0, MaxObjects*(inDim+positionDim))
	for i := 0; i < MaxObjects; i++ {
		if i >= len(boxes) {
			row = append(row, m.nullPositive...)
			row = append(row, m.nullPosition...)
			continue
		}
		b := boxes[i]
		if len(b.Pooled) != inDim {
			return nil, fmt.Errorf("gligen: box %d carries a %d-wide text embedding, the position net takes %d", i, len(b.Pooled), inDim)
		}
		row = append(row, b.Pooled...)
		xyxy := [4]float32{
			float32(float64(b.X) / float64(w)),
			float32(float64(b.Y) / float64(h)),
			float32(float64(b.X+b.Width) / float64(w)),
			float32(float64(b.Y+b.Height) / float64(h)),
		}
		row = appendFourier(row, xyxy)
	}
	data := make([]float32, 0, batch*len(row))
	for range batch {
		data = append(data, row...)
	}
	x, err := rt.FromFloat32(data, batch, MaxObjects, inDim+positionDim)
	if err != nil {
		return nil, err
	}
	p := &m.Position
	steps := []func(*gpu.Tensor) (*gpu.Tensor, error){
		func(t *gpu.Tensor) (*gpu.Tensor, error) { return p.L0.Forward(rt, t) },
		func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.SiLU(rt, t) },
		func(t *gpu.Tensor) (*gpu.Tensor, error) { return p.L1.Forward(rt, t) },
		func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.SiLU(rt, t) },
		func(t *gpu.Tensor) (*gpu.Tensor, error) { return p.L2.Forward(rt, t) },
	}
	for _, f := range steps {
		if x, err = then(x, f); err != nil {
			return nil, fmt.Errorf("gligen: position net: %w", err)
		}
	}
	return x, nil
}

// appendFourier appends FourierEmbedder's features of one box: for each frequency
// 100^(k/8), the sines of the four coordinates, then their cosines.
func appendFourier(dst []float32, xyxy [4]float32) []float32 {
	for k := 0; k < fourierFreqs; k++ {
		f := float32(math.Pow(100, float64(float32(k)/fourierFreqs)))
		for _, v := range xyxy {
			dst = append(dst, float32(math.Sin(float64(f*v))))
		}
		for _, v := range xyxy {
			dst = append(dst, float32(math.Cos(float64(f*v))))
		}
	}
	return dst
}

// Forward applies the fuser to the image tokens x (N, L, C) with the grounding tokens
// objs (N, MaxObjects, KeyDim) and returns the new tokens; x is left alone.
func (f *Fuser) Forward(rt *gpu.Runtime, x, objs *gpu.Tensor) (*gpu.Tensor, error) {
	if x.Rank() != 3 || x.Dim(2) != f.Linear.Weight.Dim(0) {
		return nil, fmt.Errorf("gligen: the fuser of %s block %d takes %d-wide tokens, got %v", f.Block.Part, f.Block.Number, f.Linear.Weight.Dim(0), x.Shape())
	}
	if objs.Dim(0) != x.Dim(0) {
		return nil, fmt.Errorf("gligen: %d grounding batches for %d image batches", objs.Dim(0), x.Dim(0))
	}
	l := x.Dim(1)
	o, err := f.Linear.Forward(rt, objs)
	if err != nil {
		return nil, err
	}
	cat, err := then(o, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Concat(rt, 1, x, t) })
	if err != nil {
		return nil, err
	}
	h, err := then(cat, func(t *gpu.Tensor) (*gpu.Tensor, error) { return f.Norm1.Layer(rt, t, 1e-5) })
	if err != nil {
		return nil, err
	}
	a, err := then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return f.Attn.Forward(rt, t, t, f.Heads, f.DimHead) })
	if err != nil {
		return nil, err
	}
	a, err = then(a, func(t *gpu.Tensor) (*gpu.Tensor, error) {
		v, err := gpu.Narrow(t, 1, 0, l)
		if err != nil {
			return nil, err
		}
		return then(v, func(v *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Contiguous(rt, v) })
	})
	if err != nil {
		return nil, err
	}
	x1, err := gatedAdd(rt, x, a, f.gateAttn)
	if err != nil {
		return nil, err
	}
	n2, err := f.Norm2.Layer(rt, x1, 1e-5)
	if err != nil {
		x1.Release()
		return nil, err
	}
	d, err := then(n2, func(t *gpu.Tensor) (*gpu.Tensor, error) { return f.FF.Forward(rt, t) })
	if err != nil {
		x1.Release()
		return nil, err
	}
	out, err := gatedAdd(rt, x1, d, f.gateDense)
	x1.Release()
	return out, err
}

// gatedAdd returns x + gate·y and releases y.
func gatedAdd(rt *gpu.Runtime, x, y *gpu.Tensor, gate float32) (*gpu.Tensor, error) {
	g, err := rt.FromFloat32([]float32{gate}, 1)
	if err != nil {
		y.Release()
		return nil, err
	}
	s, err := gpu.Mul(rt, y, g)
	g.Release()
	y.Release()
	if err != nil {
		return nil, err
	}
	return then(s, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Add(rt, x, t) })
}

// then applies f to x and releases x.
func then(x *gpu.Tensor, f func(*gpu.Tensor) (*gpu.Tensor, error)) (*gpu.Tensor, error) {
	y, err := f(x)
	x.Release()
	return y, err
}

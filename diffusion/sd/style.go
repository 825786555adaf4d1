package sd

import (
	"errors"
	"fmt"
	"math"

	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/dtype"
)

// AttentionMask is a conditioning entry's attention bias (ComfyUI's attention_mask and
// attention_mask_img_shape as StyleModelApply builds them): (N, Size, Size) additive
// biases over the text tokens followed by ImgH·ImgW image tokens, float16 values.
// Flux-style networks consume it; UNets ignore it, as BaseModel.extra_conds does.
type AttentionMask struct {
	Bias       []float32
	N, Size    int
	ImgH, ImgW int
}

// ApplyStyle is StyleModelApply.apply_stylemodel: the style tokens (B, T, D) are
// flattened to one sequence (1, B·T, D), scaled by strength for "multiply", and
// appended to every entry's tokens. With "attn_bias" and a strength other than 1 (or an
// entry that already has a mask) the entry's attention mask grows by the new tokens,
// which get the bias log(strength) from the text and image tokens.
func ApplyStyle(rt *gpu.Runtime, c Conditioning, style *gpu.Tensor, strength float64, attnBias bool) (Conditioning, error) {
	if style.Rank() != 3 {
		return nil, fmt.Errorf("sd: style tokens %v are not (B, tokens, dim)", style.Shape())
	}
	st, err := style.Float32()
	if err != nil {
		return nil, err
	}
	n, dim := style.Dim(0)*style.Dim(1), style.Dim(2)
	tokens := append([]float32(nil), st...)
	if !attnBias {
		s := float32(strength)
		for i := range tokens {
			tokens[i] *= s
		}
	}
	out := make(Conditioning, len(c))
	for i, e := range c {
		if e.Embedding.Dim(0) != 1 || e.Embedding.Dim(2) != dim {
			return nil, fmt.Errorf("sd: conditioning entry %d: tokens %v cannot take style tokens of width %d", i, e.Embedding.Shape(), dim)
		}
		if e.AttentionMask != nil || (attnBias && strength != 1) {
			bias := 1.0
			if attnBias {
				bias = strength
			}
			if e.AttentionMask, err = growMask(e.AttentionMask, e.Embedding.Dim(1), n, float32(math.Log(bias))); err != nil {
				return nil, fmt.Errorf("sd: conditioning entry %d: %w", i, err)
			}
		}
		txt, err := e.Embedding.Float32()
		if err != nil {
			return nil, err
		}
		cat := make([]float32, 0, len(txt)+len(tokens))
		cat = append(append(cat, txt...), tokens...)
		if e.Embedding, err = rt.FromFloat32(cat, 1, e.Embedding.Dim(1)+n, dim); err != nil {
			return nil, err
		}
		out[i] = e
	}
	return out, nil
}

// growMask inserts n tokens after the nTxt text tokens of a mask (a zero one over
// nTxt + 1 tokens when there is none: the default image shape is 1×1), copying the four
// quadrants and giving the new columns bias from every text and image row.
func growMask(m *AttentionMask, nTxt, n int, bias float32) (*AttentionMask, error) {
	if m == nil {
		m = &AttentionMask{N: 1, Size: nTxt + 1, ImgH: 1, ImgW: 1}
		m.Bias = make([]float32, m.Size*m.Size)
	}
	nRef := m.ImgH * m.ImgW
	if m.Size != nTxt+nRef {
		return nil, fmt.Errorf("attention mask over %d tokens does not match %d text and %d image tokens", m.Size, nTxt, nRef)
	}
	if m.Size+n > 1<<15 {
		return nil, errors.New("attention mask too large")
	}
	b := dtype.F16ToF32(dtype.F32ToF16(bias))
	size := m.Size + n
	g := &AttentionMask{N: m.N, Size: size, ImgH: m.ImgH, ImgW: m.ImgW, Bias: make([]float32, m.N*size*size)}
	// at maps an old index to the new one (the style tokens go after the text).
	at := func(i int) int {
		if i < nTxt {
			return i
		}
		return i + n
	}
	for k := 0; k < m.N; k++ {
		for r := 0; r < m.Size; r++ {
			for c := 0; c < m.Size; c++ {
				g.Bias[(k*size+at(r))*size+at(c)] = m.Bias[(k*m.Size+r)*m.Size+c]
			}
		}
		for r := 0; r < size; r++ {
			if r >= nTxt && r < nTxt+n {
				continue
			}
			for c := nTxt; c < nTxt+n; c++ {
				g.Bias[(k*size+r)*size+c] = b
			}
		}
	}
	return g, nil
}

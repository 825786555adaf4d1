package t5

import (
	"context"
	"errors"
	"fmt"

	"github.com/forgeflow/forgeflow/diffusion/clip"
	"github.com/forgeflow/forgeflow/gpu"
)

// Special tokens of T5's vocabulary (spiece.model ids, T5XXLModel's special_tokens).
const (
	PadID = 0 // <pad>
	EndID = 1 // </s>
	UnkID = 2 // <unk>
)

// Encoder is ComfyUI's T5XXLModel (an SDClipModel around T5, comfy/text_encoders/
// sd3_clip.py): it encodes a tokenized prompt with its weights applied, optionally with
// the attention mask SD3.5 and Chroma ask for.
type Encoder struct {
	Model *Model
	// End and Pad are the special tokens of the empty sequence weights are measured
	// against (EndID, PadID).
	End, Pad int
	// AttentionMask hides the tokens after the first end token from attention and
	// returns the mask (enable_attention_masks / return_attention_masks); Flux leaves
	// it off, so padding attends and is attended to.
	AttentionMask bool
	// Layer selects the output: 0 the last block's, final-normed; a negative value the
	// output of that block counted from the end (CLIPSetLastLayer), final-normed too
	// (layer_norm_hidden_state).
	Layer int
}

// NewEncoder returns T5XXLModel's settings for m: end 1, pad 0, no attention mask.
func NewEncoder(m *Model) *Encoder { return &Encoder{Model: m, End: EndID, Pad: PadID} }

// Encoded is the conditioning of one prompt: Cond (1, T, d_model) and, when the encoder
// returns attention masks, Mask (T values, 1 up to and including the first end token).
type Encoded struct {
	Cond *gpu.Tensor
	Mask []int
}

// Release frees the conditioning tensor.
func (e *Encoded) Release() {
	if e.Cond != nil {
		e.Cond.Release()
	}
}

// Encode runs tokens (one sequence, as TokenizeWithWeights makes it) through the model.
// When any weight is not 1 an empty sequence (end token, then padding) is encoded
// alongside and each weighted token becomes (z − z_empty)·w + z_empty, as
// encode_token_weights does. Tokens with an Embed vector (textual inversion) replace the
// token embedding.
func (e *Encoder) Encode(ctx context.Context, tokens []clip.Token) (*Encoded, error) {
	m := e.Model
	if len(tokens) == 0 {
		return nil, errors.New("t5: nothing to encode")
	}
	n := len(tokens)
	weighted := false
	ids := make([]int, n)
	for i, t := range tokens {
		if t.Weight != 1 {
			weighted = true
		}
		ids[i] = t.ID
		if t.Embed != nil {
			if len(t.Embed) != m.DModel {
				return nil, fmt.Errorf("t5: embedding vector of width %d at position %d, model width %d", len(t.Embed), i, m.DModel)
			}
			ids[i] = e.Pad // looked up, then replaced
		}
	}
	rows := [][]int{ids}
	if weighted {
		empty := make([]int, n)
		for i := range empty {
			empty[i] = e.Pad
		}
		empty[0] = e.End
		rows = append(rows, empty)
	}
	x, err := m.Embed(rows)
	if err != nil {
		return nil, err
	}
	defer x.Release()
	xs, ok := x.HostFloat32()
	if !ok {
		return nil, errors.New("t5: embeddings are not in host memory")
	}
	for i, t := range tokens {
		if t.Embed != nil {
			copy(xs[i*m.DModel:(i+1)*m.DModel], t.Embed)
		}
	}
	var mask []int
	var masks [][]int
	if e.AttentionMask {
		masks = append(masks, e.maskOf(ids, tokens))
		if weighted {
			masks = append(masks, e.maskOf(rows[1], nil))
		}
		mask = masks[0]
	}
	p := Params{Mask: masks, Intermediate: NoIntermediate, NormIntermediate: true}
	if e.Layer < 0 && -e.Layer <= len(m.Blocks) {
		p.Intermediate = e.Layer
	}
	out, err := m.Forward(ctx, x, p)
	if err != nil {
		return nil, err
	}
	defer out.Release()
	z := out.Last
	if out.Intermediate != nil {
		z = out.Intermediate
	}
	vals, err := z.Float32()
	if err != nil {
		return nil, err
	}
	d := m.DModel
	if weighted {
		empty := vals[n*d:]
		for j, t := range tokens {
			if t.Weight == 1 {
				continue
			}
			row, e0 := vals[j*d:(j+1)*d], empty[j*d:(j+1)*d]
			w := float32(t.Weight)
			for k := range row {
				row[k] = (row[k]-e0[k])*w + e0[k]
			}
		}
	}
	cond, err := m.rt.FromFloat32(vals[:n*d], 1, n, d)
	if err != nil {
		return nil, err
	}
	return &Encoded{Cond: cond, Mask: mask}, nil
}

// maskOf is SDClipModel.process_tokens' attention mask: 1 for every token up to and
// including the first end token, 0 after it; embedding vectors count as tokens.
func (e *Encoder) maskOf(ids []int, tokens []clip.Token) []int {
	mask := make([]int, len(ids))
	ended := false
	for i, id := range ids {
		if !ended {
			mask[i] = 1
		}
		if tokens != nil && tokens[i].Embed != nil {
			continue
		}
		if id == e.End {
			ended = true
		}
	}
	return mask
}

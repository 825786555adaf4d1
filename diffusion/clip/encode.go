package clip

import (
	"errors"

	"github.com/forgeflow/forgeflow/gpu"
)

// Encoder is ComfyUI's SDClipModel around a TextModel: it encodes token windows with the
// prompt weights applied, the layer chosen by CLIPSetLastLayer, and the pooled output.
type Encoder struct {
	Model *TextModel
	// Layer selects the output: 0 the last layer, final-normed; a negative value the
	// output of that layer counted from the end (CLIPSetLastLayer's stop_at_clip_layer).
	Layer int
	// NormHidden applies the final layer norm to an intermediate layer (SD1: true; SDXL's
	// CLIP-L: false).
	NormHidden bool
	// Projection, when set, projects the pooled output (text_projection; OpenCLIP-G and
	// standalone CLIP-L files).
	Projection *gpu.Tensor
	// Start, End and Pad are the special tokens of the empty sequence weights are
	// measured against.
	Start, End, Pad int
}

// Encoded is a conditioning tensor (1, 77·windows, D) and the pooled output (1, D) of
// the first window.
type Encoded struct {
	Cond   *gpu.Tensor
	Pooled *gpu.Tensor
}

// Encode runs TokenizeWithWeights' windows through the model. When any weight is not 1,
// an all-padding sequence is encoded alongside and each weighted token becomes
// (z − z_empty)·w + z_empty, as ComfyUI's encode_token_weights does.
func (e *Encoder) Encode(rt *gpu.Runtime, windows [][]Token) (*Encoded, error) {
	if len(windows) == 0 {
		return nil, errors.New("clip: nothing to encode")
	}
	length := len(windows[0])
	weighted := false
	batch := make([]Input, 0, len(windows)+1)
	for _, w := range windows {
		for _, t := range w {
			if t.Weight != 1 {
				weighted = true
			}
		}
		batch = append(batch, Input(w))
	}
	if weighted {
		empty := make(Input, length)
		for i := range empty {
			empty[i] = Token{ID: e.Pad, Weight: 1}
		}
		empty[0].ID = e.Start
		if length > 1 {
			empty[1].ID = e.End
		}
		batch = append(batch, empty)
	}
	// As SDClipModel.clip_layer: 0 (never set) or an index beyond the model means the
	// last layer's final-normed output; otherwise that layer's output, normed only with
	// NormHidden (so −1 differs from "last" for SDXL's CLIP-L).
	hidden := e.Layer
	if hidden == 0 || hidden < -len(e.Model.Layers) || hidden >= len(e.Model.Layers) {
		hidden = NoHidden
	}
	out, err := e.Model.Forward(rt, batch, hidden, e.NormHidden)
	if err != nil {
		return nil, err
	}
	defer out.Release()
	z := out.Last
	if out.Hidden != nil {
		z = out.Hidden
	}
	vals, err := z.Float32()
	if err != nil {
		return nil, err
	}
	dim := z.Dim(2)
	if weighted {
		emptyRow := vals[len(windows)*length*dim:]
		for wi, w := range windows {
			for j, t := range w {
				if t.Weight == 1 {
					continue
				}
				row := vals[(wi*length+j)*dim : (wi*length+j+1)*dim]
				e0 := emptyRow[j*dim : (j+1)*dim]
				for k := range row {
					row[k] = (row[k]-e0[k])*float32(t.Weight) + e0[k]
				}
			}
		}
	}
	cond, err := rt.FromFloat32(vals[:len(windows)*length*dim], 1, len(windows)*length, dim)
	if err != nil {
		return nil, err
	}
	pooled, err := out.Pooled.Float32()
	if err != nil {
		cond.Release()
		return nil, err
	}
	p, err := rt.FromFloat32(pooled[:dim], 1, dim)
	if err != nil {
		cond.Release()
		return nil, err
	}
	if e.Projection != nil {
		pp, err := gpu.Linear(rt, p, e.Projection, nil)
		p.Release()
		if err != nil {
			cond.Release()
			return nil, err
		}
		p = pp
	}
	return &Encoded{Cond: cond, Pooled: p}, nil
}

package flux

import (
	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/gpu"
)

// The layers of comfy/ldm/flux/layers.py, named after their checkpoint keys.

// MLPEmbedder is in_layer → SiLU → out_layer: time_in, vector_in and guidance_in.
type MLPEmbedder struct {
	In  nn.Linear `sd:"in_layer"`
	Out nn.Linear `sd:"out_layer"`
}

func (e *MLPEmbedder) forward(rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error) {
	var a arena
	defer a.release()
	h, err := a.add(e.In.Forward(rt, x))
	if err != nil {
		return nil, err
	}
	if h, err = a.add(gpu.SiLU(rt, h)); err != nil {
		return nil, err
	}
	return e.Out.Forward(rt, h)
}

// Modulation projects SiLU(vec) to the shift, scale and gate vectors of adaLN: two sets
// in a double-stream block (attention and MLP), one in a single-stream block.
type Modulation struct {
	Lin nn.Linear `sd:"lin"`
}

// modOut is one ModulationOut, each (B, 1, D) to broadcast over the tokens; scale1
// holds 1 + scale, the factor the blocks multiply by.
type modOut struct {
	shift, scale1, gate *gpu.Tensor
}

// forward returns the n = Lin's rows/(3·D) modulation sets for vecSiLU (B, D). The
// tensors are registered with a, which releases them.
func (m *Modulation) forward(rt *gpu.Runtime, a *arena, vecSiLU, one *gpu.Tensor) ([]modOut, error) {
	return modulations(rt, a, &m.Lin, vecSiLU, one, 3)
}

// modulations runs lin on vecSiLU (B, D) and cuts the result into sets of `per`
// vectors: (shift, scale, gate) for per = 3, (shift, scale) for the final layer.
func modulations(rt *gpu.Runtime, a *arena, lin *nn.Linear, vecSiLU, one *gpu.Tensor, per int) ([]modOut, error) {
	b, d := vecSiLU.Dim(0), vecSiLU.Dim(1)
	out, err := a.add(lin.Forward(rt, vecSiLU))
	if err != nil {
		return nil, err
	}
	n := out.Dim(1) / d
	rows, err := a.add(gpu.Reshape(rt, out, b, n, d))
	if err != nil {
		return nil, err
	}
	vecs := make([]*gpu.Tensor, n)
	for i := range vecs {
		if vecs[i], err = a.add(gpu.Narrow(rows, 1, i, 1)); err != nil {
			return nil, err
		}
	}
	sets := make([]modOut, n/per)
	for i := range sets {
		s := modOut{shift: vecs[per*i]}
		if s.scale1, err = a.add(gpu.Add(rt, vecs[per*i+1], one)); err != nil {
			return nil, err
		}
		if per > 2 {
			s.gate = vecs[per*i+2]
		}
		sets[i] = s
	}
	return sets, nil
}

// modulate is apply_mod(norm(x), 1 + scale, shift): the parameter-free LayerNorm
// (eps 1e-6) of x, times scale1, plus shift.
func modulate(rt *gpu.Runtime, x *gpu.Tensor, m modOut) (*gpu.Tensor, error) {
	var a arena
	defer a.release()
	n, err := a.add(gpu.LayerNorm(rt, x, nil, nil, 1e-6))
	if err != nil {
		return nil, err
	}
	if n, err = a.add(gpu.Mul(rt, n, m.scale1)); err != nil {
		return nil, err
	}
	return gpu.Add(rt, n, m.shift)
}

// addGated returns x + gate·y (the residual update of every block).
func addGated(rt *gpu.Runtime, x, y, gate *gpu.Tensor) (*gpu.Tensor, error) {
	g, err := gpu.Mul(rt, y, gate)
	if err != nil {
		return nil, err
	}
	defer g.Release()
	return gpu.Add(rt, x, g)
}

// QKNorm holds the RMS norms (eps 1e-6) applied to each head's queries and keys.
type QKNorm struct {
	Query *gpu.Tensor `sd:"query_norm.scale"`
	Key   *gpu.Tensor `sd:"key_norm.scale"`
}

// SelfAttention is the fused q/k/v projection, the QK norm and the output projection.
type SelfAttention struct {
	QKV  nn.Linear `sd:"qkv"`
	Norm QKNorm    `sd:"norm"`
	Proj nn.Linear `sd:"proj"`
}

// MLP is a double-stream block's Sequential(Linear, GELU(tanh), Linear).
type MLP struct {
	In  nn.Linear `sd:"0"`
	Out nn.Linear `sd:"2"`
}

func (m *MLP) forward(rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error) {
	var a arena
	defer a.release()
	h, err := a.add(m.In.Forward(rt, x))
	if err != nil {
		return nil, err
	}
	if h, err = a.add(gpu.GELUTanh(rt, h)); err != nil {
		return nil, err
	}
	return m.Out.Forward(rt, h)
}

// arena tracks the tensors a computation makes so that every exit path releases them;
// free releases large intermediates early, so the buffer pool can reuse them.
type arena struct{ ts []*gpu.Tensor }

// add registers t (when err is nil) and passes both through.
func (a *arena) add(t *gpu.Tensor, err error) (*gpu.Tensor, error) {
	if err == nil && t != nil {
		a.ts = append(a.ts, t)
	}
	return t, err
}

// free releases ts now.
func (a *arena) free(ts ...*gpu.Tensor) {
	for _, t := range ts {
		for i, u := range a.ts {
			if u == t {
				a.ts = append(a.ts[:i], a.ts[i+1:]...)
				t.Release()
				break
			}
		}
	}
}

// release releases everything still registered.
func (a *arena) release() {
	for _, t := range a.ts {
		t.Release()
	}
	a.ts = nil
}

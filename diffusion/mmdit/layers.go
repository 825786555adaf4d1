package mmdit

import (
	"fmt"

	"github.com/forgeflow/forgeflow/gpu"
)

// The small pieces of mmdit.py the blocks are made of: embedders, adaLN modulation
// (modulate), the MLP and the tensor bookkeeping.

// forward is Linear, SiLU, Linear.
func (e *Embedder) forward(rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error) {
	var a arena
	defer a.release()
	h, err := a.add(e.In.forward(rt, x))
	if err != nil {
		return nil, err
	}
	if h, err = a.add(gpu.SiLU(rt, h)); err != nil {
		return nil, err
	}
	return e.Out.forward(rt, h)
}

func (m *MLP) forward(rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error) {
	var a arena
	defer a.release()
	h, err := a.add(m.FC1.forward(rt, x))
	if err != nil {
		return nil, err
	}
	if h, err = a.add(gpu.GELUTanh(rt, h)); err != nil {
		return nil, err
	}
	return m.FC2.forward(rt, h)
}

// mod is one adaLN shift/scale pair, each (B, 1, D) to broadcast over the tokens;
// scale1 holds 1 + scale, the factor modulate multiplies by.
type mod struct {
	shift, scale1 *gpu.Tensor
}

// modulations runs the adaLN projection on cs = SiLU(c) (B, D) and cuts it into its n
// vectors (B, 1, D), in the chunk order of the block's Python code. The tensors are
// registered with a.
func modulations(rt *gpu.Runtime, a *arena, lin *Linear, cs *gpu.Tensor) ([]*gpu.Tensor, error) {
	b, d := cs.Dim(0), cs.Dim(1)
	out, err := a.add(lin.forward(rt, cs))
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
	return vecs, nil
}

// pair makes the mod of a shift and a scale vector.
func pair(rt *gpu.Runtime, a *arena, shift, scale, one *gpu.Tensor) (mod, error) {
	s1, err := a.add(gpu.Add(rt, scale, one))
	if err != nil {
		return mod{}, err
	}
	return mod{shift: shift, scale1: s1}, nil
}

// modulate is modulate(norm(x), shift, scale) with the parameter-free LayerNorm (eps
// 1e-6): shift + LN(x)·(1 + scale), computed as torch.addcmul does it.
func modulate(rt *gpu.Runtime, x *gpu.Tensor, m mod) (*gpu.Tensor, error) {
	n, err := gpu.LayerNorm(rt, x, nil, nil, 1e-6)
	if err != nil {
		return nil, err
	}
	defer n.Release()
	return modulateNormed(rt, n, m)
}

// modulateNormed is modulate on an input that is already layer-normed.
func modulateNormed(rt *gpu.Runtime, n *gpu.Tensor, m mod) (*gpu.Tensor, error) {
	p, err := gpu.Mul(rt, n, m.scale1)
	if err != nil {
		return nil, err
	}
	defer p.Release()
	return gpu.Add(rt, p, m.shift)
}

// addGated returns x + gate·y (the residual update of every block).
func addGated(rt *gpu.Runtime, x, y, gate *gpu.Tensor) (*gpu.Tensor, error) {
	g, err := gpu.Mul(rt, gate, y)
	if err != nil {
		return nil, err
	}
	defer g.Release()
	return gpu.Add(rt, x, g)
}

// heads views a q/k/v projection (B, L, 3·H·d) as (B, L, 3H, d): q in heads [0, H), k
// in [H, 2H), v in [2H, 3H) (mmdit.py split_qkv).
func heads(rt *gpu.Runtime, qkv *gpu.Tensor, h int) (*gpu.Tensor, error) {
	b, l, w := qkv.Dim(0), qkv.Dim(1), qkv.Dim(2)
	if w%(3*h) != 0 {
		return nil, fmt.Errorf("mmdit: a q/k/v width of %d does not split into 3×%d heads", w, h)
	}
	return gpu.Reshape(rt, qkv, b, l, 3*h, w/(3*h))
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

// keep unregisters t: the caller owns it now.
func (a *arena) keep(t *gpu.Tensor) *gpu.Tensor {
	for i, u := range a.ts {
		if u == t {
			a.ts = append(a.ts[:i], a.ts[i+1:]...)
			break
		}
	}
	return t
}

// release releases everything still registered.
func (a *arena) release() {
	for _, t := range a.ts {
		t.Release()
	}
	a.ts = nil
}

package sd

import (
	"fmt"
	"math"

	"github.com/forgeflow/forgeflow/diffusion/rng"
	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
)

// HyperTile is HyperTile's self-attention patch (comfy_extras/nodes_hypertile.py, after
// tfernd/HyperTile): in every UNet self-attention whose token count is the latent's
// H·W/4^i for some i ≤ MaxDepth, the queries are cut into nh×nw tiles and each tile
// attends on its own, which makes self-attention on large latents cheaper.
//
// What ComfyUI 0.3.64 computes, kept exactly:
//   - the token grid is taken as A×B with A = round(√(L·W/H)), B = round(√(L·H/W))
//     (Python's round), queries indexed (nh, A/nh, nw, B/nw) and grouped by tile;
//   - only the queries are tiled: keys and values keep their order and the attention
//     splits them into nh·nw consecutive runs of L/(nh·nw) tokens (the batch of the
//     tiled queries reshapes them), so tile t attends to run t;
//   - nh and nw are drawn by random_divisor(A or B, TileSize/8·(2^i if ScaleDepth),
//     SwapSize): the quotients of the first SwapSize divisors ≥ the minimum, one picked
//     with torch.randint(0, count−1) from torch's global generator when there are two or
//     more (so the last is never picked). ComfyUI's global generator is the one
//     prepare_noise seeded with the noise seed and drew the initial noise from; the run
//     keeps its own copy of that stream (the seed, then one randn of the latent's size),
//     so a run reproduces ComfyUI's tile choices whenever its noise came from the seed.
type HyperTile struct {
	TileSize, SwapSize, MaxDepth int
	ScaleDepth                   bool
	key                          *hyperTileKey
}

type hyperTileKey struct{ _ byte }

// NewHyperTile returns the patch for the node's inputs.
func NewHyperTile(tileSize, swapSize, maxDepth int, scaleDepth bool) HyperTile {
	return HyperTile{TileSize: tileSize, SwapSize: swapSize, MaxDepth: maxDepth, ScaleDepth: scaleDepth, key: &hyperTileKey{}}
}

// Install returns a copy of m whose every self-attention runs through the patch.
func (p HyperTile) Install(m *Model) *Model {
	return m.WithAttn1Patch(Attn1Patch{Every: true, Fn: p})
}

// generator is the run's copy of ComfyUI's global torch generator.
func (p HyperTile) generator(d *denoiser) *rng.Generator {
	if d.state == nil {
		d.state = runState{}
	}
	if g, ok := d.state[p.key].(*rng.Generator); ok {
		return g
	}
	g := rng.New(d.seed)
	g.Randn(make([]float32, d.shape[0]*d.shape[1]*d.shape[2]*d.shape[3]))
	d.state[p.key] = g
	return g
}

// randomDivisor is nodes_hypertile.random_divisor.
func randomDivisor(g *rng.Generator, value, minValue, maxOptions int) int {
	minValue = min(minValue, value)
	var ns []int
	for i := minValue; i <= value && len(ns) < maxOptions; i++ {
		if i > 0 && value%i == 0 {
			ns = append(ns, value/i)
		}
	}
	if len(ns) == 0 {
		// minValue ≤ value always finds value itself; only a value of 0 gets here.
		return 1
	}
	idx := 0
	if len(ns) > 1 {
		idx = int(g.Randint(0, int64(len(ns)-1)))
	}
	return ns[idx]
}

func (p HyperTile) replaceAttn1(call *netCall) unet.AttentionFunc {
	return func(rt *gpu.Runtime, q, k, v *gpu.Tensor, heads int) (*gpu.Tensor, error) {
		n, l, c := q.Dim(0), q.Dim(1), q.Dim(2)
		depth := -1
		for i := 0; i <= p.MaxDepth; i++ {
			s := math.Pow(2, float64(i))
			if float64(l) == (float64(call.h)/s)*(float64(call.w)/s) {
				depth = i
				break
			}
		}
		if depth < 0 {
			return attention(rt, q, k, v, heads)
		}
		ar := float64(call.w) / float64(call.h)
		a := int(math.RoundToEven(math.Sqrt(float64(l) * ar)))
		b := int(math.RoundToEven(math.Sqrt(float64(l) / ar)))
		factor := 1
		if p.ScaleDepth {
			factor = 1 << depth
		}
		tile := max(32, p.TileSize) / 8 * factor
		g := p.generator(call.d)
		nh := randomDivisor(g, a, tile, p.SwapSize)
		nw := randomDivisor(g, b, tile, p.SwapSize)
		if nh*nw <= 1 {
			return attention(rt, q, k, v, heads)
		}
		if a*b != l || a%nh != 0 || b%nw != 0 {
			return nil, fmt.Errorf("sd: hypertile: %d tokens are not a %d×%d grid", l, a, b)
		}
		th, tw := a/nh, b/nw
		qd, err := q.Float32()
		if err != nil {
			return nil, err
		}
		tiled := make([]float32, len(qd))
		// "b (nh h nw w) c -> (b nh nw) (h w) c", and its inverse below.
		index := func(bi, ih, iw, y, x int) (src, dst int) {
			src = ((bi*l + ((ih*th+y)*nw+iw)*tw + x) * c)
			dst = (((bi*nh+ih)*nw+iw)*th*tw + y*tw + x) * c
			return src, dst
		}
		each := func(f func(src, dst int)) {
			for bi := 0; bi < n; bi++ {
				for ih := 0; ih < nh; ih++ {
					for iw := 0; iw < nw; iw++ {
						for y := 0; y < th; y++ {
							for x := 0; x < tw; x++ {
								f(index(bi, ih, iw, y, x))
							}
						}
					}
				}
			}
		}
		each(func(src, dst int) { copy(tiled[dst:dst+c], qd[src:src+c]) })
		bt := n * nh * nw
		qt, err := rt.FromFloat32(tiled, bt, th*tw, c)
		if err != nil {
			return nil, err
		}
		defer qt.Release()
		kc, err := gpu.Contiguous(rt, k)
		if err != nil {
			return nil, err
		}
		defer kc.Release()
		vc, err := gpu.Contiguous(rt, v)
		if err != nil {
			return nil, err
		}
		defer vc.Release()
		kt, err := gpu.Reshape(rt, kc, bt, l/(nh*nw), c)
		if err != nil {
			return nil, err
		}
		defer kt.Release()
		vt, err := gpu.Reshape(rt, vc, bt, l/(nh*nw), c)
		if err != nil {
			return nil, err
		}
		defer vt.Release()
		o, err := attention(rt, qt, kt, vt, heads)
		if err != nil {
			return nil, err
		}
		od, err := o.Float32()
		o.Release()
		if err != nil {
			return nil, err
		}
		out := make([]float32, len(od))
		each(func(src, dst int) { copy(out[src:src+c], od[dst:dst+c]) })
		return rt.FromFloat32(out, n, l, c)
	}
}

// attention is softmax(q·kᵀ/√d)·v over heads for q, k, v of (B, L, heads·d): the
// UNet's own self-attention product (CrossAttention's optimized_attention).
func attention(rt *gpu.Runtime, q, k, v *gpu.Tensor, heads int) (*gpu.Tensor, error) {
	b, c := q.Dim(0), q.Dim(2)
	d := c / heads
	split := func(t *gpu.Tensor) (*gpu.Tensor, error) {
		tc, err := gpu.Contiguous(rt, t)
		if err != nil {
			return nil, err
		}
		r, err := gpu.Reshape(rt, tc, b, t.Dim(1), heads, d)
		tc.Release()
		if err != nil {
			return nil, err
		}
		return gpu.Permute(r, 0, 2, 1, 3)
	}
	qs, err := split(q)
	if err != nil {
		return nil, err
	}
	defer qs.Release()
	ks, err := split(k)
	if err != nil {
		return nil, err
	}
	defer ks.Release()
	vs, err := split(v)
	if err != nil {
		return nil, err
	}
	defer vs.Release()
	o, err := gpu.Attention(rt, qs, ks, vs, nil, gpu.AttentionParams{Scale: 1 / math.Sqrt(float64(d))})
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
	r, err := gpu.Reshape(rt, oc, b, q.Dim(1), c)
	oc.Release()
	return r, err
}

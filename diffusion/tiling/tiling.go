// Package tiling runs an image-to-image function over overlapping tiles and blends the
// results, re-derived from ComfyUI's comfy/utils.py tiled_scale_multidim (2-D case) and
// get_tiled_scale_steps: the tiled VAE and the upscale models use it.
//
// A sample is cut into tiles of at most tileH×tileW starting every tile − overlap
// pixels; each tile's output is multiplied by a mask that ramps linearly over
// round(scale·overlap) pixels at every tile edge (image borders included) and summed,
// and the sum is divided by the summed masks. A sample that fits in one tile is passed
// through whole, unblended.
package tiling

import (
	"context"
	"fmt"
	"math"
)

// Func maps one tile (C, h, w), row-major, to its output (outC, oh, ow).
type Func func(in []float32, h, w int) (out []float32, oh, ow int, err error)

// Scale runs fn over the tiles of one sample s (c, h, w) and blends the outputs into
// (outC, round(scale·h), round(scale·w)), returned with its height and width.
func Scale(ctx context.Context, s []float32, c, h, w, tileH, tileW, overlap int, scale float64, outC int, fn Func) ([]float32, int, int, error) {
	oh, ow := pyRound(scale*float64(h)), pyRound(scale*float64(w))
	if h <= tileH && w <= tileW {
		out, gh, gw, err := fn(s, h, w)
		if err != nil {
			return nil, 0, 0, err
		}
		if gh != oh || gw != ow || len(out) != outC*oh*ow {
			return nil, 0, 0, fmt.Errorf("tiling: a %dx%d tile gave %dx%d, want %dx%d", w, h, gw, gh, ow, oh)
		}
		return out, oh, ow, nil
	}
	posH, err := Positions(h, tileH, overlap)
	if err != nil {
		return nil, 0, 0, err
	}
	posW, err := Positions(w, tileW, overlap)
	if err != nil {
		return nil, 0, 0, err
	}
	out := make([]float32, outC*oh*ow)
	div := make([]float32, oh*ow)
	feather := pyRound(scale * float64(overlap))
	for _, py := range posH {
		for _, px := range posW {
			if err := ctx.Err(); err != nil {
				return nil, 0, 0, err
			}
			y0 := max(0, min(h-overlap, py))
			x0 := max(0, min(w-overlap, px))
			th, tw := min(tileH, h-y0), min(tileW, w-x0)
			in := make([]float32, c*th*tw)
			for ch := 0; ch < c; ch++ {
				for y := 0; y < th; y++ {
					copy(in[(ch*th+y)*tw:(ch*th+y+1)*tw], s[(ch*h+y0+y)*w+x0:(ch*h+y0+y)*w+x0+tw])
				}
			}
			ps, mh, mw, err := fn(in, th, tw)
			if err != nil {
				return nil, 0, 0, err
			}
			uy, ux := pyRound(scale*float64(y0)), pyRound(scale*float64(x0))
			if uy+mh > oh || ux+mw > ow || len(ps) != outC*mh*mw {
				return nil, 0, 0, fmt.Errorf("tiling: tile output %dx%d at (%d, %d) does not fit the %dx%d result", mw, mh, ux, uy, ow, oh)
			}
			my, mx := FeatherMask(mh, feather), FeatherMask(mw, feather)
			for y := 0; y < mh; y++ {
				for x := 0; x < mw; x++ {
					m := my[y].Apply(1)
					m = mx[x].Apply(m)
					div[(uy+y)*ow+ux+x] += m
					for ch := 0; ch < outC; ch++ {
						o := (ch*oh+uy+y)*ow + ux + x
						out[o] += ps[(ch*mh+y)*mw+x] * m
					}
				}
			}
		}
	}
	for ch := 0; ch < outC; ch++ {
		for i, d := range div {
			out[ch*oh*ow+i] /= d
		}
	}
	return out, oh, ow, nil
}

// Steps is the number of tiles Scale runs for a w×h sample (get_tiled_scale_steps).
func Steps(w, h, tileW, tileH, overlap int) int {
	count := func(n, tile int) int {
		if n <= tile || tile <= overlap {
			return 1
		}
		return (n - overlap + tile - overlap - 1) / (tile - overlap)
	}
	return count(h, tileH) * count(w, tileW)
}

// Positions are the tile starts along a dimension of size n: 0, step, 2·step, … below
// n − overlap, or just 0 when one tile covers it.
func Positions(n, tile, overlap int) ([]int, error) {
	if n <= tile {
		return []int{0}, nil
	}
	step := tile - overlap
	if step <= 0 {
		return nil, fmt.Errorf("tiling: tile size %d leaves no room after an overlap of %d", tile, overlap)
	}
	var out []int
	for p := 0; p < n-overlap; p += step {
		out = append(out, p)
	}
	return out, nil
}

// Factors are the ramp factors one mask index is multiplied by, in the order the ramp
// loop applies them (an index near both edges of a short tile gets two).
type Factors struct {
	f [2]float32
	n int
}

// Apply multiplies v by the factors in order, in float32 as torch's mul_ does.
func (m Factors) Apply(v float32) float32 {
	for i := 0; i < m.n; i++ {
		v *= m.f[i]
	}
	return v
}

// FeatherMask is the edge ramp along one dimension of length n: for t < feather the
// indices t and n−1−t are scaled by (t+1)/feather; nothing when feather ≥ n.
func FeatherMask(n, feather int) []Factors {
	m := make([]Factors, n)
	if feather >= n {
		return m
	}
	for t := 0; t < feather; t++ {
		a := float32(float64(t+1) / float64(feather))
		for _, i := range []int{t, n - 1 - t} {
			m[i].f[m[i].n] = a
			m[i].n++
		}
	}
	return m
}

// pyRound is Python's round(): halves to even.
func pyRound(x float64) int { return int(math.RoundToEven(x)) }

package sd

import (
	"context"
	"errors"
	"fmt"

	"github.com/forgeflow/forgeflow/diffusion/vae"
	"github.com/forgeflow/forgeflow/gpu"
)

// Tiled VAE decode and encode, re-derived from ComfyUI's comfy/utils.py
// tiled_scale_multidim and comfy/sd.py VAE.decode_tiled_/encode_tiled_: the input is
// cut into overlapping tiles, each tile runs through the network alone, and the
// outputs are blended with a mask that ramps linearly over the overlap at every tile
// edge, normalised by the summed masks. Three passes with differently shaped tiles are
// averaged so that no seam lies on the same line in all of them.

// tileFunc maps one tile (C, h, w) to its output (outC, oh, ow).
type tileFunc func(in []float32, h, w int) (out []float32, oh, ow int, err error)

// tiledScale runs fn over tiles of one sample s (c, h, w), tiles tileH×tileW with
// overlap, and blends the outputs into (outC, round(scale·h), round(scale·w)).
func tiledScale(ctx context.Context, s []float32, c, h, w, tileH, tileW, overlap int, scale float64, outC int, fn tileFunc) ([]float32, int, int, error) {
	oh, ow := pyRound(scale*float64(h)), pyRound(scale*float64(w))
	if h <= tileH && w <= tileW {
		out, gh, gw, err := fn(s, h, w)
		if err != nil {
			return nil, 0, 0, err
		}
		if gh != oh || gw != ow {
			return nil, 0, 0, fmt.Errorf("sd: a %dx%d tile gave %dx%d, want %dx%d", w, h, gw, gh, ow, oh)
		}
		return out, oh, ow, nil
	}
	posH, err := tilePositions(h, tileH, overlap)
	if err != nil {
		return nil, 0, 0, err
	}
	posW, err := tilePositions(w, tileW, overlap)
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
				return nil, 0, 0, fmt.Errorf("sd: tile output %dx%d at (%d, %d) does not fit the %dx%d result", mw, mh, ux, uy, ow, oh)
			}
			my, mx := featherMask(mh, feather), featherMask(mw, feather)
			for y := 0; y < mh; y++ {
				for x := 0; x < mw; x++ {
					m := my[y].apply(1)
					m = mx[x].apply(m)
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

// tilePositions are the tile starts along a dimension of size n: 0, step, 2·step, …
// below n − overlap, or just 0 when one tile covers it.
func tilePositions(n, tile, overlap int) ([]int, error) {
	if n <= tile {
		return []int{0}, nil
	}
	step := tile - overlap
	if step <= 0 {
		return nil, fmt.Errorf("sd: tile size %d leaves no room after an overlap of %d", tile, overlap)
	}
	var out []int
	for p := 0; p < n-overlap; p += step {
		out = append(out, p)
	}
	return out, nil
}

// maskFactors are the ramp factors one mask index is multiplied by, in the order the
// ramp loop applies them (an index near both edges of a short tile gets two).
type maskFactors struct {
	f [2]float32
	n int
}

func (m maskFactors) apply(v float32) float32 {
	for i := 0; i < m.n; i++ {
		v *= m.f[i]
	}
	return v
}

// featherMask is the edge ramp along one dimension of length n: for t < feather the
// indices t and n−1−t are scaled by (t+1)/feather; nothing when feather ≥ n.
func featherMask(n, feather int) []maskFactors {
	m := make([]maskFactors, n)
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

// DecodeTiled decodes latents tile by tile (ComfyUI's decode_tiled_): tiles of
// tileX×tileY latent cells overlapping by overlap cells, averaged over three passes
// with (tileY·2, tileX/2), (tileY/2, tileX·2) and (tileY, tileX) tiles.
func (v *VAE) DecodeTiled(ctx context.Context, latent *gpu.Tensor, tileX, tileY, overlap int) (*vae.Image, error) {
	n, c, h, w, err := v.checkLatent(latent)
	if err != nil {
		return nil, err
	}
	if tileX <= 1 || tileY <= 1 || overlap < 0 {
		return nil, fmt.Errorf("sd: tiled decode needs tiles of at least 2 cells and a non-negative overlap (got %dx%d, overlap %d)", tileX, tileY, overlap)
	}
	vals, err := latent.Float32()
	if err != nil {
		return nil, err
	}
	f := v.downscale()
	fn := func(in []float32, th, tw int) ([]float32, int, int, error) {
		return v.decodeRaw(in, c, th, tw)
	}
	var img *vae.Image
	per := c * h * w
	for b := 0; b < n; b++ {
		s := vals[b*per : (b+1)*per]
		var sum []float32
		var oh, ow int
		for _, t := range [][2]int{{tileY * 2, tileX / 2}, {tileY / 2, tileX * 2}, {tileY, tileX}} {
			out, gh, gw, err := tiledScale(ctx, s, c, h, w, t[0], t[1], overlap, float64(f), 3, fn)
			if err != nil {
				return nil, err
			}
			if sum == nil {
				sum, oh, ow = out, gh, gw
				continue
			}
			for i := range sum {
				sum[i] += out[i]
			}
		}
		for i := range sum {
			sum[i] /= 3
		}
		if img == nil {
			img = &vae.Image{Batch: n, Height: oh, Width: ow, Channels: 3, Pix: make([]float32, n*oh*ow*3)}
		}
		toImage(sum, img, b)
	}
	return img, nil
}

// EncodeTiled encodes images tile by tile (ComfyUI's encode_tiled_): tiles of
// tileX×tileY pixels overlapping by overlap pixels, averaged over passes with
// (tileY, tileX), (tileY/2, tileX·2) and (tileY·2, tileX/2) tiles.
func (v *VAE) EncodeTiled(ctx context.Context, img *vae.Image, tileX, tileY, overlap int) (*gpu.Tensor, error) {
	px, h, w, err := v.encodeInput(img)
	if err != nil {
		return nil, err
	}
	if tileX <= 1 || tileY <= 1 || overlap < 0 {
		return nil, fmt.Errorf("sd: tiled encode needs tiles of at least 2 pixels and a non-negative overlap (got %dx%d, overlap %d)", tileX, tileY, overlap)
	}
	f := v.downscale()
	lc := v.latentChannels()
	fn := func(in []float32, th, tw int) ([]float32, int, int, error) {
		z, c, zh, zw, err := v.encodeRaw(in, th, tw)
		if err != nil {
			return nil, 0, 0, err
		}
		if c != lc {
			return nil, 0, 0, errors.New("sd: VAE encoder gave an unexpected channel count")
		}
		return z, zh, zw, nil
	}
	per := 3 * h * w
	var out []float32
	var oh, ow int
	for b := 0; b < img.Batch; b++ {
		s := px[b*per : (b+1)*per]
		var sum []float32
		for _, t := range [][2]int{{tileY, tileX}, {tileY / 2, tileX * 2}, {tileY * 2, tileX / 2}} {
			z, gh, gw, err := tiledScale(ctx, s, 3, h, w, t[0], t[1], overlap, 1/float64(f), lc, fn)
			if err != nil {
				return nil, err
			}
			if sum == nil {
				sum, oh, ow = z, gh, gw
				continue
			}
			for i := range sum {
				sum[i] += z[i]
			}
		}
		for i := range sum {
			sum[i] /= 3
		}
		out = append(out, sum...)
	}
	return v.Runtime.FromFloat32(out, img.Batch, lc, oh, ow)
}

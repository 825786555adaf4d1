package sd

import (
	"context"
	"errors"
	"fmt"

	"github.com/forgeflow/forgeflow/diffusion/tiling"
	"github.com/forgeflow/forgeflow/diffusion/vae"
	"github.com/forgeflow/forgeflow/gpu"
)

// Tiled VAE decode and encode, re-derived from ComfyUI's comfy/sd.py
// VAE.decode_tiled_/encode_tiled_: the input is cut into overlapping tiles, each tile
// runs through the network alone, and the outputs are blended as comfy/utils.py
// tiled_scale does (diffusion/tiling). Three passes with differently shaped tiles are
// averaged so that no seam lies on the same line in all of them.

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
			out, gh, gw, err := tiling.Scale(ctx, s, c, h, w, t[0], t[1], overlap, float64(f), 3, fn)
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
			z, gh, gw, err := tiling.Scale(ctx, s, 3, h, w, t[0], t[1], overlap, 1/float64(f), lc, fn)
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

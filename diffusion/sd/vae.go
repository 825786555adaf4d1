package sd

import (
	"context"
	"errors"
	"fmt"

	"github.com/forgeflow/forgeflow/diffusion/vae"
	"github.com/forgeflow/forgeflow/gpu"
)

// VAE encode and decode as ComfyUI's comfy/sd.py VAE does it for the KL autoencoder of
// SD1.x/SD2.x/SDXL: images are NHWC in [0, 1], latents NCHW and unscaled (the latent
// format is applied by the diffusion model, not here).

// Decode decodes latents (N, C, h, w) into images, one sample at a time (ComfyUI
// batches by free memory; each sample's result is the same).
func (v *VAE) Decode(ctx context.Context, latent *gpu.Tensor) (*vae.Image, error) {
	n, c, h, w, err := v.checkLatent(latent)
	if err != nil {
		return nil, err
	}
	vals, err := latent.Float32()
	if err != nil {
		return nil, err
	}
	var out *vae.Image
	per := c * h * w
	for b := 0; b < n; b++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		raw, oh, ow, err := v.decodeRaw(vals[b*per:(b+1)*per], c, h, w)
		if err != nil {
			return nil, err
		}
		if out == nil {
			out = &vae.Image{Batch: n, Height: oh, Width: ow, Channels: 3, Pix: make([]float32, n*oh*ow*3)}
		}
		toImage(raw, out, b)
	}
	return out, nil
}

// checkLatent validates a latent for this VAE.
func (v *VAE) checkLatent(latent *gpu.Tensor) (n, c, h, w int, err error) {
	if v == nil || (v.Model == nil && !v.PixelSpace) {
		return 0, 0, 0, 0, errors.New("sd: VAE has no model")
	}
	if latent == nil || latent.Rank() != 4 {
		return 0, 0, 0, 0, fmt.Errorf("sd: latent %v is not (N, C, H, W)", latent)
	}
	n, c, h, w = latent.Dim(0), latent.Dim(1), latent.Dim(2), latent.Dim(3)
	if want := v.latentChannels(); c != want {
		return 0, 0, 0, 0, fmt.Errorf("sd: latent has %d channels, this VAE decodes %d", c, want)
	}
	if n == 0 || h == 0 || w == 0 {
		return 0, 0, 0, 0, fmt.Errorf("sd: empty latent %v", latent.Shape())
	}
	return n, c, h, w, nil
}

// decodeRaw runs the decoder on one latent (C, h, w): (3, H, W) unclamped.
func (v *VAE) decodeRaw(z []float32, c, h, w int) ([]float32, int, int, error) {
	if v.PixelSpace {
		return z, h, w, nil
	}
	rt := v.Runtime
	t, err := rt.FromFloat32(z, 1, c, h, w)
	if err != nil {
		return nil, 0, 0, err
	}
	defer t.Release()
	out, err := v.Model.Decode(rt, t)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("sd: VAE decode: %w", err)
	}
	defer out.Release()
	vals, err := out.Float32()
	if err != nil {
		return nil, 0, 0, err
	}
	return vals, out.Dim(2), out.Dim(3), nil
}

// toImage writes clamp((x+1)/2, 0, 1) of a (3, H, W) decoder output into sample b of
// img (VAE.process_output, moved to NHWC).
func toImage(raw []float32, img *vae.Image, b int) {
	h, w := img.Height, img.Width
	for ch := 0; ch < 3; ch++ {
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				p := (raw[(ch*h+y)*w+x] + 1) / 2
				img.Pix[((b*h+y)*w+x)*3+ch] = clamp01(p)
			}
		}
	}
}

func clamp01(p float32) float32 {
	if p < 0 {
		return 0
	}
	if p > 1 {
		return 1
	}
	return p // NaN stays NaN, as torch.clamp leaves it
}

// Encode encodes images into latents (N, C, H/8, W/8): the image is first cropped to a
// multiple of the VAE's downscale factor, centred (vae_encode_crop_pixels), only its
// first three channels are used, and the result is the posterior mean.
func (v *VAE) Encode(ctx context.Context, img *vae.Image) (*gpu.Tensor, error) {
	px, h, w, err := v.encodeInput(img)
	if err != nil {
		return nil, err
	}
	var out []float32
	var lc, lh, lw int
	per := 3 * h * w
	for b := 0; b < img.Batch; b++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		z, c, zh, zw, err := v.encodeRaw(px[b*per:(b+1)*per], h, w)
		if err != nil {
			return nil, err
		}
		lc, lh, lw = c, zh, zw
		out = append(out, z...)
	}
	return v.Runtime.FromFloat32(out, img.Batch, lc, lh, lw)
}

// encodeInput checks and crops img and returns its first three channels as NCHW
// values in [−1, 1].
func (v *VAE) encodeInput(img *vae.Image) ([]float32, int, int, error) {
	if v == nil || (v.Model == nil && !v.PixelSpace) {
		return nil, 0, 0, errors.New("sd: VAE has no model")
	}
	if img == nil || img.Batch <= 0 || img.Channels < 3 || len(img.Pix) != img.Batch*img.Height*img.Width*img.Channels {
		return nil, 0, 0, errors.New("sd: VAE encode needs an image with at least 3 channels")
	}
	if !v.PixelSpace && len(v.Model.Encoder.Down) == 0 {
		return nil, 0, 0, errors.New("sd: this VAE has no encoder (a decoder-only file)")
	}
	f := v.downscale()
	h, w := img.Height/f*f, img.Width/f*f
	if h == 0 || w == 0 {
		return nil, 0, 0, fmt.Errorf("sd: a %dx%d image is smaller than the VAE's %d-pixel cell", img.Width, img.Height, f)
	}
	y0, x0 := (img.Height%f)/2, (img.Width%f)/2
	c := img.Channels
	out := make([]float32, img.Batch*3*h*w)
	for b := 0; b < img.Batch; b++ {
		for ch := 0; ch < 3; ch++ {
			for y := 0; y < h; y++ {
				for x := 0; x < w; x++ {
					out[((b*3+ch)*h+y)*w+x] = img.Pix[((b*img.Height+y+y0)*img.Width+x+x0)*c+ch]*2 - 1
				}
			}
		}
	}
	return out, h, w, nil
}

// encodeRaw encodes one image (3, h, w) in [−1, 1]: the posterior mean (C, h/f, w/f).
func (v *VAE) encodeRaw(px []float32, h, w int) ([]float32, int, int, int, error) {
	if v.PixelSpace {
		return px, 3, h, w, nil
	}
	rt := v.Runtime
	t, err := rt.FromFloat32(px, 1, 3, h, w)
	if err != nil {
		return nil, 0, 0, 0, err
	}
	defer t.Release()
	z, err := v.Model.Encode(rt, t)
	if err != nil {
		return nil, 0, 0, 0, fmt.Errorf("sd: VAE encode: %w", err)
	}
	defer z.Release()
	vals, err := z.Float32()
	if err != nil {
		return nil, 0, 0, 0, err
	}
	return vals, z.Dim(1), z.Dim(2), z.Dim(3), nil
}

// Downscale is the spatial factor between image and latent (8 for the SD VAEs, 1 for
// pixel space): ComfyUI's spacial_compression_decode.
func (v *VAE) Downscale() int { return v.downscale() }

// downscale is the spatial factor between image and latent.
func (v *VAE) downscale() int {
	if v.PixelSpace {
		return 1
	}
	return v.Model.Downscale()
}

// latentChannels is the number of latent channels.
func (v *VAE) latentChannels() int {
	if v.PixelSpace {
		return 3
	}
	return v.Model.LatentChannels()
}

// NewPixelSpaceVAE returns VAELoader's "pixel_space" VAE (comfy/pixel_space_convert.py):
// encode and decode are the identity around the usual 2x−1 / (x+1)/2 scaling.
func NewPixelSpaceVAE(rt *gpu.Runtime) *VAE {
	return &VAE{Runtime: rt, PixelSpace: true, Name: "pixel_space"}
}

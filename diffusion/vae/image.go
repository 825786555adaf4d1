package vae

import (
	"fmt"

	"github.com/forgeflow/forgeflow/gpu"
)

// Image is ComfyUI's IMAGE layout: (Batch, Height, Width, Channels) float32 in [0, 1].
type Image struct {
	Batch, Height, Width, Channels int
	Pix                            []float32
}

// ToImage turns decoder output (N, 3, H, W) into an image: clamp((x+1)/2, 0, 1), NHWC,
// as ComfyUI's VAE.decode returns it.
func ToImage(rt *gpu.Runtime, x *gpu.Tensor) (*Image, error) {
	if x.Rank() != 4 {
		return nil, fmt.Errorf("vae: decoder output %s is not (N, C, H, W)", x)
	}
	v, err := x.Float32()
	if err != nil {
		return nil, err
	}
	n, c, h, w := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
	out := &Image{Batch: n, Height: h, Width: w, Channels: c, Pix: make([]float32, len(v))}
	for b := 0; b < n; b++ {
		for ch := 0; ch < c; ch++ {
			for y := 0; y < h; y++ {
				for xx := 0; xx < w; xx++ {
					p := (v[((b*c+ch)*h+y)*w+xx] + 1) / 2
					out.Pix[((b*h+y)*w+xx)*c+ch] = min(max(p, 0), 1)
				}
			}
		}
	}
	return out, nil
}

// FromImage turns an image into encoder input: its first three channels, NCHW, 2x−1.
func FromImage(rt *gpu.Runtime, img *Image) (*gpu.Tensor, error) {
	if img.Channels < 3 || len(img.Pix) != img.Batch*img.Height*img.Width*img.Channels {
		return nil, fmt.Errorf("vae: image %dx%dx%dx%d with %d values", img.Batch, img.Height, img.Width, img.Channels, len(img.Pix))
	}
	n, h, w, c := img.Batch, img.Height, img.Width, img.Channels
	out := make([]float32, n*3*h*w)
	for b := 0; b < n; b++ {
		for ch := 0; ch < 3; ch++ {
			for y := 0; y < h; y++ {
				for x := 0; x < w; x++ {
					out[((b*3+ch)*h+y)*w+x] = img.Pix[((b*h+y)*w+x)*c+ch]*2 - 1
				}
			}
		}
	}
	return rt.FromFloat32(out, n, 3, h, w)
}

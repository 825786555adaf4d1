package flux

import (
	"fmt"

	"github.com/forgeflow/forgeflow/gpu"
)

// The Flux latent format (comfy/latent_formats.py Flux): the model sees
// (z − LatentShift)·LatentScale of a VAE latent z.
const (
	LatentScale = 0.3611
	LatentShift = 0.1159
)

// ConcatChannels is how many channels a model's img_in takes beyond its output: 0 for
// text-to-image models, the image latent (and mask) for Flux Fill.
func (m *Model) ConcatChannels() int { return max(m.Config.InChannels-m.Config.OutChannels, 0) }

// FillConcat builds Inputs.Concat for a model that takes more channels than it outputs
// (model_base.Flux.concat_cond): the VAE latent image (nil: zeros), resized bilinearly
// with a centre crop to the noise's h×w, repeated to the batch and put in the model's
// latent format; then, when the model takes more than twice its output channels (Flux
// Fill), the pixel mask (nil: ones), averaged over its channels, resized to 8h×8w and
// folded 8×8 into 64 channels (channel 8·dy + dx holds pixel (8y+dy, 8x+dx)). It
// returns nil for models without extra channels.
func (m *Model) FillConcat(rt *gpu.Runtime, b, h, w int, image, mask *gpu.Tensor) (*gpu.Tensor, error) {
	extra := m.ConcatChannels()
	if extra == 0 {
		return nil, nil
	}
	out := m.Config.OutChannels
	var a arena
	defer a.release()
	batch := func(name string, t *gpu.Tensor) (*gpu.Tensor, error) {
		if t.Dim(0) == b {
			return t, nil
		}
		if t.Dim(0) != 1 {
			return nil, fmt.Errorf("flux: %s batch %d does not fit the latent batch %d", name, t.Dim(0), b)
		}
		reps := make([]*gpu.Tensor, b)
		for i := range reps {
			reps[i] = t
		}
		return a.add(gpu.Concat(rt, 0, reps...))
	}
	var err error
	if image == nil {
		if image, err = a.add(rt.Zeros(gpu.F32, b, out, h, w)); err != nil {
			return nil, err
		}
	}
	if image.Rank() != 4 || image.Dim(1) != out {
		return nil, fmt.Errorf("flux: concat latent image %v: want (B, %d, h, w)", image.Shape(), out)
	}
	if image, err = a.add(gpu.Upscale(rt, image, gpu.UpscaleParams{Width: w, Height: h, Method: "bilinear", Crop: "center"})); err != nil {
		return nil, err
	}
	if image, err = batch("concat latent image", image); err != nil {
		return nil, err
	}
	shift, err := a.add(rt.FromFloat32([]float32{-LatentShift}, 1))
	if err != nil {
		return nil, err
	}
	scale, err := a.add(rt.FromFloat32([]float32{LatentScale}, 1))
	if err != nil {
		return nil, err
	}
	if image, err = a.add(gpu.Add(rt, image, shift)); err != nil {
		return nil, err
	}
	if image, err = a.add(gpu.Mul(rt, image, scale)); err != nil {
		return nil, err
	}
	if extra <= out {
		if extra != out {
			return nil, fmt.Errorf("flux: img_in takes %d extra channels: neither an image latent (%d) nor one with a mask (%d)", extra, out, out+64)
		}
		return gpu.Contiguous(rt, image)
	}
	if extra != out+64 {
		return nil, fmt.Errorf("flux: img_in takes %d extra channels: neither an image latent (%d) nor one with a mask (%d)", extra, out, out+64)
	}
	folded, err := a.add(foldMask(rt, mask, b, h, w))
	if err != nil {
		return nil, err
	}
	if folded, err = batch("mask", folded); err != nil {
		return nil, err
	}
	return gpu.Concat(rt, 1, image, folded)
}

// foldMask averages mask (N, C, H', W') over its channels, resizes it to 8h×8w and
// folds each 8×8 cell into 64 channels: (N, 64, h, w). A nil mask is all ones.
func foldMask(rt *gpu.Runtime, mask *gpu.Tensor, b, h, w int) (*gpu.Tensor, error) {
	if mask == nil {
		ones := make([]float32, b*64*h*w)
		for i := range ones {
			ones[i] = 1
		}
		return rt.FromFloat32(ones, b, 64, h, w)
	}
	if mask.Rank() != 4 || mask.Dim(1) == 0 {
		return nil, fmt.Errorf("flux: mask %v: want (B, C, H, W)", mask.Shape())
	}
	mv, err := mask.Float32()
	if err != nil {
		return nil, err
	}
	n, c, mh, mw := mask.Dim(0), mask.Dim(1), mask.Dim(2), mask.Dim(3)
	mean := make([]float32, n*mh*mw)
	for i := 0; i < n; i++ {
		for p := 0; p < mh*mw; p++ {
			var s float32
			for ch := 0; ch < c; ch++ {
				s += mv[(i*c+ch)*mh*mw+p]
			}
			mean[i*mh*mw+p] = s / float32(c)
		}
	}
	mt, err := rt.FromFloat32(mean, n, 1, mh, mw)
	if err != nil {
		return nil, err
	}
	defer mt.Release()
	up, err := gpu.Upscale(rt, mt, gpu.UpscaleParams{Width: 8 * w, Height: 8 * h, Method: "bilinear", Crop: "center"})
	if err != nil {
		return nil, err
	}
	defer up.Release()
	uv, err := up.Float32()
	if err != nil {
		return nil, err
	}
	out := make([]float32, n*64*h*w)
	for i := 0; i < n; i++ {
		for y := 0; y < h; y++ {
			for dy := 0; dy < 8; dy++ {
				for x := 0; x < w; x++ {
					for dx := 0; dx < 8; dx++ {
						out[((i*64+dy*8+dx)*h+y)*w+x] = uv[(i*8*h+8*y+dy)*8*w+8*x+dx]
					}
				}
			}
		}
	}
	return rt.FromFloat32(out, n, 64, h, w)
}

package upscale

import (
	"fmt"

	"github.com/forgeflow/forgeflow/gpu"
)

// The layers the three networks share, on gpu ops.

// convFLOPs counts the multiply-adds ×2 of a conv of weight w on an h×wd map.
func convFLOPs(w *gpu.Tensor, h, wd int) float64 {
	return 2 * float64(w.Dim(0)*w.Dim(1)*w.Dim(2)*w.Dim(3)) * float64(h*wd)
}

// then applies f to x and releases x, an intermediate of the caller's. With err set
// (the call that made x failed, or an earlier step did) it releases x if there is one
// and passes err on, so a chain of steps checks once at its end.
func then(x *gpu.Tensor, err error, f func(*gpu.Tensor) (*gpu.Tensor, error)) (*gpu.Tensor, error) {
	if err != nil {
		if x != nil {
			x.Release()
		}
		return nil, err
	}
	y, err := f(x)
	x.Release()
	return y, err
}

// pixelShuffle is torch.nn.PixelShuffle(r): (N, C·r², H, W) → (N, C, H·r, W·r) with
// out[n, c, h·r+i, w·r+j] = in[n, c·r²+i·r+j, h, w].
func pixelShuffle(rt *gpu.Runtime, x *gpu.Tensor, r int) (*gpu.Tensor, error) {
	n, c, h, w := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
	if c%(r*r) != 0 {
		return nil, fmt.Errorf("pixel shuffle by %d of %d channels", r, c)
	}
	if r == 1 {
		return gpu.Contiguous(rt, x)
	}
	v, err := gpu.Reshape(rt, x, n, c/(r*r), r, r, h, w)
	if err != nil {
		return nil, err
	}
	p, err := gpu.Permute(v, 0, 1, 4, 2, 5, 3)
	v.Release()
	if err != nil {
		return nil, err
	}
	return then(p, nil, func(p *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Reshape(rt, p, n, c/(r*r), h*r, w*r) })
}

// pixelUnshuffle is torch.nn.functional.pixel_unshuffle(x, r), the inverse:
// (N, C, H·r, W·r) → (N, C·r², H, W).
func pixelUnshuffle(rt *gpu.Runtime, x *gpu.Tensor, r int) (*gpu.Tensor, error) {
	n, c, h, w := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
	if h%r != 0 || w%r != 0 {
		return nil, fmt.Errorf("pixel unshuffle by %d of %dx%d", r, w, h)
	}
	v, err := gpu.Reshape(rt, x, n, c, h/r, r, w/r, r)
	if err != nil {
		return nil, err
	}
	p, err := gpu.Permute(v, 0, 1, 3, 5, 2, 4)
	v.Release()
	if err != nil {
		return nil, err
	}
	return then(p, nil, func(p *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Reshape(rt, p, n, c*r*r, h/r, w/r) })
}

// nearest is F.interpolate(x, scale_factor=s, mode="nearest") for an integer s.
func nearest(rt *gpu.Runtime, x *gpu.Tensor, s int) (*gpu.Tensor, error) {
	if s == 1 {
		return gpu.Contiguous(rt, x)
	}
	return gpu.Upscale(rt, x, gpu.UpscaleParams{Width: x.Dim(3) * s, Height: x.Dim(2) * s, Method: "nearest", Crop: "disabled"})
}

// scalar returns a one-element F32 tensor of v, for broadcast products.
func scalar(rt *gpu.Runtime, v float32) (*gpu.Tensor, error) { return rt.FromFloat32([]float32{v}, 1) }

// mapBytes is the size of an F32 map of c channels, h×w.
func mapBytes(c, h, w int) int64 { return 4 * int64(c) * int64(h) * int64(w) }

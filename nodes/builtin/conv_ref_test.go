package builtin

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"
)

// A direct transcription of ComfyUI's 2-D kernels and convolution, kept as the reference
// the separable implementation is checked against.

// gaussianKernel is nodes_post_processing.py gaussian_kernel in torch's float32
// arithmetic: linspace with a float32 step filled from both ends (ATen
// RangeFactoriesKernel.cpp), d = sqrt(x² + y²) squared again, the σ-term cast to float32.
func gaussianKernel(size int, sigma float64) []float32 {
	lin := make([]float32, size)
	if size == 1 {
		lin[0] = -1
	} else {
		step := float32(2) / float32(size-1)
		half := size / 2
		for i := range lin {
			if i < half {
				lin[i] = -1 + step*float32(i)
			} else {
				lin[i] = 1 - step*float32(size-1-i)
			}
		}
	}
	den := float32(2.0 * sigma * sigma)
	k := make([]float32, size*size)
	var sum float32
	for i, x := range lin {
		for j, y := range lin {
			d := float32(math.Sqrt(float64(x*x + y*y)))
			g := float32(math.Exp(float64(-(d * d) / den)))
			k[i*size+j] = g
			sum += g
		}
	}
	for i := range k {
		k[i] /= sum
	}
	return k
}

// sharpenKernel is Sharpen.execute's kernel: the gaussian times -(10·alpha), centre
// raised so that the kernel sums to 1.
func sharpenKernel(r int, sigma, alpha float64) []float32 {
	size := 2*r + 1
	k := gaussianKernel(size, sigma)
	scale := float32(-(alpha * 10))
	var sum float32
	for i := range k {
		k[i] *= scale
		sum += k[i]
	}
	c := r*size + r
	k[c] = k[c] - sum + 1
	return k
}

// convDirect is F.pad(reflect) + F.conv2d with a size×size kernel, per channel.
func convDirect(im *Image, k []float32, r int, post func(float32) float32) *Image {
	out, _ := NewImage(im.Batch, im.Height, im.Width, im.Channels)
	size := 2*r + 1
	H, W, C := im.Height, im.Width, im.Channels
	for b := 0; b < im.Batch; b++ {
		src, dst := im.Frame(b), out.Frame(b)
		for y := 0; y < H; y++ {
			for x := 0; x < W; x++ {
				for c := 0; c < C; c++ {
					var acc float32
					for i := 0; i < size; i++ {
						for j := 0; j < size; j++ {
							acc += k[i*size+j] * src[(reflectIndex(y+i-r, H)*W+reflectIndex(x+j-r, W))*C+c]
						}
					}
					if post != nil {
						acc = post(acc)
					}
					dst[(y*W+x)*C+c] = acc
				}
			}
		}
	}
	return out
}

func TestSeparableMatchesDirect(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	im, _ := NewImage(2, 9, 11, 3)
	for i := range im.Pix {
		im.Pix[i] = rng.Float32()
	}
	for _, tc := range []struct {
		r            int
		sigma, alpha float64
	}{{1, 1, 1}, {2, 0.3, 0.5}, {4, 10, 2}, {8, 1.7, 5}} {
		blur := mustRun(t, "ImageBlur", map[string]any{"image": im, "blur_radius": int64(tc.r), "sigma": tc.sigma}).Outputs[0].(*Image)
		checkPix(t, blur.Pix, convDirect(im, gaussianKernel(2*tc.r+1, tc.sigma), tc.r, nil).Pix, 2e-6)
		sharp := mustRun(t, "ImageSharpen", map[string]any{"image": im, "sharpen_radius": int64(tc.r), "sigma": tc.sigma, "alpha": tc.alpha}).Outputs[0].(*Image)
		checkPix(t, sharp.Pix, convDirect(im, sharpenKernel(tc.r, tc.sigma, tc.alpha), tc.r, clamp01).Pix, 2e-5)
	}
	_, err := blurReflect(context.Background(), im, gaussian1D(19, 1), 9)
	wantErr(t, err, "reflect padding")
}

package resample

import "math"

// Pillow's 8-bit resampler (src/libImaging/Resample.c: precompute_coeffs,
// normalize_coeffs_8bpc, ImagingResampleHorizontal_8bpc / Vertical_8bpc), which
// comfy.utils.lanczos reaches through Image.resize(..., LANCZOS) on uint8 RGB images:
// per axis, double-precision filter weights normalised to sum 1, quantised to 22-bit
// fixed point (rounded half away from zero), accumulated in an int32 that starts at one
// half and shifted down with clipping to 0..255; horizontal pass first, 8-bit in between.

const precisionBits = 32 - 8 - 2

// lanczosSupport is the half-width of Pillow's LANCZOS filter (a = 3).
const lanczosSupport = 3.0

func sinc(x float64) float64 {
	if x == 0 {
		return 1
	}
	x *= math.Pi
	return math.Sin(x) / x
}

func lanczosFilter(x float64) float64 {
	if -lanczosSupport <= x && x < lanczosSupport {
		return sinc(x) * sinc(x/lanczosSupport)
	}
	return 0
}

// fixedTaps holds per output sample the first input index, the tap count and ksize
// fixed-point weights.
type fixedTaps struct {
	ksize int
	start []int
	count []int
	k     []int32
}

func pillowTaps(in, out int) fixedTaps {
	scale := float64(in) / float64(out)
	filterscale := max(scale, 1.0)
	support := lanczosSupport * filterscale
	ksize := int(math.Ceil(support))*2 + 1
	t := fixedTaps{ksize: ksize, start: make([]int, out), count: make([]int, out), k: make([]int32, out*ksize)}
	w := make([]float64, ksize)
	ss := 1.0 / filterscale
	for xx := 0; xx < out; xx++ {
		center := (float64(xx) + 0.5) * scale
		xmin := max(int(center-support+0.5), 0) // C (int) truncates; the value is > -1 here
		xmax := min(int(center+support+0.5), in) - xmin
		var ww float64
		for x := 0; x < xmax; x++ {
			w[x] = lanczosFilter((float64(x+xmin) - center + 0.5) * ss)
			ww += w[x]
		}
		for x := 0; x < xmax; x++ {
			v := w[x]
			if ww != 0 {
				v /= ww
			}
			if v < 0 {
				t.k[xx*ksize+x] = int32(-0.5 + v*(1<<precisionBits))
			} else {
				t.k[xx*ksize+x] = int32(0.5 + v*(1<<precisionBits))
			}
		}
		t.start[xx], t.count[xx] = xmin, xmax
	}
	return t
}

// clip8 is Pillow's clip8: the accumulator shifted down (arithmetic) and clamped to a byte.
func clip8(acc int32) uint8 {
	return uint8(min(max(acc>>precisionBits, 0), 255))
}

// pillowResize resizes one interleaved 8-bit image (w×h, ch bands) to outW×outH.
func pillowResize(src []uint8, w, h, ch, outW, outH int) []uint8 {
	if w == outW && h == outH {
		return append([]uint8(nil), src...) // Image.resize returns a copy at equal size
	}
	cur, cw := src, w
	if outW != w {
		t := pillowTaps(w, outW)
		tmp := make([]uint8, outW*h*ch)
		for y := 0; y < h; y++ {
			for x := 0; x < outW; x++ {
				k := t.k[x*t.ksize:]
				for b := 0; b < ch; b++ {
					acc := int32(1 << (precisionBits - 1))
					for i := 0; i < t.count[x]; i++ {
						acc += int32(cur[(y*cw+t.start[x]+i)*ch+b]) * k[i]
					}
					tmp[(y*outW+x)*ch+b] = clip8(acc)
				}
			}
		}
		cur, cw = tmp, outW
	}
	if outH != h {
		t := pillowTaps(h, outH)
		tmp := make([]uint8, cw*outH*ch)
		for y := 0; y < outH; y++ {
			k := t.k[y*t.ksize:]
			for x := 0; x < cw; x++ {
				for b := 0; b < ch; b++ {
					acc := int32(1 << (precisionBits - 1))
					for i := 0; i < t.count[y]; i++ {
						acc += int32(cur[((t.start[y]+i)*cw+x)*ch+b]) * k[i]
					}
					tmp[(y*cw+x)*ch+b] = clip8(acc)
				}
			}
		}
		cur = tmp
	}
	return cur
}

// lanczos is comfy.utils.lanczos for (n, 3, h, w) float images: each image becomes uint8
// RGB via clip(255·x, 0, 255) truncated (numpy astype), is resized by Pillow's LANCZOS,
// and comes back as value/255 in float32.
func lanczos(src []float32, n, w, h, outW, outH int) []float32 {
	const ch = 3
	out := make([]float32, n*ch*outH*outW)
	forEachPlane(n, func(b int) {
		img := make([]uint8, w*h*ch)
		plane := src[b*ch*h*w:]
		for c := 0; c < ch; c++ {
			for i := 0; i < h*w; i++ {
				v := float32(255 * plane[c*h*w+i]) // float32 array times a Python float stays float32
				if !(v > 0) {                      // NaN and negatives → 0
					v = 0
				}
				img[i*ch+c] = uint8(min(v, 255))
			}
		}
		res := pillowResize(img, w, h, ch, outW, outH)
		o := out[b*ch*outH*outW:]
		for c := 0; c < ch; c++ {
			for i := 0; i < outH*outW; i++ {
				o[c*outH*outW+i] = float32(res[i*ch+c]) / 255
			}
		}
	})
	return out
}

package clipvision

import (
	"fmt"
	"math"
)

// Preprocess is ComfyUI's clip_preprocess on images (B, H, W, C) of values in 0…1 (a
// ComfyUI IMAGE; channels past the third are dropped): unless the image already is
// size×size, it is resized with PyTorch's antialiased bicubic interpolation — with crop
// so that its shorter side is size (Python's round of size/min(H, W) times each side)
// and then centre-cropped, without crop straight to size×size — then quantised to 8-bit
// levels (round half to even) and normalised with mean and std. It returns
// (B, 3, size, size) pixels.
func Preprocess(img []float32, b, h, w, c, size int, mean, std [3]float32, crop bool) ([]float32, error) {
	if c < 3 {
		return nil, fmt.Errorf("clipvision: image has %d channels, want 3 or more", c)
	}
	if len(img) != b*h*w*c || h <= 0 || w <= 0 || size <= 0 {
		return nil, fmt.Errorf("clipvision: image of %d values is not (%d, %d, %d, %d)", len(img), b, h, w, c)
	}
	// movedim(-1, 1) of the first three channels.
	planes := make([]float32, b*3*h*w)
	for bi := 0; bi < b; bi++ {
		for ch := 0; ch < 3; ch++ {
			dst := planes[(bi*3+ch)*h*w:]
			for p := 0; p < h*w; p++ {
				dst[p] = img[(bi*h*w+p)*c+ch]
			}
		}
	}
	if h != size || w != size {
		sh, sw := size, size
		if crop {
			scale := float64(size) / float64(min(h, w))
			sh, sw = int(math.RoundToEven(scale*float64(h))), int(math.RoundToEven(scale*float64(w)))
		}
		resized := resizeAA(planes, b*3, h, w, sh, sw)
		top, left := (sh-size)/2, (sw-size)/2
		planes = make([]float32, b*3*size*size)
		for p := 0; p < b*3; p++ {
			for y := 0; y < size; y++ {
				copy(planes[(p*size+y)*size:][:size], resized[(p*sh+top+y)*sw+left:][:size])
			}
		}
		h, w = size, size
	}
	for p := 0; p < b*3; p++ {
		ch := p % 3
		plane := planes[p*h*w : (p+1)*h*w]
		for i, v := range plane {
			q := float32(math.RoundToEven(float64(min(max(255*v, 0), 255)))) / 255
			plane[i] = (q - mean[ch]) / std[ch]
		}
	}
	return planes, nil
}

// resizeAA resizes planes of h×w to oh×ow as torch.nn.functional.interpolate(mode=
// "bicubic", antialias=True) does: separable, width first, each output a normalised
// weighted sum of the inputs within the filter's support (Keys' cubic with a = −0.5,
// stretched by the scale when shrinking).
func resizeAA(src []float32, planes, h, w, oh, ow int) []float32 {
	tx := aaTaps(w, ow)
	ty := aaTaps(h, oh)
	mid := make([]float32, planes*h*ow)
	for p := 0; p < planes*h; p++ {
		row := src[p*w : (p+1)*w]
		out := mid[p*ow : (p+1)*ow]
		for i := range out {
			out[i] = tx.apply(i, func(j int) float32 { return row[j] })
		}
	}
	dst := make([]float32, planes*oh*ow)
	for p := 0; p < planes; p++ {
		in := mid[p*h*ow:]
		out := dst[p*oh*ow:]
		for y := 0; y < oh; y++ {
			for x := 0; x < ow; x++ {
				out[y*ow+x] = ty.apply(y, func(j int) float32 { return in[j*ow+x] })
			}
		}
	}
	return dst
}

// aaFilter is PyTorch's bicubic antialiasing filter (Keys' cubic, a = −0.5).
func aaFilter(x float32) float32 {
	const a = -0.5
	if x < 0 {
		x = -x
	}
	switch {
	case x < 1:
		return ((a+2)*x-(a+3))*x*x + 1
	case x < 2:
		return ((a*x-5*a)*x+8*a)*x - 4*a
	}
	return 0
}

// aaTapSet holds each output's first input and normalised weights.
type aaTapSet struct {
	start []int
	w     [][]float32
}

func (t aaTapSet) apply(i int, at func(int) float32) float32 {
	var acc float32
	for j, wt := range t.w[i] {
		acc += wt * at(t.start[i]+j)
	}
	return acc
}

// aaTaps computes the taps of an in→out resize (align_corners False, scale in/out).
func aaTaps(in, out int) aaTapSet {
	scale := float32(in) / float32(out)
	support, inv := float32(2), float32(1)
	if scale >= 1 {
		support, inv = 2*scale, 1/scale
	}
	t := aaTapSet{start: make([]int, out), w: make([][]float32, out)}
	for i := 0; i < out; i++ {
		center := scale * (float32(i) + 0.5)
		lo := max(int(center-support+0.5), 0)
		hi := min(int(center+support+0.5), in)
		ws := make([]float32, hi-lo)
		var total float32
		for j := range ws {
			ws[j] = aaFilter((float32(j+lo) - center + 0.5) * inv)
			total += ws[j]
		}
		if total != 0 {
			for j := range ws {
				ws[j] /= total
			}
		}
		t.start[i], t.w[i] = lo, ws
	}
	return t
}

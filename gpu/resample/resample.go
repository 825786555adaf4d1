package resample

import (
	"fmt"
	"math"
	"runtime"
	"sync"
)

// Methods lists the upscale_method values Upscale accepts, in ComfyUI's spelling.
// LatentUpscale offers nearest-exact, bilinear, area, bicubic, bislerp; ImageScale offers
// nearest-exact, bilinear, area, bicubic, lanczos. "nearest" is PyTorch's legacy rule.
var Methods = []string{"nearest-exact", "bilinear", "area", "bicubic", "bislerp", "lanczos", "nearest"}

// Crops lists the crop values Upscale accepts.
var Crops = []string{"disabled", "center"}

// UpscaleInto is Upscale writing into dst (n·c·outH·outW values) instead of a new
// slice: the plane kernels (nearest, nearest-exact, bilinear, bicubic, area, without a
// crop) write there directly, so a decoder's 2× upsampling allocates nothing but its
// index table (Planes keeps that too); the other methods are computed by Upscale and
// copied.
func UpscaleInto(dst, src []float32, n, c, h, w, outW, outH int, method, crop string) error {
	var p Planes
	ok, err := p.Prepare(dst, src, n, c, h, w, outW, outH, method, crop)
	if err != nil {
		return err
	}
	if !ok {
		res, err := Upscale(src, n, c, h, w, outW, outH, method, crop)
		if err != nil {
			return err
		}
		if len(res) != len(dst) {
			return fmt.Errorf("resample: %d output values for a %d-value destination", len(res), len(dst))
		}
		copy(dst, res)
		return nil
	}
	forEachPlane(p.Count(), func(i int) { p.Run(i, i+1) })
	return nil
}

// Planes is UpscaleInto split into its (N·C) planes, for a caller that runs them on its
// own workers: Prepare computes the method's index or weight tables once per call (not
// once per plane) into storage the Planes keeps, so a caller that reuses one Planes
// allocates nothing once the tables have reached their size.
type Planes struct {
	dst, src                []float32
	w, h, outW, outH, count int
	kern                    planeKernel
	t                       tables
}

// Prepare sets p up to compute UpscaleInto(dst, src, n, c, h, w, outW, outH, method,
// crop) plane by plane. It reports false, and no error, where the call is not computed
// per plane (bislerp, lanczos, a center crop, or arguments Upscale rejects), which
// UpscaleInto handles; an error says dst has the wrong length.
func (p *Planes) Prepare(dst, src []float32, n, c, h, w, outW, outH int, method, crop string) (bool, error) {
	kern, ok := kernels[method]
	if !ok || kern.run == nil || crop != "disabled" || n <= 0 || c <= 0 || h <= 0 || w <= 0 || outW <= 0 || outH <= 0 ||
		int64(n)*int64(c)*int64(h)*int64(w) != int64(len(src)) || int64(n)*int64(c)*int64(outH)*int64(outW) > math.MaxInt32*8 {
		return false, nil
	}
	if len(dst) != n*c*outH*outW {
		return false, fmt.Errorf("resample: destination holds %d values, (%d, %d, %d, %d) needs %d", len(dst), n, c, outH, outW, n*c*outH*outW)
	}
	p.dst, p.src, p.w, p.h, p.outW, p.outH, p.count, p.kern = dst, src, w, h, outW, outH, n*c, kern
	kern.prep(&p.t, w, h, outW, outH)
	return true, nil
}

// Count reports the number of planes.
func (p *Planes) Count() int { return p.count }

// Run computes planes [lo, hi); goroutines may run disjoint ranges at once.
func (p *Planes) Run(lo, hi int) {
	in, out := p.w*p.h, p.outW*p.outH
	for i := lo; i < hi; i++ {
		p.kern.run(&p.t, p.dst[i*out:(i+1)*out], p.src[i*in:(i+1)*in], p.w, p.h, p.outW, p.outH)
	}
}

// Release drops p's references to the caller's slices (its tables stay for reuse).
func (p *Planes) Release() { p.dst, p.src = nil, nil }

// Upscale resizes src, a contiguous float32 tensor of shape (n, c, h, w), to (n, c, outH,
// outW) the way comfy.utils.common_upscale(samples, width=outW, height=outH, method, crop)
// does. Note ComfyUI's argument order (width before height), which this signature keeps.
//
// crop "center" first removes an equal margin from both sides of the longer axis so that
// the input has the target aspect ratio (ComfyUI rounds the margin with Python's round,
// i.e. half to even). "lanczos" follows ComfyUI: every image is clipped to [0,1], turned
// into 8-bit RGB, resized by PIL's LANCZOS filter and divided by 255, so it needs c == 3.
//
// The result is a new slice; src is not modified. Bad arguments give an error, never a panic.
func Upscale(src []float32, n, c, h, w, outW, outH int, method, crop string) ([]float32, error) {
	if n < 0 || c < 0 || h < 0 || w < 0 {
		return nil, fmt.Errorf("resample: negative input shape (%d, %d, %d, %d)", n, c, h, w)
	}
	if outW <= 0 || outH <= 0 {
		return nil, fmt.Errorf("resample: output size %dx%d must be positive", outW, outH)
	}
	if int64(n)*int64(c)*int64(h)*int64(w) != int64(len(src)) {
		return nil, fmt.Errorf("resample: input has %d values, shape (%d, %d, %d, %d) needs %d",
			len(src), n, c, h, w, n*c*h*w)
	}
	if int64(n)*int64(c)*int64(outH)*int64(outW) > math.MaxInt32*8 {
		return nil, fmt.Errorf("resample: output (%d, %d, %d, %d) is too large", n, c, outH, outW)
	}
	kern, ok := kernels[method]
	if !ok {
		return nil, fmt.Errorf("resample: unknown upscale_method %q", method)
	}
	planes := n * c
	if planes == 0 {
		return []float32{}, nil
	}
	if h == 0 || w == 0 {
		return nil, fmt.Errorf("resample: cannot resize an empty %dx%d image", w, h)
	}
	x0, y0, cw, ch := 0, 0, w, h
	switch crop {
	case "disabled":
	case "center":
		x0, y0 = centerCrop(w, h, outW, outH)
		cw, ch = w-2*x0, h-2*y0
		if cw <= 0 || ch <= 0 {
			return nil, fmt.Errorf("resample: center crop of %dx%d to aspect %d:%d leaves no pixels", w, h, outW, outH)
		}
	default:
		return nil, fmt.Errorf("resample: unknown crop %q", crop)
	}
	in := src
	if cw != w || ch != h {
		in = make([]float32, planes*cw*ch)
		for p := 0; p < planes; p++ {
			for y := 0; y < ch; y++ {
				row := src[p*h*w+(y+y0)*w+x0:]
				copy(in[p*cw*ch+y*cw:p*cw*ch+(y+1)*cw], row[:cw])
			}
		}
	}
	if method == "lanczos" {
		if c != 3 {
			return nil, fmt.Errorf("resample: lanczos works on 3-channel images (PIL RGB), got %d channels", c)
		}
		return lanczos(in, n, cw, ch, outW, outH), nil
	}
	if method == "bislerp" {
		return bislerp(in, n, c, ch, cw, outW, outH), nil
	}
	out := make([]float32, planes*outW*outH)
	var t tables
	kern.prep(&t, cw, ch, outW, outH)
	forEachPlane(planes, func(p int) {
		kern.run(&t, out[p*outW*outH:(p+1)*outW*outH], in[p*cw*ch:(p+1)*cw*ch], cw, ch, outW, outH)
	})
	return out, nil
}

// planeKernel resizes (h, w) planes into (outH, outW) ones: prep computes the tables
// every plane of a call shares, run resizes one plane with them.
type planeKernel struct {
	prep func(t *tables, w, h, outW, outH int)
	run  func(t *tables, dst, src []float32, w, h, outW, outH int)
}

// tables is what planeKernel.prep computes: source columns (gather methods, with the
// source row function idx) or the taps along each axis (separable methods).
type tables struct {
	xs     []int
	double bool
	idx    func(dst, in, out int) int
	tx, ty taps
}

var kernels = map[string]planeKernel{
	"nearest":       nearest,
	"nearest-exact": nearestExact,
	"bilinear":      bilinear,
	"bicubic":       bicubic,
	"area":          area,
	"bislerp":       {}, // handled across channels in Upscale
	"lanczos":       {}, // handled per image in Upscale
}

// centerCrop returns the margin common_upscale removes on the left/right (x) or
// top/bottom (y): round((old - old*(newAspect/oldAspect))/2) with Python's round.
func centerCrop(w, h, outW, outH int) (x, y int) {
	oldAspect := float64(w) / float64(h)
	newAspect := float64(outW) / float64(outH)
	switch {
	case oldAspect > newAspect:
		x = int(math.RoundToEven((float64(w) - float64(w)*(newAspect/oldAspect)) / 2))
	case oldAspect < newAspect:
		y = int(math.RoundToEven((float64(h) - float64(h)*(oldAspect/newAspect)) / 2))
	}
	return x, y
}

// forEachPlane runs f over [0, planes) on up to GOMAXPROCS goroutines.
func forEachPlane(planes int, f func(p int)) {
	workers := min(runtime.GOMAXPROCS(0), planes)
	if workers <= 1 {
		for p := 0; p < planes; p++ {
			f(p)
		}
		return
	}
	var wg sync.WaitGroup
	for t := 0; t < workers; t++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := t; p < planes; p += workers {
				f(p)
			}
		}()
	}
	wg.Wait()
}

// GatherIndices returns, for the index-gathering methods ("nearest", "nearest-exact"),
// the source index of each of the out positions along an axis of in, so that another
// backend can resize by gathering (out[y][x] = in[ys[y]][xs[x]]) with the same rules
// as Upscale; ok is false for the methods that interpolate.
func GatherIndices(method string, in, out int) (idx []int, ok bool) {
	var f func(dst, in, out int) int
	switch method {
	case "nearest":
		f = nearestIndex
	case "nearest-exact":
		f = nearestExactIndex
	default:
		return nil, false
	}
	idx = make([]int, out)
	for i := range idx {
		idx[i] = f(i, in, out)
	}
	return idx, true
}

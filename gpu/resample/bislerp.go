package resample

import "math"

// bislerp reproduces comfy.utils.bislerp: a bilinear resize in which each output pixel's
// channel vector is the spherical interpolation of its two neighbours' unit vectors,
// rescaled by the linear interpolation of their lengths; first along the width, then
// along the height. Neighbour indices and ratios come from a float32 bilinear
// interpolation of the coordinate ramp, exactly as ComfyUI derives them
// (generate_bilinear_data), so the same pixels pair up.
func bislerp(src []float32, n, c, h, w, outW, outH int) []float32 {
	// pass 1: along w, (n,c,h,w) -> (n,c,h,outW)
	r, i1, i2 := bilinearData(w, outW)
	mid := make([]float32, n*c*h*outW)
	slerpAxis(mid, src, n, c, h, w, outW, r, i1, i2)
	// pass 2: along h, viewing each (h, outW) plane as outW columns of stride outW
	r, i1, i2 = bilinearData(h, outH)
	out := make([]float32, n*c*outH*outW)
	slerpAxisH(out, mid, n, c, h, outW, outH, r, i1, i2)
	return out
}

// bilinearData is generate_bilinear_data: the ramp 0..old-1 (and 1..old-1,old-1 for the
// upper neighbour) resized bilinearly to length new in float32; ratio = frac, indices truncated.
func bilinearData(old, new int) (ratio []float32, c1, c2 []int) {
	t := linearTaps(old, new)
	ramp2 := func(k int) float32 {
		if k == old-1 {
			return float32(old - 1)
		}
		return float32(k + 1)
	}
	ratio = make([]float32, new)
	c1 = make([]int, new)
	c2 = make([]int, new)
	for i := 0; i < new; i++ {
		a, b := t.idx[2*i], t.idx[2*i+1]
		wa, wb := t.wt[2*i], t.wt[2*i+1]
		v1 := float32(float32(float32(a)*wa) + float32(float32(b)*wb))
		v2 := float32(float32(ramp2(a)*wa) + float32(ramp2(b)*wb))
		ratio[i] = v1 - float32(math.Floor(float64(v1)))
		c1[i] = int(v1)
		c2[i] = int(v2)
	}
	return ratio, c1, c2
}

// slerpAxis resamples along the innermost axis: for each (b, y, x) the c-vector at
// src[b,:,y,c1[x]] and src[b,:,y,c2[x]] is slerped with ratio r[x].
func slerpAxis(dst, src []float32, n, c, h, w, outW int, r []float32, c1, c2 []int) {
	v1 := make([]float64, c)
	v2 := make([]float64, c)
	res := make([]float64, c)
	for b := 0; b < n; b++ {
		for y := 0; y < h; y++ {
			for x := 0; x < outW; x++ {
				for ch := 0; ch < c; ch++ {
					base := ((b*c+ch)*h + y) * w
					v1[ch] = float64(src[base+c1[x]])
					v2[ch] = float64(src[base+c2[x]])
				}
				slerp(res, v1, v2, float64(r[x]))
				for ch := 0; ch < c; ch++ {
					dst[((b*c+ch)*h+y)*outW+x] = float32(res[ch])
				}
			}
		}
	}
}

// slerpAxisH resamples along the height of (n, c, h, w) data into (n, c, outH, w).
func slerpAxisH(dst, src []float32, n, c, h, w, outH int, r []float32, c1, c2 []int) {
	v1 := make([]float64, c)
	v2 := make([]float64, c)
	res := make([]float64, c)
	for b := 0; b < n; b++ {
		for y := 0; y < outH; y++ {
			for x := 0; x < w; x++ {
				for ch := 0; ch < c; ch++ {
					plane := (b*c + ch) * h * w
					v1[ch] = float64(src[plane+c1[y]*w+x])
					v2[ch] = float64(src[plane+c2[y]*w+x])
				}
				slerp(res, v1, v2, float64(r[y]))
				for ch := 0; ch < c; ch++ {
					dst[((b*c+ch)*outH+y)*w+x] = float32(res[ch])
				}
			}
		}
	}
}

// slerp is bislerp's inner slerp on one pair of channel vectors (computed in float64).
// Zero vectors normalise to zero; nearly equal directions (dot > 1-1e-5) return a;
// nearly opposite ones (dot < 1e-5-1) fall back to linear interpolation. Like ComfyUI,
// the angle-weighted sum of unit vectors is rescaled by the lerp of the two lengths.
func slerp(out, a, b []float64, r float64) {
	var na, nb float64
	for i := range a {
		na += a[i] * a[i]
		nb += b[i] * b[i]
	}
	na, nb = math.Sqrt(na), math.Sqrt(nb)
	unit := func(v, n float64) float64 {
		if n == 0 {
			return 0
		}
		return v / n
	}
	var dot float64
	for i := range a {
		dot += unit(a[i], na) * unit(b[i], nb)
	}
	// ComfyUI compares a float32 dot with the thresholds rounded to float32.
	dot32 := float32(dot)
	switch {
	case dot32 > float32(1-1e-5):
		copy(out, a)
		return
	case dot32 < float32(1e-5-1):
		for i := range a {
			out[i] = a[i]*(1-r) + b[i]*r
		}
		return
	}
	omega := math.Acos(dot)
	so := math.Sin(omega)
	wa, wb := math.Sin((1-r)*omega)/so, math.Sin(r*omega)/so
	scale := na*(1-r) + nb*r
	for i := range a {
		out[i] = (wa*unit(a[i], na) + wb*unit(b[i], nb)) * scale
	}
}

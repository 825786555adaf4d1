package resample

import "math"

// The kernels below follow PyTorch's CPU interpolate (align_corners=False, no antialias,
// scales not given), in float32 like PyTorch's opmath for float tensors, with the
// explicit float32 conversions where PyTorch rounds (Go does not fuse on amd64, and the
// conversions stop fusion elsewhere). Source: aten/src/ATen/native/UpSample.h
// (area_pixel_compute_source_index, guard_index_and_lambda, nearest_idx,
// nearest_neighbor_exact_compute_source_index, get_cubic_upsample_coefficients) and
// cpu/UpSampleKernel.cpp (compute_indices_weights_linear/cubic, the Interpolate recursion:
// out = Σ_h w_h · (Σ_w w_w · x)).

// ratio is PyTorch's compute_scales_value<float> without an explicit scale: in/out in float32.
func ratio(in, out int) float32 { return float32(in) / float32(out) }

// nearestIndex is PyTorch's nearest_idx: copy at equal size, halve at exactly 2×,
// else min(floor(dst*scale), in-1) with the product in float32.
func nearestIndex(dst, in, out int) int {
	switch {
	case in == out:
		return dst
	case out == 2*in:
		return dst >> 1
	}
	s := ratio(in, out)
	return min(int(math.Floor(float64(float32(float32(dst)*s)))), in-1)
}

// nearestExactIndex is nearest_neighbor_exact_compute_source_index: the product is taken
// in double ((dst + 0.5) is a double in the C++ source) and rounded to float by floorf.
func nearestExactIndex(dst, in, out int) int {
	s := ratio(in, out)
	v := float32((float64(dst) + 0.5) * float64(s))
	return min(int(math.Floor(float64(v))), in-1)
}

// gatherTables fills t.xs with the source column of each output column and records
// whether they are exactly x/2 (a 2× enlargement, the decoders' upsampling).
func gatherTables(t *tables, w, outW int, idx func(dst, in, out int) int) {
	t.xs = grow(t.xs, outW)
	t.double = outW == 2*w
	for x := range t.xs {
		t.xs[x] = idx(x, w, outW)
		t.double = t.double && t.xs[x] == x/2
	}
	t.idx = idx
}

// gatherIndex fills each output pixel from the input pixel t.idx picks along each axis
// (the columns from t.xs). An output row with the same source row as the previous one
// is a copy of it, and a 2× row is filled by duplicating each input value.
func gatherIndex(t *tables, dst, src []float32, w, h, outW, outH int) {
	prev := -1
	for y := 0; y < outH; y++ {
		sy := t.idx(y, h, outH)
		d := dst[y*outW : (y+1)*outW]
		if sy == prev {
			copy(d, dst[(y-1)*outW:y*outW])
			continue
		}
		prev = sy
		row := src[sy*w : sy*w+w]
		if t.double {
			for x, v := range row {
				d[2*x], d[2*x+1] = v, v
			}
			continue
		}
		for x, sx := range t.xs {
			d[x] = row[sx]
		}
	}
}

// grow returns s resliced to n elements, reallocated only when it is too short.
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

var (
	nearest = planeKernel{
		prep: func(t *tables, w, h, outW, outH int) { gatherTables(t, w, outW, nearestIndex) },
		run:  gatherIndex,
	}
	nearestExact = planeKernel{
		prep: func(t *tables, w, h, outW, outH int) { gatherTables(t, w, outW, nearestExactIndex) },
		run:  gatherIndex,
	}
	bilinear = planeKernel{
		prep: func(t *tables, w, h, outW, outH int) {
			linearTapsInto(&t.tx, w, outW)
			linearTapsInto(&t.ty, h, outH)
		},
		run: separable,
	}
	bicubic = planeKernel{
		prep: func(t *tables, w, h, outW, outH int) {
			cubicTapsInto(&t.tx, w, outW)
			cubicTapsInto(&t.ty, h, outH)
		},
		run: separable,
	}
	area = planeKernel{prep: func(*tables, int, int, int, int) {}, run: areaPlane}
)

// taps holds, for each output coordinate along one axis, ksize input indices and weights.
type taps struct {
	ksize int
	idx   []int
	wt    []float32
}

// linearTaps is compute_source_index_and_lambda for align_corners=False.
func linearTaps(in, out int) taps {
	var t taps
	linearTapsInto(&t, in, out)
	return t
}

// linearTapsInto is linearTaps into t, reusing its slices.
func linearTapsInto(t *taps, in, out int) {
	t.ksize, t.idx, t.wt = 2, grow(t.idx, 2*out), grow(t.wt, 2*out)
	s := ratio(in, out)
	for i := 0; i < out; i++ {
		var i0, i1 int
		var l0, l1 float32
		if in == out {
			i0, i1, l0, l1 = i, i, 1, 0
		} else {
			real := float32(float32(s*float32(float32(i)+0.5)) - 0.5)
			if real < 0 {
				real = 0
			}
			i0, l1 = guard(real, in)
			i1 = i0
			if i0 < in-1 {
				i1++
			}
			l0 = 1 - l1
		}
		t.idx[2*i], t.idx[2*i+1] = i0, i1
		t.wt[2*i], t.wt[2*i+1] = l0, l1
	}
}

// guard is guard_index_and_lambda: index = min(floor(real), in-1), lambda clamped to [0,1].
func guard(real float32, in int) (int, float32) {
	i := min(int(math.Floor(float64(real))), in-1)
	l := float32(real - float32(i))
	l = min(max(l, 0), 1)
	return i, l
}

// cubicTapsInto is compute_indices_weights_cubic with A = -0.75 and indices clamped to
// the edge, into t (its slices reused).
func cubicTapsInto(t *taps, in, out int) {
	const a = float32(-0.75)
	conv1 := func(x float32) float32 { // |x| <= 1
		return float32(float32(float32(float32(float32(a+2)*x)-(a+3))*x)*x) + 1
	}
	conv2 := func(x float32) float32 { // 1 < |x| < 2
		return float32(float32(float32(float32(float32(float32(a*x)-5*a)*x)+8*a)*x) - 4*a)
	}
	t.ksize, t.idx, t.wt = 4, grow(t.idx, 4*out), grow(t.wt, 4*out)
	s := ratio(in, out)
	for i := 0; i < out; i++ {
		real := float32(float32(s*float32(float32(i)+0.5)) - 0.5)
		i0, l := guard(real, in)
		x2 := 1 - l
		w := [4]float32{conv2(l + 1), conv1(l), conv1(x2), conv2(x2 + 1)}
		for j := 0; j < 4; j++ {
			t.idx[4*i+j] = min(max(i0-1+j, 0), in-1)
			t.wt[4*i+j] = w[j]
		}
	}
}

// separable evaluates out[y][x] = Σ_j wy_j · (Σ_k wx_k · src[iy_j][ix_k]) in PyTorch's
// order, with the taps of t.
func separable(t *tables, dst, src []float32, w, _, outW, outH int) {
	tx, ty := &t.tx, &t.ty
	for y := 0; y < outH; y++ {
		d := dst[y*outW : (y+1)*outW]
		for x := 0; x < outW; x++ {
			var acc float32
			for j := 0; j < ty.ksize; j++ {
				row := src[ty.idx[y*ty.ksize+j]*w:]
				var inner float32
				for k := 0; k < tx.ksize; k++ {
					p := float32(row[tx.idx[x*tx.ksize+k]] * tx.wt[x*tx.ksize+k])
					if k == 0 {
						inner = p
					} else {
						inner += p
					}
				}
				p := float32(inner * ty.wt[y*ty.ksize+j])
				if j == 0 {
					acc = p
				} else {
					acc += p
				}
			}
			d[x] = acc
		}
	}
}

// areaPlane is adaptive_avg_pool2d: output cell o covers input [floor(o·in/out), ceil((o+1)·in/out)),
// summed in float32 and divided by kh then kw (AdaptiveAvgPoolKernel.cpp, cpu_adaptive_avg_pool).
func areaPlane(_ *tables, dst, src []float32, w, h, outW, outH int) {
	for oy := 0; oy < outH; oy++ {
		y0, y1 := oy*h/outH, ((oy+1)*h+outH-1)/outH
		for ox := 0; ox < outW; ox++ {
			x0, x1 := ox*w/outW, ((ox+1)*w+outW-1)/outW
			var sum float32
			for y := y0; y < y1; y++ {
				for _, v := range src[y*w+x0 : y*w+x1] {
					sum += v
				}
			}
			dst[oy*outW+ox] = sum / float32(y1-y0) / float32(x1-x0)
		}
	}
}

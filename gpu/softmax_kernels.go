package gpu

import "math"

// Row kernels of attention's online softmax, with a portable Go form and an AVX-512 form
// (softmax_amd64.s) chosen per CPU backend (see rowKernels).

// expScaleGo sets row[i] = e^((row[i] − m)·scale) and returns the sum.
func expScaleGo(row []float32, scale, m float32) float32 {
	var sum float32
	for j, x := range row {
		e := expf((x - m) * scale)
		row[j] = e
		sum += e
	}
	return sum
}

// maxGo returns the largest non-NaN element of row (−Inf when empty).
func maxGo(row []float32) float32 {
	m := float32(math.Inf(-1))
	for _, v := range row {
		if v > m {
			m = v
		}
	}
	return m
}

// mapGo lifts a scalar activation to a slice kernel.
func mapGo(f func(float32) float32) func(dst, src []float32) {
	return func(dst, src []float32) {
		dst = dst[:len(src)]
		for i, v := range src {
			dst[i] = f(v)
		}
	}
}

// rowKernels holds the vector kernels one backend uses: attention's exp/max and the
// contiguous forms of the activations that have an assembly version.
type rowKernels struct {
	expScale func(row []float32, scale, m float32) float32
	max      func(row []float32) float32
	gelu     func(dst, src []float32)
	geluTanh func(dst, src []float32)
	silu     func(dst, src []float32)
	// winoIn and winoOut are the Winograd transforms over n channels (winograd.go)
	winoIn  func(dst, src *[16]*float32, n int)
	winoOut func(dst *[4]*float32, src *[16]*float32, n int)
	simd    bool
}

func selectRowKernels(generic bool) rowKernels {
	if !generic && haveAVX512() {
		return rowKernels{expScale: expScaleSIMD, max: maxSIMD, gelu: geluSIMD, geluTanh: geluTanhSIMD, silu: siluSIMD,
			winoIn: winoInSIMD, winoOut: winoOutSIMD, simd: true}
	}
	return rowKernels{expScale: expScaleGo, max: maxGo, gelu: mapGo(geluErf), geluTanh: mapGo(geluTanh), silu: mapGo(silu),
		winoIn: winoInGo, winoOut: winoOutGo}
}

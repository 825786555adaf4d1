//go:build amd64

package gemm

type peakLoop struct {
	name         string
	ok           bool
	fn           func(iters int)
	flopsPerIter float64
}

// peakLoops lists the FMA-throughput loops of gemm_amd64.s; each iteration
// issues 12 independent vector operations.
func peakLoops() []peakLoop {
	return []peakLoop{
		{"avx512", hasAVX512(), fmaPeakAVX512, 12 * 16 * 2},
		{"avx2", hasAVX2(), fmaPeakAVX2, 12 * 8 * 2},
		{"avx512bf16", hasAVX512BF16(), dpbf16PeakAVX512, 12 * 32 * 2},
	}
}

//go:build !amd64

package gemm

type peakLoop struct {
	name         string
	ok           bool
	fn           func(iters int)
	flopsPerIter float64
}

// peakLoops is empty off amd64: there is no assembly loop to measure.
func peakLoops() []peakLoop { return nil }

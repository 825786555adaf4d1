//go:build !amd64

package gpu

func haveAVX512() bool { return false }

func expScaleSIMD(row []float32, scale, m float32) float32 { return expScaleGo(row, scale, m) }

func maxSIMD(row []float32) float32 { return maxGo(row) }

func geluSIMD(dst, src []float32) { mapGo(geluErf)(dst, src) }

func siluSIMD(dst, src []float32) { mapGo(silu)(dst, src) }

func geluTanhSIMD(dst, src []float32) { mapGo(geluTanh)(dst, src) }

func fmaLoopAVX512(n int) {}

func winoInSIMD(dst, src *[16]*float32, n int) { winoInGo(dst, src, n) }

func winoOutSIMD(dst *[4]*float32, src *[16]*float32, n int) { winoOutGo(dst, src, n) }

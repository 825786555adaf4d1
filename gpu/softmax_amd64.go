//go:build amd64

package gpu

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// expScaleAVX512 sets row[i] = e^((row[i] − m)·scale) and returns their sum (AVX-512F,
// 16 lanes; the same range reduction and polynomial as expf).
//
//go:noescape
func expScaleAVX512(row []float32, scale, m float32) float32

// maxAVX512 returns the largest element of row (−Inf when empty).
//
//go:noescape
func maxAVX512(row []float32) float32

// haveAVX512 reports whether the AVX-512 softmax helpers can run here.
func haveAVX512() bool { return cpu.X86.HasAVX512F && cpu.X86.HasAVX512DQ }

func expScaleSIMD(row []float32, scale, m float32) float32 { return expScaleAVX512(row, scale, m) }

func maxSIMD(row []float32) float32 { return maxAVX512(row) }

// geluAVX512 writes GELU(src) (erf form, A&S 7.1.26 as geluErf) to dst; len(dst) ≥ len(src).
//
//go:noescape
func geluAVX512(dst, src []float32)

// siluAVX512 writes src·σ(src) to dst; len(dst) ≥ len(src).
//
//go:noescape
func siluAVX512(dst, src []float32)

func geluSIMD(dst, src []float32) { geluAVX512(dst[:len(src)], src) }

func siluSIMD(dst, src []float32) { siluAVX512(dst[:len(src)], src) }

// geluTanhAVX512 writes the tanh-approximated GELU of src to dst (as geluTanh).
//
//go:noescape
func geluTanhAVX512(dst, src []float32)

func geluTanhSIMD(dst, src []float32) { geluTanhAVX512(dst[:len(src)], src) }

// fmaLoopAVX512 runs n iterations of 12 independent 16-lane FMAs (384 flops each); the
// benchmarks use it to measure this machine's FMA ceiling.
//
//go:noescape
func fmaLoopAVX512(n int)

// winoInAVX512 is winoInGo over nvec vectors of 16 channels (winograd_amd64.s).
//
//go:noescape
func winoInAVX512(dst, src *[16]*float32, nvec int)

// winoOutAVX512 is winoOutGo over nvec vectors of 16 channels.
//
//go:noescape
func winoOutAVX512(dst *[4]*float32, src *[16]*float32, nvec int)

// winoInSIMD runs the whole 16-channel vectors in assembly and the rest in Go.
func winoInSIMD(dst, src *[16]*float32, n int) {
	nv := n / 16
	if nv > 0 {
		winoInAVX512(dst, src, nv)
	}
	if n%16 != 0 {
		var d, s [16]*float32
		for k := range d {
			d[k] = (*float32)(unsafe.Add(unsafe.Pointer(dst[k]), 64*nv))
			s[k] = (*float32)(unsafe.Add(unsafe.Pointer(src[k]), 64*nv))
		}
		winoInGo(&d, &s, n%16)
	}
}

// winoOutSIMD runs the whole 16-channel vectors in assembly and the rest in Go.
func winoOutSIMD(dst *[4]*float32, src *[16]*float32, n int) {
	nv := n / 16
	if nv > 0 {
		winoOutAVX512(dst, src, nv)
	}
	if n%16 != 0 {
		var d [4]*float32
		var s [16]*float32
		for k := range d {
			d[k] = (*float32)(unsafe.Add(unsafe.Pointer(dst[k]), 64*nv))
		}
		for k := range s {
			s[k] = (*float32)(unsafe.Add(unsafe.Pointer(src[k]), 64*nv))
		}
		winoOutGo(&d, &s, n%16)
	}
}

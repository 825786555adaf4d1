//go:build amd64

package gemm

import (
	"fmt"

	"golang.org/x/sys/cpu"
)

// Blocking for Zen 4 (32 KiB L1d, 1 MiB L2 per core); see codex/gemm.md.
// The A sliver (mr×kc) stays in L1 while the B block (kc×nc) streams from
// L2: 12·256·4 = 12 KiB and 256·512·4 = 512 KiB for AVX-512.
func avx512Kernel() kernel {
	return kernel{path: PathAVX512, mr: 12, nr: 32, kc: 256, mc: 192, nc: 512, tile: tile12x32AVX512}
}

func avx2Kernel() kernel {
	return kernel{path: PathAVX2, mr: 6, nr: 16, kc: 256, mc: 144, nc: 512, tile: tile6x16AVX2}
}

func hasAVX2() bool       { return cpu.X86.HasAVX2 && cpu.X86.HasFMA }
func hasAVX512() bool     { return cpu.X86.HasAVX512F }
func hasAVX512BF16() bool { return cpu.X86.HasAVX512F && cpu.X86.HasAVX512BF16 }

// selectKernel returns the kernel for p, checking the CPU features it
// needs (x/sys/cpu also checks that the OS saves the wide registers).
func selectKernel(p Path) (kernel, error) {
	switch p {
	case PathAuto:
		if hasAVX512() {
			return avx512Kernel(), nil
		}
		if hasAVX2() {
			return avx2Kernel(), nil
		}
		return genericKernel(), nil
	case PathGeneric:
		return genericKernel(), nil
	case PathAVX2:
		if hasAVX2() {
			return avx2Kernel(), nil
		}
		return kernel{}, fmt.Errorf("gemm: path avx2: cpu lacks AVX2 or FMA")
	case PathAVX512:
		if hasAVX512() {
			return avx512Kernel(), nil
		}
		return kernel{}, fmt.Errorf("gemm: path avx512: cpu lacks AVX-512F")
	}
	return kernel{}, fmt.Errorf("gemm: unknown path %d", int(p))
}

//go:build amd64

package gemm

import (
	"fmt"

	"golang.org/x/sys/cpu"
)

// selectKernel returns the kernel for p, checking the CPU features it needs.
func selectKernel(p Path) (kernel, error) {
	switch p {
	case PathAuto, PathGeneric:
		return genericKernel(), nil
	}
	return kernel{}, fmt.Errorf("gemm: path %s not available (avx2=%v avx512f=%v)", p, cpu.X86.HasAVX2, cpu.X86.HasAVX512F)
}

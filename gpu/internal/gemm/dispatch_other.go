//go:build !amd64

package gemm

import "fmt"

// selectKernel returns the kernel for p; only the generic path exists off
// amd64.
func selectKernel(p Path) (kernel, error) {
	switch p {
	case PathAuto, PathGeneric:
		return genericKernel(), nil
	}
	return kernel{}, fmt.Errorf("gemm: path %s needs amd64", p)
}

// selectBF16Kernel reports that the bf16 dot-product path needs amd64.
func selectBF16Kernel(p Path) (kernel, error) {
	return kernel{}, fmt.Errorf("gemm: bf16 dot products need amd64 with AVX512_BF16")
}

// prefetchRange is a no-op off amd64.
func prefetchRange([]byte) {}

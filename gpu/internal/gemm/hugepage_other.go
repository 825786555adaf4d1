//go:build !linux

package gemm

import "unsafe"

// adviseHuge is a no-op where transparent huge pages are not asked for.
func adviseHuge(unsafe.Pointer, int) {}

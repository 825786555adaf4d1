//go:build !amd64

package gemm

// cpuidCaches answers nothing off amd64; sysfs and the defaults remain.
func cpuidCaches() Caches { return Caches{} }

//go:build !linux

package gpu

// totalRAM is unknown off Linux.
func totalRAM() int64 { return 0 }

// adviseHuge is a no-op off Linux.
func adviseHuge([]byte) {}

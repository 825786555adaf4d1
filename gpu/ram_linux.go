//go:build linux

package gpu

import (
	"syscall"
	"unsafe"
)

// totalRAM is the machine's RAM in bytes (0 when unknown).
func totalRAM() int64 {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil {
		return 0
	}
	return int64(si.Totalram) * int64(si.Unit)
}

// adviseHuge asks for transparent huge pages (MADV_HUGEPAGE) on the 2 MiB-aligned
// interior of a fresh allocation before its first write: an SD decoder's activations
// are hundreds of megabytes, and on a virtual machine every first-touched 4 KiB page
// costs microseconds. A hint; failure is ignored.
func adviseHuge(b []byte) {
	const huge = 2 << 20
	if len(b) < 2*huge {
		return
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	start := (p + huge - 1) &^ (huge - 1)
	end := (p + uintptr(len(b))) &^ (huge - 1)
	if end > start {
		_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, start, end-start, 14 /* MADV_HUGEPAGE */)
	}
}

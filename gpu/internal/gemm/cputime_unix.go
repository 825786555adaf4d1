//go:build unix

package gemm

import (
	"syscall"
	"time"
)

// processCPUTime is the user+system CPU time of this process so far. On a
// machine shared with other work, flops per CPU-second measure the kernel
// itself, while wall-clock GFLOP/s also measure how much of the cores the
// process was given.
func processCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

//go:build unix

package main

import "syscall"

// processCPUSeconds is the user+system CPU time of this process so far: on a machine
// shared with other work, CPU seconds per run measure the engine, while wall time also
// measures how much of the cores it was given.
func processCPUSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

//go:build unix

package lora_test

import "syscall"

// cpuSeconds is the user+system CPU time of the test process so far: on a machine
// shared with other work it measures the engine, where wall time also measures how much
// of the cores it was given.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

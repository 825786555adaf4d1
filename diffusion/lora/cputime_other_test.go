//go:build !unix

package lora_test

// cpuSeconds is not measured here (the CPU-second metrics read 0).
func cpuSeconds() float64 { return 0 }

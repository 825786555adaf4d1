package gemm

import (
	"runtime"
	"sync"
	"time"
)

// Peak is one measured throughput ceiling of this machine.
type Peak struct {
	Name   string  // the instruction family: "avx512", "avx2", "avx512bf16"
	GFLOPs float64 // on threads goroutines at once
}

// MeasurePeak times the FMA-throughput loops of every instruction family
// this CPU supports, on threads goroutines at once (0 means GOMAXPROCS),
// each for about d. It is the ceiling the GEMM figures are read against;
// nothing else depends on it.
func MeasurePeak(threads int, d time.Duration) []Peak {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	var res []Peak
	for _, pk := range peakLoops() {
		if !pk.ok {
			continue
		}
		const iters = 1 << 18
		pk.fn(iters) // warm up the vector units
		var calls int
		start := time.Now()
		for time.Since(start) < d || calls == 0 {
			var wg sync.WaitGroup
			for range threads {
				wg.Go(func() { pk.fn(iters) })
			}
			wg.Wait()
			calls++
		}
		sec := time.Since(start).Seconds()
		res = append(res, Peak{Name: pk.name, GFLOPs: float64(calls) * float64(threads) * iters * pk.flopsPerIter / sec / 1e9})
	}
	return res
}

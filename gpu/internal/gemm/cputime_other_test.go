//go:build !unix

package gemm

import "time"

// processCPUTime is not measured off unix; the per-CPU metrics are skipped.
func processCPUTime() time.Duration { return 0 }

//go:build !unix

package gemm

import "time"

// processCPUTime is not measured off unix (0): the per-CPU benchmark metrics
// are skipped and the calibration times wall-clock.
func processCPUTime() time.Duration { return 0 }

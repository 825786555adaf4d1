//go:build !(openblas && cgo)

// Command blasbench compares forgeflow's SGEMM with OpenBLAS side by side.
// It needs cgo and libopenblas-dev, so it only builds with the openblas
// tag:
//
//	go run -tags openblas ./gpu/internal/gemm/cmd/blasbench
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "blasbench: built without OpenBLAS; run: go run -tags openblas ./gpu/internal/gemm/cmd/blasbench")
	os.Exit(2)
}

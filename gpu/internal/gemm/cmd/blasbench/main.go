//go:build openblas && cgo

// Command blasbench measures forgeflow's SGEMM and OpenBLAS's cblas_sgemm
// side by side in one run, on the same inputs, interleaving the two so that
// the load of a shared machine hits both alike. It is outside the default
// build (build tag openblas, cgo):
//
//	apt-get install -y libopenblas-dev
//	go run -tags openblas ./gpu/internal/gemm/cmd/blasbench
//
// Flags: -threads (both libraries; default GOMAXPROCS), -reps.
package main

/*
#cgo LDFLAGS: -lopenblas
#include <cblas.h>
*/
import "C"

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"time"
	"unsafe"

	"github.com/forgeflow/forgeflow/gpu/internal/gemm"
)

func main() {
	threads := flag.Int("threads", runtime.GOMAXPROCS(0), "threads for both libraries")
	reps := flag.Int("reps", 5, "timed runs per block; 3 blocks per shape and library (median reported)")
	flag.Parse()
	if err := run(*threads, *reps); err != nil {
		fmt.Fprintln(os.Stderr, "blasbench:", err)
		os.Exit(1)
	}
}

func run(threads, reps int) error {
	C.openblas_set_num_threads(C.int(threads))
	e, err := gemm.New(gemm.Options{Threads: threads})
	if err != nil {
		return err
	}
	fmt.Printf("forgeflow path %s, blocking %+v; OpenBLAS %s; %d threads\n",
		e.Path(), e.Blocking(), C.GoString(C.openblas_get_config()), threads)
	for _, pk := range gemm.MeasurePeak(threads, 300*time.Millisecond) {
		fmt.Printf("measured peak %-11s %7.1f GFLOP/s\n", pk.Name, pk.GFLOPs)
	}
	fmt.Printf("\n%-18s %12s %12s %7s %10s\n", "m×n×k", "forgeflow", "OpenBLAS", "ratio", "max|diff|")
	shapes := [][3]int{{1024, 1024, 1024}, {4096, 320, 320}, {4096, 1280, 320}, {1024, 640, 1920}, {2048, 2048, 2048}, {256, 256, 256}}
	r := rand.New(rand.NewPCG(1, 2))
	for _, s := range shapes {
		m, n, k := s[0], s[1], s[2]
		a, b := randSlice(r, m*k), randSlice(r, k*n)
		c1, c2 := make([]float32, m*n), make([]float32, m*n)
		ours := func() {
			if err := e.SGEMM(m, n, k, a, k, b, n, c1, n, false); err != nil {
				panic(err)
			}
		}
		blas := func() {
			C.cblas_sgemm(C.CblasRowMajor, C.CblasNoTrans, C.CblasNoTrans, C.blasint(m), C.blasint(n), C.blasint(k),
				1, (*C.float)(unsafe.Pointer(&a[0])), C.blasint(k), (*C.float)(unsafe.Pointer(&b[0])), C.blasint(n),
				0, (*C.float)(unsafe.Pointer(&c2[0])), C.blasint(n))
		}
		ours()
		blas()
		var to, tb []float64
		for range 3 {
			ours()
			for range reps {
				to = append(to, timeIt(ours))
			}
			blas()
			for range reps {
				tb = append(tb, timeIt(blas))
			}
		}
		var diff float64
		for i := range c1 {
			diff = math.Max(diff, math.Abs(float64(c1[i]-c2[i])))
		}
		flops := 2 * float64(m) * float64(n) * float64(k)
		go1, gb := flops/median(to)/1e9, flops/median(tb)/1e9
		fmt.Printf("%-18s %8.1f GF/s %8.1f GF/s %7.2f %10.2g\n", fmt.Sprintf("%dx%dx%d", m, n, k), go1, gb, go1/gb, diff)
	}
	return nil
}

func timeIt(f func()) float64 {
	t := time.Now()
	f()
	return time.Since(t).Seconds()
}

func median(x []float64) float64 {
	s := slices.Clone(x)
	slices.Sort(s)
	return s[len(s)/2]
}

func randSlice(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

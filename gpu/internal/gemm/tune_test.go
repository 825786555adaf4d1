package gemm

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// BenchmarkTune runs 1024³ with the blocking given in FORGEFLOW_GEMM_TUNE
// ("kc,mc,nc;kc,mc,nc;…"); it is skipped when the variable is unset. It is
// the tool the blocking in codex/gemm.md was chosen with.
func BenchmarkTune(b *testing.B) {
	spec := os.Getenv("FORGEFLOW_GEMM_TUNE")
	if spec == "" {
		b.Skip("FORGEFLOW_GEMM_TUNE not set")
	}
	for _, item := range strings.Split(spec, ";") {
		f := strings.Split(item, ",")
		if len(f) != 3 {
			b.Fatalf("bad tuning item %q", item)
		}
		var v [3]int
		for i := range f {
			n, err := strconv.Atoi(f[i])
			if err != nil {
				b.Fatal(err)
			}
			v[i] = n
		}
		e, err := New(Options{Blocking: Blocking{KC: v[0], MC: v[1], NC: v[2]}})
		if err != nil {
			b.Fatal(err)
		}
		for _, sh := range benchShapes {
			b.Run(fmt.Sprintf("kc%d_mc%d_nc%d/%dx%dx%d", v[0], v[1], v[2], sh.m, sh.n, sh.k), func(b *testing.B) { benchSGEMM(b, e, sh) })
		}
	}
}

// BenchmarkSchedule compares the two ways of spreading one product over
// the threads (shared B blocks with dynamic row blocks, and one private
// rectangle per thread) on the same machine state; run with -count.
func BenchmarkSchedule(b *testing.B) {
	for _, sh := range benchShapes {
		for _, split := range []bool{false, true} {
			name := "shared"
			if split {
				name = "split"
			}
			b.Run(fmt.Sprintf("%dx%dx%d/%s", sh.m, sh.n, sh.k, name), func(b *testing.B) {
				e := benchEngine(b, PathAuto)
				e.noShare = split
				benchSGEMM(b, e, sh)
			})
		}
	}
}

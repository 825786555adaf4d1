package gpu

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/forgeflow/forgeflow/gpu/internal/gemm"
)

// TestBlockingCalibrationCache drives BlockingAuto's cache with injected
// calibrations: measured once and read back for the same key, measured
// again for another CPU model or code version (keeping the other entries),
// a corrupt file measured again and rewritten, a failed calibration keeping
// the derived blocking uncached.
func TestBlockingCalibrationCache(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	chosen := gemm.Blocking{KC: 512, MC: 132, NC: 960}
	measured := func(t *testing.T, calls *int, b gemm.Blocking) func() (gemm.Calibration, error) {
		return func() (gemm.Calibration, error) {
			*calls++
			return gemm.Calibration{Derived: gemm.Blocking{KC: 384, MC: 168, NC: 1280}, Chosen: b,
				Candidates: []gemm.Candidate{{Blocking: gemm.Blocking{KC: 384, MC: 168, NC: 1280}, Best: 10 * time.Millisecond}, {Blocking: b, Best: 8 * time.Millisecond}}}, nil
		}
	}
	noRun := func(t *testing.T) func() (gemm.Calibration, error) {
		return func() (gemm.Calibration, error) {
			t.Fatal("calibrated although the choice is cached")
			return gemm.Calibration{}, nil
		}
	}

	file := filepath.Join(t.TempDir(), "sub", "gemm-blocking.json")
	calls := 0
	a := &blockingCalibration{key: "cpu A | v1 | avx512", file: file, run: measured(t, &calls, chosen), log: log}
	if got := a.decide(); got != chosen || calls != 1 {
		t.Fatalf("first decision %+v after %d calibrations, want %+v after 1", got, calls, chosen)
	}
	again := &blockingCalibration{key: a.key, file: file, run: noRun(t), log: log}
	if got := again.decide(); got != chosen {
		t.Fatalf("cached decision %+v, want %+v", got, chosen)
	}
	// Another CPU model or another build calibrates for itself.
	other := gemm.Blocking{KC: 288, MC: 228, NC: 1728}
	for _, key := range []string{"cpu B | v1 | avx512", "cpu A | v2 | avx512"} {
		calls = 0
		b := &blockingCalibration{key: key, file: file, run: measured(t, &calls, other), log: log}
		if got := b.decide(); got != other || calls != 1 {
			t.Fatalf("%s: %+v after %d calibrations, want %+v after 1", key, got, calls, other)
		}
	}
	var m map[string]cachedBlocking
	if err := readJSONFile(file, &m); err != nil || len(m) != 3 {
		t.Fatalf("cache %v (%v): want 3 entries", m, err)
	}
	if e := m[a.key]; e.KC != 512 || e.MC != 132 || e.NC != 960 || e.Derived != [3]int{384, 168, 1280} || len(e.Candidates) != 2 || e.Candidates[1] != [4]int{512, 132, 960, 8000} {
		t.Fatalf("entry %+v", e)
	}
	if got := again.decide(); got != chosen {
		t.Fatalf("cpu A's entry lost: %+v", got)
	}

	t.Run("corrupt cache", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "gemm-blocking.json")
		if err := os.WriteFile(file, []byte("{not json"), 0o644); err != nil {
			t.Fatal(err)
		}
		calls := 0
		c := &blockingCalibration{key: "k", file: file, run: measured(t, &calls, chosen), log: log}
		if got := c.decide(); got != chosen || calls != 1 {
			t.Fatalf("%+v after %d calibrations", got, calls)
		}
		if got := (&blockingCalibration{key: "k", file: file, run: noRun(t), log: log}).decide(); got != chosen {
			t.Fatalf("the rewritten cache lost the choice: %+v", got)
		}
	})

	t.Run("failed calibration", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "gemm-blocking.json")
		c := &blockingCalibration{key: "k", file: file, run: func() (gemm.Calibration, error) { return gemm.Calibration{}, errors.New("boom") }, log: log}
		if got := c.decide(); got != (gemm.Blocking{}) {
			t.Fatalf("a failed calibration chose %+v", got)
		}
		if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("a failed calibration was cached: %v", err)
		}
	})

	t.Run("no cache dir", func(t *testing.T) {
		calls := 0
		for range 2 {
			c := &blockingCalibration{key: "k", run: measured(t, &calls, chosen), log: log}
			if got := c.decide(); got != chosen {
				t.Fatalf("%+v", got)
			}
		}
		if calls != 2 {
			t.Fatalf("%d calibrations, want one per decision", calls)
		}
	})
}

// TestBlockingOption maps Options.Blocking onto the engines: derived by default,
// fixed on request, an unknown value refused; with auto, a cached choice under this
// machine's key is used as it is, without measuring.
func TestBlockingOption(t *testing.T) {
	blocking := func(rt *Runtime) gemm.Blocking {
		kc, mc, nc := rt.GEMMBlocking()
		return gemm.Blocking{KC: kc, MC: mc, NC: nc}
	}
	def, err := New(Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	derived, err := New(Options{Threads: 2, Blocking: "derived"})
	if err != nil {
		t.Fatal(err)
	}
	fixed, err := New(Options{Threads: 2, Blocking: "fixed"})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := gemm.New(gemm.Options{Threads: 2, Source: gemm.BlockingFixed})
	if blocking(fixed) != want.Blocking() || blocking(def) != blocking(derived) || blocking(def) == (gemm.Blocking{}) {
		t.Fatalf("default %+v, derived %+v, fixed %+v (want %+v)", blocking(def), blocking(derived), blocking(fixed), want.Blocking())
	}
	t.Logf("derived %+v, fixed %+v", blocking(def), blocking(fixed))
	if _, err := New(Options{Blocking: "fastest"}); err == nil {
		t.Fatal("blocking \"fastest\" accepted")
	}

	dir := t.TempDir()
	cal := newBlockingCalibration(gemm.Options{Threads: 2}, dir, slog.New(slog.DiscardHandler))
	odd := gemm.Blocking{KC: 160, MC: 96, NC: 320} // no calibration would choose this
	if err := writeJSONFile(cal.file, map[string]cachedBlocking{cal.key: {KC: odd.KC, MC: odd.MC, NC: odd.NC}}); err != nil {
		t.Fatal(err)
	}
	auto, err := New(Options{Threads: 2, Blocking: "auto", CacheDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if got := blocking(auto); got != odd {
		t.Fatalf("auto with a cached choice: %+v, want %+v", got, odd)
	}
	// The runtime computes correctly with it.
	x := []float32{1, 2, 3, 4, 5, 6}
	a, _ := auto.FromFloat32(x, 2, 3)
	b, _ := auto.FromFloat32(x, 3, 2)
	c, err := MatMul(auto, a, b)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := c.Float32()
	if w := []float32{22, 28, 49, 64}; len(got) != 4 || got[0] != w[0] || got[1] != w[1] || got[2] != w[2] || got[3] != w[3] {
		t.Fatalf("MatMul %v, want %v", got, w)
	}
}

// TestBlockingAutoRuntime runs the real calibration once through New and checks that
// the runtime uses what it cached (no timing is asserted).
func TestBlockingAutoRuntime(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the calibration GEMMs")
	}
	dir := t.TempDir()
	rt, err := New(Options{Threads: 2, Blocking: "auto", CacheDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]cachedBlocking
	if err := readJSONFile(filepath.Join(dir, "gemm-blocking.json"), &m); err != nil || len(m) != 1 {
		t.Fatalf("cache %v (%v)", m, err)
	}
	for key, e := range m {
		kc, mc, nc := rt.GEMMBlocking()
		if e.KC != kc || e.MC != mc || e.NC != nc || len(e.Candidates) < 2 {
			t.Fatalf("runtime %d/%d/%d, cached %s: %+v", kc, mc, nc, key, e)
		}
		t.Logf("%s: %+v", key, e)
	}
}

package gpu

import (
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// script is a measurement that returns scripted durations (milliseconds), fp32 and
// bf16 runs alternating as calibration.time calls them, and records the calls.
type script struct {
	t          *testing.T
	fp32, bf16 []int
	calls      []bool
	err        error
}

func (s *script) measure(bf16 bool) (time.Duration, error) {
	s.calls = append(s.calls, bf16)
	if s.err != nil {
		return 0, s.err
	}
	q := &s.fp32
	if bf16 {
		q = &s.bf16
	}
	if len(*q) == 0 {
		s.t.Fatalf("measured more often than scripted (bf16 %v)", bf16)
	}
	d := time.Duration((*q)[0]) * time.Millisecond
	*q = (*q)[1:]
	return d, nil
}

func noMeasure(t *testing.T) func(bool) (time.Duration, error) {
	return func(bool) (time.Duration, error) {
		t.Fatal("measured although the decision is cached")
		return 0, nil
	}
}

// TestBF16AutoDecision drives the auto decision with injected timings: the faster path
// by its best run after a warm-up, cached per key, a corrupt cache measured again, a
// failed measurement falling back to float32 uncached.
func TestBF16AutoDecision(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	cases := []struct {
		name       string
		fp32, bf16 []int // warm-up first, then calibrationRounds runs
		want       bool
	}{
		{"bf16 faster", []int{50, 10, 11, 10}, []int{40, 6, 6, 7}, true},
		{"fp32 faster", []int{50, 6, 6, 7}, []int{40, 10, 11, 10}, false},
		{"a tie keeps fp32", []int{9, 8, 8, 8}, []int{9, 8, 8, 8}, false},
		{"best runs count, not the noisy ones", []int{5, 30, 10, 30}, []int{90, 9, 40, 40}, true},
		{"a slow warm-up does not count", []int{1, 10, 10, 10}, []int{100, 9, 9, 9}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := &script{t: t, fp32: tc.fp32, bf16: tc.bf16}
			c := &calibration{key: "cpu A | v1", file: filepath.Join(dir, "bf16-calibration.json"), measure: s.measure, log: log}
			if got := c.decide(); got != tc.want {
				t.Fatalf("decided bf16 = %v, want %v", got, tc.want)
			}
			if len(s.calls) != 2*(calibrationRounds+1) || s.calls[0] || !s.calls[1] {
				t.Fatalf("calls %v: want fp32 and bf16 alternating, %d rounds and a warm-up", s.calls, calibrationRounds)
			}
			// The same CPU and version: the cached decision, no measurement.
			again := &calibration{key: c.key, file: c.file, measure: noMeasure(t), log: log}
			if got := again.decide(); got != tc.want {
				t.Fatalf("cached decision %v, want %v", got, tc.want)
			}
		})
	}

	t.Run("key", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "sub", "bf16-calibration.json")
		a := &calibration{key: "cpu A | v1", file: file, measure: (&script{t: t, fp32: []int{1, 10, 10, 10}, bf16: []int{1, 5, 5, 5}}).measure, log: log}
		if !a.decide() {
			t.Fatal("cpu A: want bf16")
		}
		// Another CPU model or another build measures for itself and keeps A's entry.
		for _, key := range []string{"cpu B | v1", "cpu A | v2"} {
			b := &calibration{key: key, file: file, measure: (&script{t: t, fp32: []int{1, 5, 5, 5}, bf16: []int{1, 10, 10, 10}}).measure, log: log}
			if b.decide() {
				t.Fatalf("%s: want fp32", key)
			}
		}
		var m map[string]cachedDecision
		b, err := os.ReadFile(file)
		if err == nil {
			err = json.Unmarshal(b, &m)
		}
		if err != nil || len(m) != 3 || !m["cpu A | v1"].BF16 || m["cpu B | v1"].BF16 || m["cpu A | v1"].FP32NS != 10e6 || m["cpu A | v1"].BF16NS != 5e6 {
			t.Fatalf("cache %v (%v)", m, err)
		}
	})

	t.Run("corrupt cache", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "bf16-calibration.json")
		if err := os.WriteFile(file, []byte("{not json"), 0o644); err != nil {
			t.Fatal(err)
		}
		c := &calibration{key: "k", file: file, measure: (&script{t: t, fp32: []int{1, 10, 10, 10}, bf16: []int{1, 5, 5, 5}}).measure, log: log}
		if !c.decide() {
			t.Fatal("want bf16")
		}
		again := &calibration{key: "k", file: file, measure: noMeasure(t), log: log}
		if !again.decide() {
			t.Fatal("the rewritten cache lost the decision")
		}
	})

	t.Run("failed measurement", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "bf16-calibration.json")
		c := &calibration{key: "k", file: file, measure: (&script{t: t, err: errors.New("boom")}).measure, log: log}
		if c.decide() {
			t.Fatal("a failed calibration chose bf16")
		}
		if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("a failed calibration was cached: %v", err)
		}
	})

	t.Run("no cache dir", func(t *testing.T) {
		s := &script{t: t, fp32: []int{1, 10, 10, 10, 1, 10, 10, 10}, bf16: []int{1, 5, 5, 5, 1, 5, 5, 5}}
		for i := 0; i < 2; i++ {
			c := &calibration{key: "k", measure: s.measure, log: log}
			if !c.decide() {
				t.Fatal("want bf16")
			}
		}
		if len(s.calls) != 4*(calibrationRounds+1) {
			t.Fatalf("%d measurements, want two full calibrations", len(s.calls))
		}
	})
}

// TestBF16AutoRuntime runs the real calibration once through New and checks that the
// runtime does what the cached decision says (no timing is asserted).
func TestBF16AutoRuntime(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the calibration GEMMs")
	}
	dir := t.TempDir()
	rt, err := New(Options{Threads: 2, BF16: BF16Auto, CacheDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	on, err := New(Options{Threads: 2, BF16: BF16On})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "bf16-calibration.json"))
	if !on.BF16() {
		// No bfloat16 engine: auto is float32 and measures nothing.
		if rt.BF16() || err == nil {
			t.Fatalf("without bfloat16 compute: auto BF16 %v, cache file %v", rt.BF16(), err)
		}
		return
	}
	var m map[string]cachedDecision
	if err == nil {
		err = json.Unmarshal(b, &m)
	}
	d, ok := m[cpuModel()+" | "+codeVersion()]
	if err != nil || !ok || d.FP32NS <= 0 || d.BF16NS <= 0 {
		t.Fatalf("cache %s (%v)", b, err)
	}
	if rt.BF16() != d.BF16 || d.BF16 != (d.BF16NS < d.FP32NS) {
		t.Fatalf("runtime BF16 %v, cached %+v", rt.BF16(), d)
	}
	again, err := New(Options{Threads: 2, BF16: BF16Auto, CacheDir: dir})
	if err != nil || again.BF16() != d.BF16 {
		t.Fatalf("second runtime BF16 %v (%v), cached %v", again.BF16(), err, d.BF16)
	}
	if !strings.Contains(cpuModel(), "(") {
		t.Errorf("cpu model %q lacks the architecture", cpuModel())
	}
}

func TestParseBF16Mode(t *testing.T) {
	for in, want := range map[string]BF16Mode{"": BF16Off, "off": BF16Off, "0": BF16Off, "false": BF16Off,
		"on": BF16On, "1": BF16On, "true": BF16On, "ON": BF16On, "auto": BF16Auto, " Auto ": BF16Auto} {
		if got, err := ParseBF16Mode(in); err != nil || got != want {
			t.Errorf("ParseBF16Mode(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseBF16Mode("fast"); err == nil {
		t.Error("fast accepted")
	}
	for _, m := range []BF16Mode{BF16Off, BF16On, BF16Auto} {
		if got, _ := ParseBF16Mode(m.String()); got != m {
			t.Errorf("%v does not round-trip", m)
		}
	}
}

// TestGEMMOption: the GEMM path is an option; a bad one fails New instead of every op.
func TestGEMMOption(t *testing.T) {
	rt, err := New(Options{GEMM: "generic"})
	if err != nil || rt.GEMM() != "generic" {
		t.Fatalf("generic: %v, %v", rt, err)
	}
	if !rt.cpu.mm.generic() {
		t.Error("the generic path does not take the Go forms of the other kernels")
	}
	if _, err := New(Options{GEMM: "bogus"}); err == nil || !strings.Contains(err.Error(), `unknown path "bogus"`) {
		t.Errorf("bogus path: %v", err)
	}
	if def, err := New(Options{}); err != nil || def.GEMM() == "" || def.GEMM() == "auto" {
		t.Errorf("default path %q, %v", def.GEMM(), err)
	}
}

package gemm

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

const (
	kib = 1 << 10
	mib = 1 << 20
)

// TestDeriveBlocking sizes the blocking of each micro-kernel shape from
// given caches; the expected values follow the rules of deriveBlocking
// worked by hand.
func TestDeriveBlocking(t *testing.T) {
	cases := []struct {
		name           string
		mr, nr, panel  int
		c              Caches
		want           Blocking
		wantL3PerCore  int
		defaultsFilled bool
	}{
		// KC = min(24576/48, 24576/64) = 384, MC = 262144/1536 = 170 → 168,
		// NC = 2 MiB/1536 = 1365 → 1280 (fixed: 384, 192, 1024).
		{name: "zen5 avx512", mr: 12, nr: 32, panel: 2, c: Caches{L1D: 48 * kib, L2: mib, L3: 32 * mib, L3Sharing: 8}, want: Blocking{384, 168, 1280}, wantL3PerCore: 4 * mib},
		// This project's VM: AMD's 0x80000006 reports the package's 508 MiB
		// of L3 without a sharing count; the slice is capped at 4 MiB.
		{name: "zen5 vm, package L3", mr: 12, nr: 32, panel: 2, c: Caches{L1D: 48 * kib, L2: mib, L3: 1016 * 512 * kib}, want: Blocking{384, 168, 1280}, wantL3PerCore: 4 * mib},
		// Float32 panels (widened F16): KC = min(512, 24576/128 = 192) = 192,
		// MC = 512 KiB/768 = 682 → 672, NC = (105 MiB/56)/2/768 = 1280.
		{name: "sapphire rapids, float32 panels", mr: 12, nr: 32, panel: 4, c: Caches{L1D: 48 * kib, L2: 2 * mib, L3: 105 * mib, L3Sharing: 56}, want: Blocking{192, 672, 1280}, wantL3PerCore: 105 * mib / 56},
		{name: "sapphire rapids avx512 16-bit panels", mr: 12, nr: 32, panel: 2, c: Caches{L1D: 48 * kib, L2: 2 * mib, L3: 105 * mib, L3Sharing: 56}, want: Blocking{384, 336, 640}, wantL3PerCore: 105 * mib / 56},
		// KC = min(16384/24 = 682, 16384/32 = 512) = 512, MC = 131072/2048 = 64 → 60,
		// NC = 1 MiB/2048 = 512.
		{name: "32 KiB L1 avx2", mr: 6, nr: 16, panel: 2, c: Caches{L1D: 32 * kib, L2: 512 * kib, L3: 16 * mib, L3Sharing: 8}, want: Blocking{512, 60, 512}, wantL3PerCore: 2 * mib},
		// Nothing known: 32 KiB L1d, 1 MiB L2, 2 MiB of L3 per core.
		// KC = min(341, 256) = 256, MC = 262144/1024 = 256 → 252, NC = 1 MiB/1024 = 1024.
		{name: "missing information", mr: 12, nr: 32, panel: 2, c: Caches{}, want: Blocking{256, 252, 1024}, wantL3PerCore: 2 * mib, defaultsFilled: true},
		// Only L1d known (a CPUID that answers 0x80000005 only).
		{name: "l1 only", mr: 12, nr: 32, panel: 2, c: Caches{L1D: 48 * kib, Source: "cpuid"}, want: Blocking{384, 168, 640}, wantL3PerCore: 2 * mib, defaultsFilled: true},
		{name: "generic", mr: 4, nr: 8, panel: 4, c: Caches{L1D: 32 * kib, L2: mib, L3: 8 * mib, L3Sharing: 4}, want: Blocking{512, 128, 512}, wantL3PerCore: 2 * mib},
		// Absurd reports are clamped: KC ≤ 1024, MC ≥ 2·mr, NC ≥ 8·nr; and KC ≥ 64.
		{name: "absurd large", mr: 12, nr: 32, panel: 2, c: Caches{L1D: 1 << 30, L2: 4 * kib, L3: 64 * kib, L3Sharing: 1}, want: Blocking{1024, 24, 256}, wantL3PerCore: 64 * kib},
		{name: "absurd small", mr: 12, nr: 32, panel: 2, c: Caches{L1D: 1 * kib, L2: 1 << 30, L3: 1 << 30, L3Sharing: 1}, want: Blocking{64, 768, 8192}, wantL3PerCore: 4 * mib},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c.withDefaults()
			if got := c.L3PerCore(); got != tc.wantL3PerCore {
				t.Errorf("L3PerCore %d, want %d", got, tc.wantL3PerCore)
			}
			if filled := c.Source != tc.c.Source; filled != tc.defaultsFilled {
				t.Errorf("source %q from %q: defaults filled %v, want %v", c.Source, tc.c.Source, filled, tc.defaultsFilled)
			}
			got := deriveBlocking(tc.mr, tc.nr, tc.panel, c)
			if got != tc.want {
				t.Fatalf("derived %+v, want %+v", got, tc.want)
			}
			if got.MC%tc.mr != 0 || got.NC%tc.nr != 0 || got.KC%32 != 0 {
				t.Fatalf("%+v: MC not a multiple of mr %d, NC of nr %d or KC of 32", got, tc.mr, tc.nr)
			}
		})
	}
}

// TestSysfsCaches reads a Linux cache description written into a
// temporary directory.
func TestSysfsCaches(t *testing.T) {
	dir := t.TempDir()
	write := func(index, level, typ, size, shared string) {
		d := filepath.Join(dir, index)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, v := range map[string]string{"level": level, "type": typ, "size": size, "shared_cpu_list": shared} {
			if v == "" {
				continue
			}
			if err := os.WriteFile(filepath.Join(d, name), []byte(v+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("index0", "1", "Data", "48K", "0")
	write("index1", "1", "Instruction", "32K", "0")
	write("index2", "2", "Unified", "1024K", "0")
	write("index3", "3", "Unified", "32768K", "0-3,8-11")
	got := sysfsCaches(dir)
	want := Caches{L1D: 48 * kib, L2: mib, L3: 32 * mib, L3Sharing: 8, Source: "sysfs"}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if got := sysfsCaches(filepath.Join(dir, "absent")); got != (Caches{}) {
		t.Fatalf("absent directory: %+v", got)
	}
	// A size that does not parse is unknown, not zero-sized.
	bad := t.TempDir()
	dir = bad
	write("index0", "1", "Data", "lots", "0")
	write("index2", "2", "Unified", "2M", "")
	if got := sysfsCaches(bad); got != (Caches{L2: 2 * mib, Source: "sysfs"}) {
		t.Fatalf("bad size: %+v", got)
	}
	// CPUID's answer wins; sysfs fills the rest.
	m := Caches{L1D: 32 * kib, Source: "cpuid"}.merge(want)
	if m != (Caches{L1D: 32 * kib, L2: mib, L3: 32 * mib, L3Sharing: 8, Source: "cpuid+sysfs"}) {
		t.Fatalf("merge: %+v", m)
	}
}

func TestParseCacheSize(t *testing.T) {
	for in, want := range map[string]int{"48K": 48 * kib, "2M": 2 * mib, "1G": 1 << 30, "4096": 4096, "": 0, "K": 0, "-1K": 0, "12Q": 0, "99999999999999G": 0} {
		if got := parseCacheSize(in); got != want {
			t.Errorf("parseCacheSize(%q) = %d, want %d", in, got, want)
		}
	}
	for in, want := range map[string]int{"0": 1, "0-7": 8, "0-3,8-11": 8, "1,3,5": 3, "": 0, "3-1": 0, "a": 0} {
		if got := countCPUs(in); got != want {
			t.Errorf("countCPUs(%q) = %d, want %d", in, got, want)
		}
	}
}

// TestDetectCaches checks that this machine's caches are filled and that
// the default engine's blocking is the one derived from them.
func TestDetectCaches(t *testing.T) {
	c := DetectCaches()
	t.Logf("caches: %+v, L3 per core %d KiB", c, c.L3PerCore()>>10)
	if c.L1D <= 0 || c.L2 <= 0 || c.L3PerCore() <= 0 || c.Source == "" {
		t.Fatalf("caches not filled: %+v", c)
	}
	for _, p := range []Path{PathGeneric, PathAVX2, PathAVX512} {
		if !Available(p) {
			continue
		}
		e, err := New(Options{Path: p})
		if err != nil {
			t.Fatal(err)
		}
		panel := 4
		if e.k.tilePH != nil {
			panel = 2
		}
		if got, want := e.Blocking(), deriveBlocking(e.k.mr, e.k.nr, panel, c); got != want {
			t.Errorf("%s: default blocking %+v, derived %+v", p, got, want)
		}
		f, err := New(Options{Path: p, Source: BlockingFixed})
		if err != nil {
			t.Fatal(err)
		}
		k, _ := selectKernel(p)
		if got := f.Blocking(); got != (Blocking{k.kc, k.mc, k.nc}) {
			t.Errorf("%s: fixed blocking %+v, want the kernel's %d/%d/%d", p, got, k.kc, k.mc, k.nc)
		}
		t.Logf("%s: derived %+v, fixed %+v", p, e.Blocking(), f.Blocking())
	}
	if _, err := New(Options{Source: BlockingSource(7)}); err == nil {
		t.Fatal("unknown blocking source accepted")
	}
}

// TestCalibrate runs the calibration on tiny shapes: the derived blocking
// is timed first, the candidates around it follow, and the choice is one
// of them.
func TestCalibrate(t *testing.T) {
	for _, p := range []Path{PathGeneric, PathAVX2, PathAVX512} {
		if !Available(p) {
			continue
		}
		cal, err := calibrate(Options{Path: p, Threads: 2}, []calibrationShape{{40, 70, 100}, {13, 300, 33}}, 1)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %+v", p, cal)
		if len(cal.Candidates) < 2 || cal.Candidates[0].Blocking != cal.Derived {
			t.Fatalf("%s: candidates %+v: want the derived %+v first and others", p, cal.Candidates, cal.Derived)
		}
		found := false
		for _, c := range cal.Candidates {
			found = found || c.Blocking == cal.Chosen
			if c.Best <= 0 {
				t.Errorf("%s: candidate %+v not timed", p, c)
			}
		}
		if !found {
			t.Errorf("%s: chosen %+v is no candidate", p, cal.Chosen)
		}
	}
}

// TestCalibrationCandidates lists the candidates around a derived blocking
// and leaves out duplicates.
func TestCalibrationCandidates(t *testing.T) {
	d := Blocking{384, 168, 1280}
	got := calibrationCandidates(d, Blocking{384, 192, 1024})
	want := []Blocking{{288, 224, 1706}, {512, 126, 960}, {384, 192, 1024}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if got := calibrationCandidates(d, d); len(got) != 2 {
		t.Fatalf("fixed = derived: %v, want 2 candidates", got)
	}
}

// TestCalibratedBlockingCorrect multiplies with every blocking the
// calibration may choose, scaled down as the tiny-blocking engines of
// enginesUnderTest are (so that small sizes reach every loop level), and
// with the blocking a real calibration chose at full size.
func TestCalibratedBlockingCorrect(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	shapes := []shape{{7, 9, 5}, {50, 130, 90}, {97, 70, 200}}
	type engine struct {
		name string
		e    *Engine
	}
	var es []engine
	for _, p := range []Path{PathGeneric, PathAVX2, PathAVX512} {
		if !Available(p) {
			continue
		}
		tiny := Blocking{KC: 64, MC: 24, NC: 64}
		for _, b := range append([]Blocking{tiny}, calibrationCandidates(tiny, Blocking{KC: 16, MC: 24, NC: 64})...) {
			e, err := New(Options{Path: p, Threads: 2, Blocking: b})
			if err != nil {
				t.Fatal(err)
			}
			es = append(es, engine{fmt.Sprintf("%s-%d-%d-%d", p, b.KC, b.MC, b.NC), e})
		}
	}
	if !testing.Short() {
		cal, err := calibrate(Options{Threads: 2}, []calibrationShape{{64, 400, 300}}, 1)
		if err != nil {
			t.Fatal(err)
		}
		e, err := New(Options{Threads: 2, Blocking: cal.Chosen})
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, engine{"calibrated", e})
		b := cal.Chosen
		shapes = append(shapes, shape{b.MC + 13, b.NC + 40, b.KC + 70})
	}
	for _, e := range es {
		for _, sh := range shapes {
			t.Run(fmt.Sprintf("%s/%dx%dx%d", e.name, sh.m, sh.n, sh.k), func(t *testing.T) {
				m, n, k := sh.m, sh.n, sh.k
				a, b := randSlice(r, m*k), randSlice(r, k*n)
				c := randSlice(r, m*n)
				want, mag := refGEMM(false, false, m, n, k, a, k, b, n, c, n, true)
				if err := e.e.SGEMM(m, n, k, a, k, b, n, c, n, true); err != nil {
					t.Fatal(err)
				}
				checkClose(t, m, n, k, c, n, want, mag)
				// Linear with a packed F16 weight (the UNet's path) and unpacked.
				data, wf := testWeight(r, F16, n, k)
				w := Weight{DType: F16, N: n, K: k, Data: data}
				y := make([]float32, m*n)
				want, mag = refGEMM(false, true, m, n, k, a, k, wf, k, y, n, false)
				if e.e.CanPack(F16) {
					pk, err := e.e.Pack(w)
					if err != nil {
						t.Fatal(err)
					}
					w.Packed = pk
				}
				if err := e.e.Linear(m, a, k, w, y, n, false); err != nil {
					t.Fatal(err)
				}
				checkClose(t, m, n, k, y, n, want, mag)
			})
		}
	}
}

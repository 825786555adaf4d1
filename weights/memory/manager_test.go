package memory

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// fakeMeminfo writes a meminfo file and returns its path.
func fakeMeminfo(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "meminfo")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadMeminfo(t *testing.T) {
	cases := []struct {
		name, text  string
		total, free int64
		err         string
	}{
		{"modern", "MemTotal:       24000000 kB\nMemFree:         1000000 kB\nMemAvailable:   20000000 kB\nCached: 5 kB\n", 24000000 * 1024, 20000000 * 1024, ""},
		{"old kernel", "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 200 kB\n", 1000 * 1024, 310 * 1024, ""},
		{"no total", "MemFree: 100 kB\n", 0, 0, "no MemTotal"},
		{"garbage", "MemTotal: lots kB\n", 0, 0, "bad value"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadMeminfo(fakeMeminfo(t, tc.text))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Total != tc.total || got.Available != tc.free {
				t.Fatalf("got %+v, want total %d free %d", got, tc.total, tc.free)
			}
		})
	}
	if _, err := os.Stat("/proc/meminfo"); err == nil {
		ram, err := ReadMeminfo("/proc/meminfo")
		if err != nil || ram.Total <= 0 || ram.Available <= 0 || ram.Available > ram.Total {
			t.Fatalf("real meminfo: %+v %v", ram, err)
		}
	}
}

// counter is a fake model: it records loads and closes.
type counter struct {
	loads  atomic.Int32
	closes sync.Map // id string → close count
}

func (c *counter) loader(name string, bytes int64) Loader {
	return func(ctx context.Context) (Loaded, error) {
		c.loads.Add(1)
		return Loaded{Value: name, Bytes: bytes, Close: func() error {
			v, _ := c.closes.LoadOrStore(name, new(atomic.Int32))
			v.(*atomic.Int32).Add(1)
			return nil
		}}, nil
	}
}

func (c *counter) closed(name string) int32 {
	v, ok := c.closes.Load(name)
	if !ok {
		return 0
	}
	return v.(*atomic.Int32).Load()
}

func id(name string, size int64) Identity {
	return Identity{Path: "/m/" + name, Size: size, ModTime: time.Unix(1700000000, 0)}
}

func TestLoadCachesAndEvictsLRU(t *testing.T) {
	ctx := context.Background()
	m := New(Options{RAMBudget: 100, MeminfoPath: fakeMeminfo(t, "MemTotal: 1000 kB\nMemAvailable: 500 kB\n")})
	var c counter
	get := func(name string, size int64) *Handle {
		t.Helper()
		h, err := m.Load(ctx, id(name, size), c.loader(name, size))
		if err != nil {
			t.Fatal(err)
		}
		if h.Value() != name {
			t.Fatalf("value %v, want %s", h.Value(), name)
		}
		return h
	}
	get("a", 40).Release()
	get("b", 40).Release()
	get("a", 40).Release() // hit: a is now the most recent
	if n := c.loads.Load(); n != 2 {
		t.Fatalf("loads = %d, want 2 (a cached)", n)
	}
	get("c", 40).Release() // 120 > 100: evicts b, the least recently used
	if c.closed("b") != 1 || c.closed("a") != 0 {
		t.Fatalf("closed a=%d b=%d, want b evicted", c.closed("a"), c.closed("b"))
	}
	st := m.Stats()
	if st.ModelRAM != 80 || len(st.Models) != 2 || st.Models[0].Path != "/m/c" || st.Models[1].Path != "/m/a" {
		t.Fatalf("stats = %+v", st)
	}
	if st.RAMTotal != 1000*1024 || st.RAMFree != 500*1024 || st.RAMBudget != 100 {
		t.Fatalf("ram numbers = %+v", st)
	}

	// A pinned model is never evicted, even when the budget is exceeded.
	ha := get("a", 40)
	get("d", 90).Release() // wants 130: evicts c (unpinned), a stays though still over
	if c.closed("a") != 0 || c.closed("c") != 1 {
		t.Fatalf("closed a=%d c=%d", c.closed("a"), c.closed("c"))
	}
	// UnloadAll drops d now and a when its handle is released.
	m.UnloadAll()
	if c.closed("d") != 1 || c.closed("a") != 0 {
		t.Fatalf("after UnloadAll: d=%d a=%d", c.closed("d"), c.closed("a"))
	}
	if got := m.Stats().ModelRAM; got != 40 {
		t.Fatalf("ModelRAM with a pinned = %d, want 40", got)
	}
	ha.Release()
	ha.Release() // twice is harmless
	if c.closed("a") != 1 {
		t.Fatalf("a closed %d times after release, want 1", c.closed("a"))
	}
	if st := m.Stats(); st.ModelRAM != 0 || len(st.Models) != 0 {
		t.Fatalf("after releasing everything: %+v", st)
	}
}

func TestChangedFileReloads(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	f := filepath.Join(dir, "m.safetensors")
	if err := os.WriteFile(f, []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := New(Options{RAMBudget: -1})
	var c counter
	id1, err := IdentityOf(f, "unet")
	if err != nil {
		t.Fatal(err)
	}
	h, _ := m.Load(ctx, id1, c.loader("v1", 3))
	h.Release()
	h, _ = m.Load(ctx, id1, c.loader("v1", 3))
	h.Release()
	if c.loads.Load() != 1 {
		t.Fatalf("unchanged file loaded %d times", c.loads.Load())
	}
	if err := os.WriteFile(f, []byte("two!"), 0o644); err != nil {
		t.Fatal(err)
	}
	id2, _ := IdentityOf(f, "unet")
	if id2 == id1 {
		t.Fatal("identity did not change with the file")
	}
	h, _ = m.Load(ctx, id2, c.loader("v2", 4))
	defer h.Release()
	if h.Value() != "v2" || c.closed("v1") != 1 {
		t.Fatalf("value %v, v1 closed %d: the stale model must go", h.Value(), c.closed("v1"))
	}
	// Another part of the same file is a separate entry.
	idVAE, _ := IdentityOf(f, "vae")
	hv, _ := m.Load(ctx, idVAE, c.loader("vae", 1))
	defer hv.Release()
	if len(m.Stats().Models) != 2 {
		t.Fatalf("models = %+v", m.Stats().Models)
	}
	if _, err := IdentityOf(dir, ""); err == nil {
		t.Fatal("a directory has no identity")
	}
}

func TestConcurrentLoadsRunOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := New(Options{RAMBudget: -1})
		var loads atomic.Int32
		release := make(chan struct{})
		load := func(ctx context.Context) (Loaded, error) {
			loads.Add(1)
			<-release
			return Loaded{Value: 7, Bytes: 1}, nil
		}
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Go(func() {
				h, err := m.Load(context.Background(), id("x", 1), load)
				if err != nil {
					errs <- err
					return
				}
				if h.Value() != 7 {
					errs <- fmt.Errorf("value %v", h.Value())
				}
				h.Release()
			})
		}
		synctest.Wait() // one load is running, the seven others wait for it
		close(release)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if loads.Load() != 1 {
			t.Fatalf("loader ran %d times", loads.Load())
		}
	})
}

func TestLoadErrors(t *testing.T) {
	m := New(Options{RAMBudget: -1})
	boom := errors.New("truncated header")
	_, err := m.Load(context.Background(), id("bad", 1), func(context.Context) (Loaded, error) { return Loaded{}, boom })
	if !errors.Is(err, boom) || !errors.Is(err, ErrLoadFailed) || !strings.Contains(err.Error(), "/m/bad") {
		t.Fatalf("err = %v", err)
	}
	// Not cached: the next load tries again.
	h, err := m.Load(context.Background(), id("bad", 1), func(context.Context) (Loaded, error) { return Loaded{Value: 1}, nil })
	if err != nil {
		t.Fatal(err)
	}
	h.Release()

	_, err = m.Load(context.Background(), id("panic", 1), func(context.Context) (Loaded, error) { panic("index out of range") })
	if err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("panic err = %v", err)
	}

	// A waiter whose context ends stops waiting.
	started := make(chan struct{})
	unblock := make(chan struct{})
	go func() {
		h, err := m.Load(context.Background(), id("slow", 1), func(context.Context) (Loaded, error) {
			close(started)
			<-unblock
			return Loaded{Value: 1}, nil
		})
		if err == nil {
			h.Release()
		}
	}()
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Load(ctx, id("slow", 1), nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter err = %v", err)
	}
	close(unblock)
}

type fakeDevice struct{ freed atomic.Int32 }

func (d *fakeDevice) DeviceStats() DeviceStats {
	return DeviceStats{Name: "cuda:0 Fake", Type: "cuda", VRAMTotal: 8 << 30, VRAMFree: 6 << 30}
}
func (d *fakeDevice) FreeCache() { d.freed.Add(1) }

func TestDevicesAndFreeMemory(t *testing.T) {
	m := New(Options{MeminfoPath: fakeMeminfo(t, "MemTotal: 4000 kB\nMemAvailable: 1000 kB\n")})
	if m.Budget() != 3000*1024 {
		t.Fatalf("default budget = %d, want 3/4 of total", m.Budget())
	}
	if len(m.Stats().Devices) != 0 {
		t.Fatal("cpu-only manager reports devices")
	}
	cpu := m.Stats().ComfyUIDevices()
	if len(cpu) != 1 || cpu[0].Type != "cpu" || cpu[0].Index != -1 || cpu[0].VRAMTotal != 4000*1024 || cpu[0].TorchVRAMFree != 1000*1024 {
		t.Fatalf("cpu device = %+v", cpu)
	}
	d := &fakeDevice{}
	m.AddDevice(d)
	var c counter
	h, _ := m.Load(context.Background(), id("a", 1), c.loader("a", 1))
	h.Release()
	m.FreeMemory()
	st := m.Stats()
	if len(st.Devices) != 1 || st.Devices[0].VRAMFree != 6<<30 || d.freed.Load() != 1 || st.ComfyUIDevices()[0].Type != "cuda" {
		t.Fatalf("devices %+v freed %d", st.Devices, d.freed.Load())
	}
	if c.closed("a") != 1 || len(st.Models) != 0 {
		t.Fatal("FreeMemory kept a model")
	}
	if avail, err := m.AvailableRAM(); err != nil || avail != 1000*1024 {
		t.Fatalf("AvailableRAM = %d, %v", avail, err)
	}
	// Unreadable meminfo: unlimited budget and zero RAM numbers, never a failure.
	m2 := New(Options{MeminfoPath: filepath.Join(t.TempDir(), "none")})
	if m2.Budget() >= 0 || m2.Stats().RAMTotal != 0 {
		t.Fatalf("budget %d stats %+v", m2.Budget(), m2.Stats())
	}
	if _, err := m2.AvailableRAM(); err == nil {
		t.Fatal("AvailableRAM without meminfo gave no error")
	}
}

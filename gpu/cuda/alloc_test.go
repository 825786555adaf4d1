package cuda

import (
	"errors"
	"testing"
)

// fakeMemory is a device of fixed capacity with bump-pointer addresses.
type fakeMemory struct {
	capacity, used uint64
	next           uint64
	live           map[uint64]uint64
	allocs, frees  int
}

func (f *fakeMemory) alloc(n uint64) (uint64, error) {
	if f.used+n > f.capacity {
		return 0, errors.New("CUDA_ERROR_OUT_OF_MEMORY")
	}
	if f.live == nil {
		f.live, f.next = map[uint64]uint64{}, 1<<32
	}
	p := f.next
	f.next += n
	f.used += n
	f.live[p] = n
	f.allocs++
	return p, nil
}

func (f *fakeMemory) free(p uint64) error {
	n, ok := f.live[p]
	if !ok {
		return errors.New("double free")
	}
	delete(f.live, p)
	f.used -= n
	f.frees++
	return nil
}

func TestSizeClass(t *testing.T) {
	for _, tc := range []struct{ n, want uint64 }{
		{0, 512}, {1, 512}, {512, 512}, {513, 1024}, {1<<20 - 1, 1 << 20}, {1 << 20, 1 << 20},
		{1<<20 + 1, 1<<20 + 16<<10}, {100 << 20, 100 << 20}, {100<<20 + 1, 101 << 20},
	} {
		if got := sizeClass(tc.n); got != tc.want {
			t.Errorf("sizeClass(%d) = %d, want %d", tc.n, got, tc.want)
		}
		if c := sizeClass(tc.n); c < tc.n || (tc.n > 4096 && float64(c-tc.n) > 0.016*float64(tc.n)+512) {
			t.Errorf("sizeClass(%d) = %d wastes too much", tc.n, c)
		}
	}
}

func TestDevicePool(t *testing.T) {
	raw := &fakeMemory{capacity: 10 << 20}
	p := newDevicePool(raw)
	a, ca, err := p.get(3 << 20)
	if err != nil {
		t.Fatal(err)
	}
	b, cb, err := p.get(1000)
	if err != nil {
		t.Fatal(err)
	}
	if r, act, _ := p.stats(); r != ca+cb || act != ca+cb {
		t.Fatalf("stats %d %d", r, act)
	}
	p.put(a, ca)
	// same class again: reused without the driver
	a2, _, err := p.get(3<<20 - 100)
	if err != nil || a2 != a || raw.allocs != 2 {
		t.Fatalf("not reused: %x vs %x, %d allocs, %v", a2, a, raw.allocs, err)
	}
	p.put(a2, ca)
	// a request that does not fit while idle blocks are held: trim and retry
	big, cbig, err := p.get(8 << 20)
	if err != nil {
		t.Fatalf("trim and retry failed: %v", err)
	}
	if raw.frees != 1 {
		t.Errorf("%d frees, want the one idle block freed", raw.frees)
	}
	if _, _, err := p.get(5 << 20); !errors.Is(err, errOutOfMemory) {
		t.Fatalf("over capacity: %v", err)
	}
	p.put(big, cbig)
	p.put(b, cb)
	if r, act, peak := p.stats(); act != 0 || r != cbig+cb || peak < cbig {
		t.Errorf("after puts: reserved %d active %d peak %d", r, act, peak)
	}
	p.trim()
	if r, _, _ := p.stats(); r != 0 || raw.used != 0 {
		t.Errorf("after trim: reserved %d, device used %d", r, raw.used)
	}
}

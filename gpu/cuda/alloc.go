package cuda

import (
	"errors"
	"sync"
)

// rawMemory is what the pool allocates from: the device (cuMemAlloc/cuMemFree) or, in
// tests, a fake with a fixed capacity.
type rawMemory interface {
	alloc(n uint64) (uint64, error)
	free(p uint64) error
}

// errOutOfMemory marks an allocation the device could not satisfy even after the pool
// returned its idle blocks.
var errOutOfMemory = errors.New("cuda: out of device memory")

// devicePool is the one allocator of a device: blocks are rounded up to a size class and
// kept on a free list when released, so a sampling step that asks for the sizes of the
// previous step never calls the driver (cuMemAlloc synchronises the device). When the
// device is full it frees every idle block and tries once more.
type devicePool struct {
	raw rawMemory

	mu       sync.Mutex
	free     map[uint64][]uint64 // size class → idle blocks
	reserved uint64              // bytes held from the device
	active   uint64              // bytes handed out
	peak     uint64
}

func newDevicePool(raw rawMemory) *devicePool {
	return &devicePool{raw: raw, free: map[uint64][]uint64{}}
}

// sizeClass rounds n up to a multiple of 1/64 of its power of two (at least 512 bytes),
// so neighbouring sizes share blocks while the waste stays under 1.6 %.
func sizeClass(n uint64) uint64 {
	step := uint64(512)
	for p := uint64(1) << 15; p <= n/2 && p > 0; p <<= 1 {
		step = p / 32 // p ≤ n/2 < 2p: step = 2p/64
	}
	return max((n+step-1)/step*step, 512)
}

// get returns a block of at least n bytes and its size class.
func (p *devicePool) get(n uint64) (uint64, uint64, error) {
	c := sizeClass(n)
	p.mu.Lock()
	if l := p.free[c]; len(l) > 0 {
		ptr := l[len(l)-1]
		p.free[c] = l[:len(l)-1]
		p.active += c
		p.peak = max(p.peak, p.active)
		p.mu.Unlock()
		return ptr, c, nil
	}
	p.mu.Unlock()
	ptr, err := p.raw.alloc(c)
	if err != nil {
		p.trim()
		if ptr, err = p.raw.alloc(c); err != nil {
			return 0, 0, errors.Join(errOutOfMemory, err)
		}
	}
	p.mu.Lock()
	p.reserved += c
	p.active += c
	p.peak = max(p.peak, p.active)
	p.mu.Unlock()
	return ptr, c, nil
}

// put keeps a block of size class c for reuse.
func (p *devicePool) put(ptr, c uint64) {
	p.mu.Lock()
	p.free[c] = append(p.free[c], ptr)
	p.active -= c
	p.mu.Unlock()
}

// trim returns every idle block to the device.
func (p *devicePool) trim() {
	p.mu.Lock()
	free := p.free
	p.free = map[uint64][]uint64{}
	p.mu.Unlock()
	for c, l := range free {
		for _, ptr := range l {
			if err := p.raw.free(ptr); err == nil {
				p.mu.Lock()
				p.reserved -= c
				p.mu.Unlock()
			}
		}
	}
}

// stats reports bytes held from the device and bytes in use (torch's reserved and
// allocated).
func (p *devicePool) stats() (reserved, active, peak uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reserved, p.active, p.peak
}

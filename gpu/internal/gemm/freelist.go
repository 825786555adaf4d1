package gemm

import "sync"

// freeListMax bounds a freeList: a few buffers per worker of the largest machines.
const freeListMax = 64

// freeList keeps released buffers for the next call, across garbage collections. A
// sync.Pool empties at every collection, and a sampling step both collects (its tensor
// headers) and needs every workspace again, so with one the step re-allocated and
// re-zeroed megabytes of workspaces and panels each time (TestSteadyStateStep in
// diffusion/unet measures it). Entries beyond freeListMax are left to the collector.
type freeList[T any] struct {
	mu   sync.Mutex
	free []T
}

// get returns the most recently released entry for which fit is true (any entry when
// fit is nil), removing it from the list.
func (f *freeList[T]) get(fit func(T) bool) (T, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.free) - 1; i >= 0; i-- {
		if x := f.free[i]; fit == nil || fit(x) {
			last := len(f.free) - 1
			f.free[i] = f.free[last]
			var zero T
			f.free[last] = zero
			f.free = f.free[:last]
			return x, true
		}
	}
	var zero T
	return zero, false
}

// put releases x for reuse.
func (f *freeList[T]) put(x T) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.free) < freeListMax {
		f.free = append(f.free, x)
	}
}

package gpu

import (
	"reflect"
	"sync"

	"github.com/forgeflow/forgeflow/gpu/internal/par"
)

// The cpu backend's kernels hand their parallel loops to the backend's worker pool
// (gpu/internal/par): Threads−1 goroutines started with the backend, parked between
// loops, each taking the same fixed part of every loop. A loop's operands travel in a
// struct (the type parameter A of forEach) copied into a slot that the backend reuses,
// and its body is a function literal that captures nothing, so handing a loop over
// allocates nothing; a closure that captured the operands would be allocated for every
// loop, since the workers outlive the caller's stack frame as far as the compiler knows.

// loopSlot is one loop's operands and body, reused through the backend's free lists.
type loopSlot[A any] struct {
	a   A
	fn  func(a *A, w, lo, hi int) error
	mu  sync.Mutex
	err error // the first error a part returned
}

// Run implements par.Task.
func (s *loopSlot[A]) Run(w, lo, hi int) {
	if err := s.fn(&s.a, w, lo, hi); err != nil {
		s.mu.Lock()
		if s.err == nil {
			s.err = err
		}
		s.mu.Unlock()
	}
}

// forEach runs fn over the parts of [0, n), each at least grain items (the last may be
// shorter), on up to c.threads goroutines (the caller's included): part w is
// [n·w/parts, n·(w+1)/parts) with 0 ≤ w < c.threads, fn(a, w, lo, hi) is called once per
// part with a pointer to a copy of a, and forEach returns the first error a part
// returned once all have finished. fn must capture no variables (everything it reads
// goes in a): a capturing literal would be allocated on every call. A panic in fn is
// raised again on the caller's goroutine.
func forEach[A any](c *CPU, n, grain int, a A, fn func(a *A, w, lo, hi int) error) error {
	if n <= 0 {
		return nil
	}
	l := slotList[A](c)
	s := l.get()
	s.a, s.fn = a, fn
	c.pool.Run(n, grain, s)
	err := s.err
	var zero A
	s.a, s.fn, s.err = zero, nil, nil
	l.put(s)
	return err
}

// parts reports how many parts forEach splits n items of at least grain each into.
func (c *CPU) parts(n, grain int) int { return c.pool.Parts(n, grain) }

// slotLists holds one free list of loop slots per operand type (reflect.Type →
// *freeList[loopSlot[A]]): a list holds one slot per loop of that type in flight at
// most (the pool's loop, loops that found it busy, loops nested in its parts).
type slotLists struct{ m sync.Map }

func slotList[A any](c *CPU) *freeList[loopSlot[A]] {
	key := reflect.TypeFor[A]()
	if l, ok := c.slots.m.Load(key); ok {
		return l.(*freeList[loopSlot[A]])
	}
	l, _ := c.slots.m.LoadOrStore(key, new(freeList[loopSlot[A]]))
	return l.(*freeList[loopSlot[A]])
}

// freeList recycles *T values of a backend (loop slots, per-worker scratch) across
// calls and garbage collections (a sync.Pool is emptied by them).
type freeList[T any] struct {
	mu   sync.Mutex
	free []*T
}

// get returns a released value, or a new zero one.
func (f *freeList[T]) get() *T {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := len(f.free); n > 0 {
		s := f.free[n-1]
		f.free[n-1] = nil
		f.free = f.free[:n-1]
		return s
	}
	return new(T)
}

// freeListMax bounds a list: values beyond it (after a burst of concurrent callers) are
// left to the collector.
const freeListMax = 32

// put releases s for reuse.
func (f *freeList[T]) put(s *T) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.free) < freeListMax {
		f.free = append(f.free, s)
	}
}

var _ par.Task = (*loopSlot[struct{}])(nil)

// Package par is the cpu backend's worker pool: goroutines started once per backend,
// parked while idle, and handed one parallel loop at a time, split statically (worker w
// always gets the w-th contiguous part of the loop). Handing a loop over costs a channel
// send per worker and one receive, and allocates nothing: the loop is a Task value the
// caller keeps (a pointer to a struct it reuses), never a closure made per call.
//
// It imports nothing from forgeflow; gpu and gpu/internal/gemm share one Pool per backend.
package par

import (
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
)

// Task is one parallel loop. Run computes the items [lo, hi) as worker w (0 ≤ w < the
// parts Pool.Run reports); each w is called exactly once per loop, from one goroutine,
// so a task may keep per-worker scratch indexed by w.
type Task interface {
	Run(w, lo, hi int)
}

// Pool runs Tasks on a fixed set of worker goroutines and the caller's own. It is safe
// for concurrent use: one loop runs on the workers at a time, and a caller that finds
// them busy (another goroutine's loop, or a loop started from inside a Task) runs its
// loop alone on its own goroutine, so nesting cannot deadlock. Close stops the workers;
// a closed Pool still runs every loop, on the caller's goroutine.
type Pool struct {
	threads int
	spawn   bool       // NewSpawning: a goroutine per part instead of the workers
	mu      sync.Mutex // held by the goroutine whose loop the workers run
	closed  bool       // under mu
	wake    []chan struct{}
	exited  sync.WaitGroup

	// the current loop, written under mu before the workers are woken
	task     Task
	n, parts int
	pending  atomic.Int32  // parts not yet finished, the caller's included
	done     chan struct{} // the last worker to finish tells a waiting caller
	panics   []workerPanic // per worker: what its part panicked with, if it did
	panicked atomic.Bool   // some worker of the current loop panicked
}

type workerPanic struct {
	val   any
	stack []byte
}

// New returns a Pool that runs loops on up to threads goroutines, the caller's
// included (threads−1 workers; none for threads ≤ 1).
func New(threads int) *Pool {
	threads = max(threads, 1)
	p := &Pool{threads: threads, done: make(chan struct{}, 1), panics: make([]workerPanic, threads)}
	p.wake = make([]chan struct{}, threads-1)
	for i := range p.wake {
		ch := make(chan struct{}, 1)
		p.wake[i] = ch
		p.exited.Add(1)
		go p.work(i+1, ch)
	}
	return p
}

// NewSpawning returns a Pool without workers that starts a goroutine for each part of a
// loop, as plain go statements do: slower, but the goroutines inherit the caller's pprof
// labels, which parked workers cannot, so a per-op CPU profile (gpu.Options.OpLabels)
// still charges the parts to their op.
func NewSpawning(threads int) *Pool {
	threads = max(threads, 1)
	return &Pool{threads: threads, spawn: true, done: make(chan struct{}, 1), panics: make([]workerPanic, threads)}
}

// Threads reports how many goroutines a loop may use, the caller's included.
func (p *Pool) Threads() int { return p.threads }

// Close stops the workers once the loop in flight (if any) has finished and returns when
// they have exited. Loops run after Close run on their caller's goroutine. Close may be
// called more than once.
func (p *Pool) Close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		for _, ch := range p.wake {
			close(ch)
		}
	}
	p.mu.Unlock()
	p.exited.Wait()
}

// Parts reports how many parts Run splits a loop of n items with at least grain items
// per part into: min(Threads, ⌈n/grain⌉), at least 1 for n > 0.
func (p *Pool) Parts(n, grain int) int {
	if n <= 0 {
		return 0
	}
	return min(p.threads, (n+max(grain, 1)-1)/max(grain, 1))
}

// Run splits [0, n) into Parts(n, grain) contiguous parts, part w = [n·w/parts,
// n·(w+1)/parts), runs part 0 on the caller's goroutine and the others on the workers,
// and returns the number of parts once every part has finished. When the workers are
// busy or closed the whole loop runs as part 0 on the caller's goroutine (and Run
// returns 1). A panic in any part is raised again on the caller's goroutine once all
// parts have stopped, with the worker's stack in the message; the workers stay usable.
func (p *Pool) Run(n, grain int, t Task) int {
	parts := p.Parts(n, grain)
	if parts == 0 {
		return 0
	}
	if parts == 1 || !p.mu.TryLock() {
		t.Run(0, 0, n)
		return 1
	}
	if p.closed {
		p.mu.Unlock()
		t.Run(0, 0, n)
		return 1
	}
	p.task, p.n, p.parts = t, n, parts
	p.pending.Store(int32(parts))
	for w := 1; w < parts; w++ {
		if p.spawn {
			go p.runPart(w)
		} else {
			p.wake[w-1] <- struct{}{}
		}
	}
	p.callerPart(t, n/parts)
	p.task = nil
	if p.panicked.Load() {
		p.raise()
	}
	p.mu.Unlock()
	return parts
}

// callerPart runs part 0 and waits for the workers; when part 0 panics it still waits
// for them (they write into the caller's memory) and lets go of the pool before the
// panic goes on.
func (p *Pool) callerPart(t Task, hi int) {
	finished := false
	defer func() {
		if !finished {
			p.wait()
			p.task = nil
			p.clearPanics()
			p.mu.Unlock()
		}
	}()
	t.Run(0, 0, hi)
	finished = true
	p.wait()
}

// wait retires the caller's part and blocks until the workers' parts are done.
func (p *Pool) wait() {
	if p.pending.Add(-1) != 0 {
		<-p.done
	}
}

// raise clears the recorded worker panics, lets go of the pool and panics with the first.
func (p *Pool) raise() {
	var first workerPanic
	for w := range p.panics {
		if first.val == nil && p.panics[w].val != nil {
			first = p.panics[w]
		}
	}
	p.clearPanics()
	p.mu.Unlock()
	panic(fmt.Sprintf("par: worker panicked: %v\n\nworker stack:\n%s", first.val, first.stack))
}

func (p *Pool) clearPanics() {
	clear(p.panics)
	p.panicked.Store(false)
}

// work is worker w's goroutine: one part per wake-up until its channel is closed.
func (p *Pool) work(w int, wake <-chan struct{}) {
	defer p.exited.Done()
	for range wake {
		p.runPart(w)
	}
}

// runPart runs worker w's part of the current loop, recording a panic instead of
// letting it end the process, and signals the caller when it is the last to finish.
func (p *Pool) runPart(w int) {
	defer func() {
		if r := recover(); r != nil {
			p.panics[w] = workerPanic{val: r, stack: debug.Stack()}
			p.panicked.Store(true)
		}
		if p.pending.Add(-1) == 0 {
			p.done <- struct{}{}
		}
	}()
	n, parts := p.n, p.parts
	p.task.Run(w, n*w/parts, n*(w+1)/parts)
}

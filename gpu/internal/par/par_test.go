package par

import (
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// markTask records which worker covered each item.
type markTask struct {
	owner []int32
	calls atomic.Int32
}

func (t *markTask) Run(w, lo, hi int) {
	t.calls.Add(1)
	for i := lo; i < hi; i++ {
		t.owner[i] = int32(w) + 1
	}
}

func TestRunCoversEachItemOnce(t *testing.T) {
	for name, p := range map[string]*Pool{"workers": New(4), "spawning": NewSpawning(4)} {
		t.Run(name, func(t *testing.T) {
			defer p.Close()
			testCoverage(t, p)
		})
	}
}

func testCoverage(t *testing.T, p *Pool) {
	for _, c := range []struct{ n, grain, parts int }{
		{0, 1, 0}, {1, 1, 1}, {3, 1, 3}, {4, 1, 4}, {1000, 1, 4}, {1000, 300, 4}, {1000, 400, 3}, {1000, 2000, 1},
	} {
		task := &markTask{owner: make([]int32, c.n)}
		if got := p.Run(c.n, c.grain, task); got != c.parts {
			t.Errorf("Run(%d, %d) = %d parts, want %d", c.n, c.grain, got, c.parts)
		}
		if int(task.calls.Load()) != c.parts {
			t.Errorf("Run(%d, %d): %d calls of Task.Run, want %d", c.n, c.grain, task.calls.Load(), c.parts)
		}
		for i, o := range task.owner {
			// static partitioning: item i belongs to part ⌊i·parts/n⌋ or the next
			if w := int(o) - 1; w < 0 || i < c.n*w/c.parts || i >= c.n*(w+1)/c.parts {
				t.Fatalf("Run(%d, %d): item %d done by worker %d", c.n, c.grain, i, w)
			}
		}
	}
}

// sumTask adds up its part of xs into per-worker slots.
type sumTask struct {
	xs    []int64
	parts []int64
}

func (t *sumTask) Run(w, lo, hi int) {
	s := int64(0)
	for _, x := range t.xs[lo:hi] {
		s += x
	}
	t.parts[w] = s
}

// TestConcurrentCallers runs loops from several goroutines on one pool at once (run it
// with -race): each either gets the workers or runs alone, and every sum is right.
func TestConcurrentCallers(t *testing.T) {
	p := New(3)
	defer p.Close()
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			xs := make([]int64, 5000+g)
			want := int64(0)
			for i := range xs {
				xs[i] = int64(i * (g + 1))
				want += xs[i]
			}
			task := &sumTask{xs: xs, parts: make([]int64, p.Threads())}
			for range 200 {
				clear(task.parts)
				k := p.Run(len(xs), 64, task)
				got := int64(0)
				for _, s := range task.parts[:k] {
					got += s
				}
				if got != want {
					t.Errorf("goroutine %d: sum %d, want %d", g, got, want)
					return
				}
			}
		})
	}
	wg.Wait()
}

// nestTask starts a loop from inside each part.
type nestTask struct {
	p     *Pool
	inner []*markTask
}

func (t *nestTask) Run(w, lo, hi int) {
	for i := lo; i < hi; i++ {
		t.p.Run(len(t.inner[i].owner), 1, t.inner[i])
	}
}

func TestNestedLoopsRunInline(t *testing.T) {
	p := New(2)
	defer p.Close()
	task := &nestTask{p: p}
	for range 4 {
		task.inner = append(task.inner, &markTask{owner: make([]int32, 10)})
	}
	done := make(chan struct{})
	go func() {
		p.Run(len(task.inner), 1, task)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a loop started inside a task did not finish")
	}
	for i, in := range task.inner {
		for j, o := range in.owner {
			if o != 1 {
				t.Fatalf("inner loop %d item %d: worker %d, want the caller alone", i, j, o-1)
			}
		}
	}
}

// panicTask panics in part w.
type panicTask struct {
	w    int
	done []atomic.Bool
}

func (t *panicTask) Run(w, lo, hi int) {
	if w == t.w {
		panic("kernel failed")
	}
	time.Sleep(time.Millisecond)
	t.done[w].Store(true)
}

func TestPanicReachesCaller(t *testing.T) {
	for name, p := range map[string]*Pool{"workers": New(3), "spawning": NewSpawning(3)} {
		t.Run(name, func(t *testing.T) {
			defer p.Close()
			testPanic(t, p)
		})
	}
}

func testPanic(t *testing.T, p *Pool) {
	for _, w := range []int{0, 1, 2} {
		task := &panicTask{w: w, done: make([]atomic.Bool, 3)}
		msg := func() (msg string) {
			defer func() {
				r := recover()
				if r == nil {
					t.Fatalf("panic in part %d: Run returned normally", w)
				}
				msg, _ = r.(string)
				if e, ok := r.(error); ok {
					msg = e.Error()
				}
			}()
			p.Run(3, 1, task)
			return ""
		}()
		if w == 0 && msg != "kernel failed" || w > 0 && !strings.Contains(msg, "kernel failed") {
			t.Errorf("panic in part %d: caller got %q", w, msg)
		}
		for o := range 3 {
			if o != w && !task.done[o].Load() {
				t.Errorf("panic in part %d: Run returned before part %d finished", w, o)
			}
		}
		// the pool still works afterwards, on all its workers
		m := &markTask{owner: make([]int32, 3)}
		if got := p.Run(3, 1, m); got != 3 {
			t.Fatalf("after a panic in part %d: %d parts, want 3", w, got)
		}
	}
}

func TestCloseStopsWorkers(t *testing.T) {
	before := runtime.NumGoroutine()
	pools := make([]*Pool, 5)
	for i := range pools {
		pools[i] = New(4)
		pools[i].Run(100, 1, &markTask{owner: make([]int32, 100)})
	}
	if got := runtime.NumGoroutine(); got < before+15 {
		t.Fatalf("%d goroutines with 5 pools of 4 threads, want at least %d", got, before+15)
	}
	for _, p := range pools {
		p.Close()
		p.Close() // idempotent
	}
	if got := runtime.NumGoroutine(); got > before {
		t.Fatalf("%d goroutines after Close, %d before the pools", got, before)
	}
	// a closed pool still runs loops, on the caller
	m := &markTask{owner: make([]int32, 100)}
	if got := pools[0].Run(100, 1, m); got != 1 || m.owner[99] != 1 {
		t.Fatalf("closed pool: %d parts, item 99 by worker %d; want 1 part on the caller", got, m.owner[99]-1)
	}
}

func TestRunAllocatesNothing(t *testing.T) {
	p := New(2)
	defer p.Close()
	task := &sumTask{xs: make([]int64, 4096), parts: make([]int64, 2)}
	if a := testing.AllocsPerRun(200, func() { p.Run(len(task.xs), 16, task) }); a != 0 {
		t.Errorf("Run allocates %.1f times per loop, want 0", a)
	}
}

// nopTask does nothing: the benchmarks measure the hand-off alone.
type nopTask struct{}

func (nopTask) Run(w, lo, hi int) {}

// BenchmarkHandOff is one loop over all threads with no work: the cost of waking the
// workers and waiting for them.
func BenchmarkHandOff(b *testing.B) {
	p := New(runtime.GOMAXPROCS(0))
	defer p.Close()
	var t nopTask
	b.ReportAllocs()
	for b.Loop() {
		p.Run(p.Threads(), 1, t)
	}
}

// BenchmarkHandOffGoroutines is the same loop with a goroutine per part and a WaitGroup
// (what the cpu backend did before the pool).
func BenchmarkHandOffGoroutines(b *testing.B) {
	threads := runtime.GOMAXPROCS(0)
	f := func(w, lo, hi int) {}
	b.ReportAllocs()
	for b.Loop() {
		var wg sync.WaitGroup
		for w := 1; w < threads; w++ {
			wg.Go(func() { f(w, w, w+1) })
		}
		f(0, 0, 1)
		wg.Wait()
	}
}

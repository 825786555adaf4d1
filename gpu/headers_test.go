package gpu

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

// opSequence is a steady-state step in miniature: views, Linear with a stored F16
// weight, Conv2D, the norms, broadcast and plain binary ops, attention on permuted
// views, Concat, Cast, a strided copy and ChunkInto, each result released in an order that
// is not the reverse of creation. It returns a checksum of what it computed.
type opSequence struct {
	rt                  *Runtime
	x, w16, cw, gw, ctx *Tensor
	emb                 *Tensor
}

func newOpSequence(t testing.TB, rt *Runtime) *opSequence {
	r := rand.New(rand.NewPCG(7, 7))
	s := &opSequence{rt: rt}
	s.x, _ = randTensor(t, rt, r, false, 2, 8, 6, 6)
	s.cw, _ = randTensor(t, rt, r, false, 8, 8, 3, 3)
	s.gw, _ = randTensor(t, rt, r, false, 8)
	s.ctx, _ = randTensor(t, rt, r, false, 2, 5, 8)
	s.emb, _ = randTensor(t, rt, r, false, 2, 8, 1, 1)
	wd := make([]float32, 16*8)
	for i := range wd {
		wd[i] = float32(r.NormFloat64())
	}
	raw := make([]byte, 2*len(wd))
	if err := EncodeFloat32(F16, raw, wd); err != nil {
		t.Fatal(err)
	}
	s.w16 = ok(t)(rt.FromBytes(F16, raw, 16, 8))
	return s
}

// run runs the sequence; r (or nil) shuffles the order in which the results are
// released at the end.
func (s *opSequence) run(t testing.TB, r *rand.Rand) float32 {
	rt := s.rt
	must := ok(t)
	h := must(GroupNormSiLU(rt, s.x, 4, s.gw, s.gw, 1e-5))
	c := must(Conv2D(rt, h, s.cw, s.gw, 1, 1))
	h.Release()
	e := must(Add(rt, c, s.emb)) // broadcast over H, W
	c.Release()
	g := must(GroupNorm(rt, e, 2, nil, nil, 1e-5))
	tok := must(Reshape(rt, g, 2, 8, 36))
	tt := must(Transpose(tok, 1, 2)) // (2, 36, 8) strided
	ln := must(LayerNorm(rt, tt, s.gw, s.gw, 1e-5))
	tt.Release()
	lin := must(Linear(rt, ln, s.w16, nil)) // (2, 36, 16)
	var hb [2]*Tensor
	halves, err := ChunkInto(hb[:0], lin, 2, -1)
	if err != nil {
		t.Fatal(err)
	}
	a, b := halves[0], halves[1]
	gl := must(GELU(rt, b))
	prod := must(Mul(rt, a, gl))
	lin.Release()
	gl.Release()
	q4 := must(Reshape(rt, prod, 2, 36, 2, 4))
	q := must(Permute(q4, 0, 2, 1, 3)) // (2, 2, 36, 4)
	kv4 := must(Reshape(rt, s.ctx, 2, 5, 2, 4))
	kv := must(Permute(kv4, 0, 2, 1, 3))
	att := must(Attention(rt, q, kv, kv, nil, AttentionParams{}))
	kv4.Release()
	q.Release()
	n := must(Narrow(att, 2, 1, 30))
	cc := must(Contiguous(rt, n)) // a strided copy
	cat := must(Concat(rt, 1, cc, n))
	h16 := must(Cast(rt, cat, F16))
	back := must(Cast(rt, h16, F32))
	sub := must(Sub(rt, back, cat))
	sm := must(Softmax(rt, sub))
	var sum float32
	for _, x := range []*Tensor{cat, sub, sm} {
		v, okv := x.HostFloat32()
		if !okv {
			t.Fatalf("%s is not host F32", x)
		}
		for i, f := range v {
			sum += f * float32(i%7+1)
		}
	}
	results := [...]*Tensor{a, b, att, n, ln, q4, e, g, tok, prod, kv, cc, cat, h16, back, sub, sm}
	if r != nil {
		r.Shuffle(len(results), func(i, j int) { results[i], results[j] = results[j], results[i] })
	}
	for _, x := range results {
		x.Release()
	}
	return sum
}

// kernelAllocs bounds what one opSequence.run puts on the Go heap with the cpu kernels:
// nothing. The runtime's bookkeeping is recycled (the nop-backend run below shows it
// alone), and the kernels hand their loops to parked workers in reused slots and take
// their scratch from free lists (TestKernelsAllocateNothing checks each family alone).
const kernelAllocs = 0

// nopBackend is the cpu backend with kernels that do nothing: what a sequence of ops
// allocates on it is the runtime's bookkeeping alone.
type nopBackend struct{ *CPU }

func (nopBackend) Supports(Op, ...DType) bool { return true }
func (nopBackend) Run(Op, *Call) error        { return nil }

// TestSteadyStateAllocs: after a first run, repeating a sequence of ops allocates no
// tensor header, shape, stride slice, Call or parameter value on the Go heap: nothing
// at all on a backend whose kernels do nothing; views alone allocate nothing; with the
// cpu kernels, what remains is theirs.
func TestSteadyStateAllocs(t *testing.T) {
	nop, err := New(Options{Backend: nopBackend{NewCPU(CPUOptions{Threads: 2})}})
	if err != nil {
		t.Fatal(err)
	}
	ns := newOpSequence(t, nop)
	for range 3 {
		ns.run(t, nil)
	}
	if a := testing.AllocsPerRun(20, func() { ns.run(t, nil) }); a != 0 {
		t.Errorf("the runtime's bookkeeping allocates %.0f objects per op sequence, want 0", a)
	}

	rt, err := New(Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	s := newOpSequence(t, rt)
	first := s.run(t, nil)
	for range 3 {
		if got := s.run(t, nil); got != first {
			t.Fatalf("run gave %v, first %v", got, first)
		}
	}
	allocs := testing.AllocsPerRun(10, func() { s.run(t, nil) })
	t.Logf("Go heap allocations per op sequence with the cpu kernels: %.0f", allocs)
	if allocs > kernelAllocs {
		t.Errorf("op sequence allocates %.0f objects per run, want %d", allocs, kernelAllocs)
	}
	views := testing.AllocsPerRun(50, func() {
		r := ok(t)(Reshape(rt, s.x, 2, 8, 36))
		p := ok(t)(Permute(r, 0, 2, 1))
		tr := ok(t)(Transpose(p, 0, 1))
		n := ok(t)(Narrow(tr, 0, 2, 30))
		c := ok(t)(Contiguous(rt, r))
		e := expandTo(n, []int{4, 30})
		for _, v := range [...]*Tensor{r, p, tr, n, c, e} {
			v.Release()
		}
	})
	if views != 0 {
		t.Errorf("views allocate %.0f objects per run, want 0", views)
	}
}

// TestReleasedHeader: a released tensor is poisoned while its header waits for reuse
// (ops on it fail loudly, a second Release is a no-op), views may be released in any
// order, and a reused header describes its new tensor only.
func TestReleasedHeader(t *testing.T) {
	rt := newRT(t)
	// a steady state's queue of free headers
	var warm []*Tensor
	for range 8 {
		warm = append(warm, ok(t)(rt.Zeros(F32, 1)))
	}
	for _, z := range warm {
		z.Release()
	}
	x := ok(t)(rt.FromFloat32([]float32{1, 2, 3, 4, 5, 6}, 2, 3))
	v := ok(t)(Transpose(x, 0, 1))
	x.Release()
	x.Release() // no-op
	if got, err := v.Float32(); err != nil || !slices.Equal(got, []float32{1, 4, 2, 5, 3, 6}) {
		t.Fatalf("view after its base's release: %v %v", got, err)
	}
	if _, err := x.Float32(); err == nil {
		t.Error("Float32 of a released tensor succeeded")
	}
	if x.Rank() != 0 || x.Buffer() != nil || x.Runtime() != nil {
		t.Errorf("released header not poisoned: rank %d", x.Rank())
	}
	for name, use := range map[string]func() error{
		"add":       func() error { return second(Add(rt, x, v)) },
		"reshape":   func() error { return second(Reshape(rt, x, 6)) },
		"silu":      func() error { return second(SiLU(rt, x)) },
		"transpose": func() error { return second(Transpose(x, 0, 1)) },
		"linear":    func() error { return second(Linear(rt, v, x, nil)) },
	} {
		if !loud(use) {
			t.Errorf("%s of a released tensor neither failed nor panicked", name)
		}
	}
	v.Release()
	// The queue is first in, first out: a fresh tensor does not get the header just
	// released while older free headers wait.
	y := ok(t)(rt.Zeros(F32, 4))
	if y == v {
		t.Error("the header released last was reused first")
	}
	y.Release()
}

// loud reports whether f failed: returned an error or panicked.
func loud(f func() error) (failed bool) {
	defer func() {
		if r := recover(); r != nil {
			failed = true
		}
	}()
	return f() != nil
}

// TestConcurrentRuntime: several goroutines run the op sequence on one Runtime at once
// (headers, calls and buffers recycled across them) and each gets the serial result.
// Run with -race.
func TestConcurrentRuntime(t *testing.T) {
	rt := newRT(t)
	s := newOpSequence(t, rt)
	want := s.run(t, nil)
	var wg sync.WaitGroup
	errs := make(chan string, 4)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for range 8 {
				if got := s.run(t, r); got != want {
					errs <- fmt.Sprintf("goroutine %d: checksum %v, serial %v", g, got, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestSplitInto: the pieces are appended after what dst holds, in dst's own storage when
// it has room; a bad split leaves dst's tensors alone.
func TestSplitInto(t *testing.T) {
	rt := newRT(t)
	x := ok(t)(rt.FromFloat32([]float32{1, 2, 3, 4, 5, 6}, 2, 3))
	var buf [3]*Tensor
	parts, err := ChunkInto(append(buf[:0], x), x, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 3 || parts[0] != x || &parts[0] != &buf[0] {
		t.Fatalf("ChunkInto gave %d pieces (first %v), want x then 2 in dst's storage", len(parts), parts[0])
	}
	for i, want := range [][]float32{{1, 2, 4, 5}, {3, 6}} {
		if got, err := parts[1+i].Float32(); err != nil || !slices.Equal(got, want) {
			t.Errorf("piece %d: %v %v, want %v", i, got, err, want)
		}
	}
	if _, err := SplitInto(parts, x, 1, 2, 2); err == nil {
		t.Error("a split whose sizes do not sum to the dim succeeded")
	}
	for _, p := range parts {
		if p.Buffer() == nil {
			t.Fatal("a failed split released a tensor it was handed")
		}
		p.Release()
	}
}

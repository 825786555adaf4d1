package gpu

import "sync"

// Recycling of the runtime's bookkeeping. A sampling step asks for the same tensors and
// ops every step; with their storage pooled (pool in runtime.go), what remained on the
// Go heap was the small stuff: a *Tensor per op result and view, its shape and strides,
// a *Call per op with its input slice and boxed parameters. Headers and calls now come
// from per-Runtime free lists, shapes and strides live inside the header, and a call
// carries its inputs and parameters inline, so a steady-state step allocates none of it.

// inlineRank is the largest rank whose shape and strides are stored in the header.
const inlineRank = 6

// headerPool is a Runtime's free list of tensor headers. It is first in, first out: a
// header released by mistake twice, or used after Release, is then usually still
// poisoned in the queue (and fails loudly, or is a no-op to release again) instead of
// already being the next op's result.
type headerPool struct {
	mu   sync.Mutex
	ring []*Tensor
	head int // index of the oldest header
	n    int // headers queued
}

// maxFreeHeaders bounds the queue; headers beyond it are left to the garbage collector.
const maxFreeHeaders = 1 << 16

// get returns a zeroed header of the given rank: shape and strides have rank elements
// (zero), in the header's own arrays when rank ≤ inlineRank.
func (p *headerPool) get(rank int) *Tensor {
	var t *Tensor
	p.mu.Lock()
	if p.n > 0 {
		t = p.ring[p.head]
		p.ring[p.head] = nil
		p.head = (p.head + 1) % len(p.ring)
		p.n--
	}
	p.mu.Unlock()
	if t == nil {
		t = new(Tensor)
	}
	t.setRank(rank)
	return t
}

// put queues a released header, poisoned: no buffer, no runtime, no shape.
func (p *headerPool) put(t *Tensor) {
	*t = Tensor{}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n == len(p.ring) {
		if p.n >= maxFreeHeaders {
			return
		}
		ring := make([]*Tensor, max(64, 2*p.n))
		for i := range p.n {
			ring[i] = p.ring[(p.head+i)%len(p.ring)]
		}
		p.ring, p.head = ring, 0
	}
	p.ring[(p.head+p.n)%len(p.ring)] = t
	p.n++
}

// setRank gives t a shape and strides of rank zeros, inline where they fit.
func (t *Tensor) setRank(rank int) {
	if rank <= inlineRank {
		t.dims, t.steps = [inlineRank]int{}, [inlineRank]int{}
		t.shape, t.strides = t.dims[:rank:rank], t.steps[:rank:rank]
		return
	}
	t.shape, t.strides = make([]int, rank), make([]int, rank)
}

// callPool is a Runtime's free list of Calls.
type callPool struct {
	mu   sync.Mutex
	free []*Call
}

// call returns a Call for out and the inputs in (copied into the call's own storage),
// with no parameters. Runtime.exec runs it and hands it back.
func (rt *Runtime) call(out *Tensor, in ...*Tensor) *Call {
	p := &rt.calls
	var c *Call
	p.mu.Lock()
	if n := len(p.free); n > 0 {
		c = p.free[n-1]
		p.free[n-1] = nil
		p.free = p.free[:n-1]
	}
	p.mu.Unlock()
	if c == nil {
		c = new(Call)
		c.inBuf = c.in[:0]
	}
	c.In = append(c.inBuf[:0], in...)
	c.Out = out
	return c
}

// exec runs c (from Runtime.call) as op and returns c to the free list.
func (rt *Runtime) exec(op Op, c *Call) error {
	err := rt.run(op, c)
	clear(c.In)
	c.inBuf = c.In[:0] // keeps storage grown for a long Concat
	c.In, c.Out, c.Params = nil, nil, nil
	c.params = callParams{}
	p := &rt.calls
	p.mu.Lock()
	p.free = append(p.free, c)
	p.mu.Unlock()
	return err
}

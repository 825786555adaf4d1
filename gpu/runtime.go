package gpu

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"unsafe"

	"github.com/forgeflow/forgeflow/gpu/internal/gemm"
)

// Options configures a Runtime: everything the runtime depends on is here, nothing is
// read from the environment (cmd/forgeflow maps its flags and variables onto these
// fields). The zero value gives the cpu backend with one worker per GOMAXPROCS, the
// best GEMM kernel for this CPU, float32 compute and a discarding logger.
type Options struct {
	// Backend runs the ops; nil means a new cpu backend.
	Backend Backend
	// Threads bounds the goroutines the cpu backend uses (0: GOMAXPROCS).
	Threads int
	// Logger receives the one-time fallback notices; nil discards.
	Logger *slog.Logger
	// BF16 chooses bfloat16 dot products for the cpu backend's Linear and Conv2D
	// (CPUOptions.BF16): BF16Off, the zero value, keeps float32; BF16On uses them where
	// the CPU has AVX512_BF16; BF16Auto measures both on this CPU once and takes the
	// faster (see CacheDir).
	BF16 BF16Mode
	// GEMM forces the GEMM kernel family: "" or "auto" picks the best this CPU runs,
	// "generic" the pure-Go kernels (and the Go forms of every other assembly kernel),
	// "avx2" or "avx512" those. New fails for an unknown name or one this CPU cannot run.
	GEMM string
	// Conv chooses the cpu backend's convolution form: "" or "auto" per call, "direct"
	// never the Winograd form, "winograd" the Winograd form for every stride-1 3×3 conv
	// (CPUOptions.Conv). New fails for another name.
	Conv string
	// PackBudget bounds the bytes of weight panels and Winograd matrices the cpu backend
	// keeps (CPUOptions.PackBudget): 0 means a quarter of the RAM, negative turns
	// packing (and with it the Winograd form) off.
	PackBudget int64
	// OpLabels tags the cpu backend's work in CPU profiles with the op (and a conv's
	// form) as pprof labels, for a per-op breakdown (`go tool pprof -tags`); it costs an
	// allocation per op, so it is for profiling runs only.
	OpLabels bool
	// CacheDir is a directory where BF16Auto and BlockingAuto keep their decisions,
	// keyed by the CPU model and the code version, so that they measure once per
	// machine and build; "" keeps nothing and measures in every New.
	CacheDir string
	// Blocking chooses the cpu backend's GEMM cache blocking: "" or BlockingDerived
	// sizes it from this CPU's cache sizes; BlockingAuto also times a few candidates
	// around that once (a few hundred milliseconds, cached in CacheDir) and keeps one
	// that is clearly faster; BlockingFixed uses the constants measured on the
	// development machine. New fails for another value.
	Blocking string
}

// Runtime is the handle every model and node uses: it owns a backend, a buffer pool (so
// that a steady-state sampling step reuses the previous step's buffers instead of
// allocating) and the cpu fallback. It is safe for concurrent use.
type Runtime struct {
	be     Backend
	cpu    *CPU
	pool   *pool
	log    *slog.Logger
	warned sync.Map // Op → struct{}: fallback already logged
	// headers and calls recycle tensor headers and op calls (headers.go)
	headers headerPool
	calls   callPool
}

// New returns a Runtime for opts.
func New(opts Options) (*Runtime, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if _, _, err := convForm(opts.Conv); err != nil {
		return nil, err
	}
	src, calibrate, err := parseBlocking(opts.Blocking)
	if err != nil {
		return nil, err
	}
	copts := CPUOptions{Threads: opts.Threads, BF16: opts.BF16 != BF16Off, GEMM: opts.GEMM, Conv: opts.Conv, PackBudget: opts.PackBudget, OpLabels: opts.OpLabels, Blocking: opts.Blocking}
	if p, err := gemm.ParsePath(opts.GEMM); calibrate && err == nil {
		t := opts.Threads
		if t <= 0 {
			t = runtime.GOMAXPROCS(0)
		}
		copts.calibrated = newBlockingCalibration(gemm.Options{Path: p, Threads: t, Source: src}, opts.CacheDir, log).decide()
	}
	cpu := NewCPU(copts)
	if err := cpu.mm.err; err != nil {
		return nil, fmt.Errorf("gpu: gemm %q: %w", opts.GEMM, err)
	}
	switch err := cpu.mm.bf16Err; {
	case opts.BF16 == BF16On && err != nil:
		log.Warn("gpu: cpu: bfloat16 compute not available, using float32", "err", err)
	case opts.BF16 == BF16Auto && err != nil:
		log.Debug("gpu: cpu: bf16 auto: no bfloat16 compute on this CPU, using float32", "err", err)
	case opts.BF16 == BF16Auto:
		cal := newCalibration(cpu.mm, opts.CacheDir, log)
		if !cal.decide() {
			cpu.mm.weighted = cpu.mm.wide
		}
	}
	be := opts.Backend
	if be == nil {
		be = cpu
	}
	return &Runtime{be: be, cpu: cpu, pool: newPool(be), log: log}, nil
}

// Close stops the worker goroutines of the runtime's cpu backend (a Backend passed in
// Options is its owner's to close). Ops run after Close still work, each on its caller's
// goroutine alone; a Runtime that is never closed stops its workers when it is
// collected. Close may be called more than once.
func (rt *Runtime) Close() { rt.cpu.Close() }

// BF16 reports whether the cpu backend runs Linear and Conv2D with bfloat16 dot products
// (Options.BF16 on, or auto where it measured faster, on a CPU with AVX512_BF16).
func (rt *Runtime) BF16() bool { return rt.cpu.BF16() }

// GEMM names the GEMM kernel family the cpu backend runs ("generic", "avx2", "avx512").
func (rt *Runtime) GEMM() string { return rt.cpu.mm.wide.Path().String() }

// GEMMBlocking reports the cpu backend's GEMM cache blocking (Options.Blocking).
func (rt *Runtime) GEMMBlocking() (kc, mc, nc int) {
	if rt.cpu.mm.err != nil {
		return 0, 0, 0
	}
	b := rt.cpu.mm.wide.Blocking()
	return b.KC, b.MC, b.NC
}

// Backend returns the runtime's backend.
func (rt *Runtime) Backend() Backend { return rt.be }

// PoolStats reports how many buffer requests the pool served from its free lists (hits)
// and how many needed a new allocation (misses), and the bytes it holds idle.
func (rt *Runtime) PoolStats() (hits, misses int64, idleBytes int64) { return rt.pool.stats() }

// TrimPool frees every idle pooled buffer.
func (rt *Runtime) TrimPool() { rt.pool.trim() }

// Empty returns an uninitialised contiguous tensor of dtype d and the given shape.
func (rt *Runtime) Empty(d DType, shape ...int) (*Tensor, error) {
	if err := checkShape(shape); err != nil {
		return nil, err
	}
	n, err := d.StorageBytes(numel(shape))
	if err != nil {
		return nil, err
	}
	b, err := rt.pool.get(n)
	if err != nil {
		return nil, fmt.Errorf("gpu: alloc %s%v: %w", d, slices.Clone(shape), err)
	}
	t := rt.header(d, shape)
	t.buf = b
	return t, nil
}

// header returns a recycled header of dtype d, a copy of shape and contiguous strides,
// without storage.
func (rt *Runtime) header(d DType, shape []int) *Tensor {
	t := rt.headers.get(len(shape))
	copy(t.shape, shape)
	contiguousStrides(t.strides, t.shape)
	t.dtype, t.rt = d, rt
	return t
}

// Zeros returns a zero-filled contiguous tensor.
func (rt *Runtime) Zeros(d DType, shape ...int) (*Tensor, error) {
	t, err := rt.Empty(d, shape...)
	if err != nil {
		return nil, err
	}
	if t.buf.Host != nil {
		clear(t.buf.Host[:t.buf.size])
		return t, nil
	}
	if err := rt.be.Upload(t.buf, 0, make([]byte, t.buf.size)); err != nil {
		t.Release()
		return nil, err
	}
	return t, nil
}

// FromFloat32 returns an F32 tensor holding a copy of data, which must have exactly
// numel(shape) elements.
func (rt *Runtime) FromFloat32(data []float32, shape ...int) (*Tensor, error) {
	if err := checkShape(shape); err != nil {
		return nil, err
	}
	if len(data) != numel(shape) {
		return nil, fmt.Errorf("gpu: %d values for shape %v (needs %d)", len(data), slices.Clone(shape), numel(shape))
	}
	t, err := rt.Empty(F32, shape...)
	if err != nil {
		return nil, err
	}
	if t.buf.Host != nil {
		copy(t.f32c(), data)
		return t, nil
	}
	b := make([]byte, 4*len(data))
	_ = EncodeFloat32(F32, b, data)
	if err := rt.be.Upload(t.buf, 0, b); err != nil {
		t.Release()
		return nil, err
	}
	return t, nil
}

// FromBytes returns a contiguous tensor of dtype d over raw little-endian storage. On a
// host-memory backend the bytes are used in place (no copy: a memory-mapped weight stays
// mapped), so data must outlive the tensor and must not be modified; other backends copy.
func (rt *Runtime) FromBytes(d DType, data []byte, shape ...int) (*Tensor, error) {
	if err := checkShape(shape); err != nil {
		return nil, err
	}
	n, err := d.StorageBytes(numel(shape))
	if err != nil {
		return nil, err
	}
	if len(shape) > 0 && shape[len(shape)-1]%d.BlockSize() != 0 {
		return nil, fmt.Errorf("gpu: %s rows of %d elements are not whole blocks of %d", d, shape[len(shape)-1], d.BlockSize())
	}
	if len(data) != n {
		return nil, fmt.Errorf("gpu: %d bytes for %s%v (needs %d)", len(data), d, slices.Clone(shape), n)
	}
	var b *Buffer
	if wp, ok := rt.be.(WeightPlacer); ok {
		if d == F32 && uintptr(unsafe.Pointer(unsafe.SliceData(data)))%4 != 0 {
			data = append(make([]byte, 0, len(data)), data...) // a host-kept weight may reach cpu kernels
		}
		if b, err = wp.PlaceWeight(data); err != nil {
			return nil, err
		}
		b.size, b.backend = n, rt.be
		b.refs.Store(1)
	} else if rt.be == Backend(rt.cpu) {
		if d == F32 && uintptr(unsafe.Pointer(unsafe.SliceData(data)))%4 != 0 {
			// kernels view F32 storage as []float32, which needs 4-byte alignment
			data = append(make([]byte, 0, len(data)), data...)
		}
		b = &Buffer{Host: data, size: n, backend: rt.cpu}
		b.refs.Store(1)
	} else {
		if b, err = rt.pool.get(n); err != nil {
			return nil, err
		}
		if err := rt.be.Upload(b, 0, data); err != nil {
			rt.pool.put(b)
			return nil, err
		}
	}
	t := rt.header(d, shape)
	t.buf = b
	return t, nil
}

// Float32 returns t's elements as a new host slice in row-major order, converting plain
// float dtypes to float32. Quantized tensors are refused (weights/ dequantizes them).
func (t *Tensor) Float32() ([]float32, error) {
	if t == nil || t.buf == nil {
		return nil, fmt.Errorf("gpu: Float32 of a released or nil tensor")
	}
	if !t.dtype.IsFloat() {
		return nil, fmt.Errorf("gpu: Float32 of %s: quantized blocks are decoded by weights/", t.dtype)
	}
	src := t
	if !t.IsContiguous() {
		c, err := Contiguous(t.rt, t)
		if err != nil {
			return nil, err
		}
		defer c.Release()
		src = c
	}
	var raw []byte
	if src.buf.Host != nil {
		raw = src.bytes()
	} else {
		n, _ := src.dtype.StorageBytes(src.Numel())
		off, _ := src.dtype.StorageBytes(src.offset)
		raw = make([]byte, n)
		if err := t.rt.be.Download(raw, src.buf, off); err != nil {
			return nil, err
		}
		if err := t.rt.be.Synchronize(); err != nil {
			return nil, err
		}
	}
	out := make([]float32, src.Numel())
	if err := DecodeFloat32(src.dtype, out, raw); err != nil {
		return nil, err
	}
	return out, nil
}

// run dispatches one op: to the runtime's backend when it supports the dtypes, else to
// the cpu backend when the operands are host-visible (logging the fallback once).
func (rt *Runtime) run(op Op, c *Call) error {
	dts := c.dts[:0] // in the Call: a local array would escape through Supports
	for _, t := range c.In {
		if t != nil {
			if t.buf == nil {
				return fmt.Errorf("gpu: %s of a released tensor", op)
			}
			dts = append(dts, t.dtype)
		}
	}
	if c.Out != nil {
		dts = append(dts, c.Out.dtype)
	}
	why := "dtypes"
	if roundedDequant(c) && rt.be != Backend(rt.cpu) {
		// Only the cpu kernels decode blocks in float16/bfloat16 arithmetic.
		why = "weight decoded in " + roundedDequantName(c)
	} else if rt.be.Supports(op, dts...) {
		err := rt.be.Run(op, c)
		if !errors.Is(err, ErrNotSupported) {
			return err
		}
		why = err.Error()
	}
	if rt.be != Backend(rt.cpu) && rt.cpu.Supports(op, dts...) {
		if _, done := rt.warned.LoadOrStore(op, struct{}{}); !done {
			rt.log.Info("op falls back to cpu", "op", op.String(), "backend", rt.be.Name(), "dtypes", fmt.Sprint(dts), "why", why)
		}
		if hostVisible(c) {
			return rt.cpu.Run(op, c)
		}
		return rt.runStaged(op, c)
	}
	return fmt.Errorf("gpu: %s: backend %s does not support dtypes %v", op, rt.be.Name(), dts)
}

// ErrNotSupported is what a backend's Run returns (possibly wrapped, before writing the
// output) for operands its kernels do not handle although Supports accepted the dtypes,
// e.g. an upscale method or a head width without a device kernel; the Runtime then runs
// the op on the cpu backend.
var ErrNotSupported = errors.New("gpu: not supported by this backend")

// WeightPlacer is implemented by device backends that decide where a weight lives:
// FromBytes hands them the stored bytes and they return a device buffer holding a copy,
// or a buffer whose Host is data itself, kept in host memory and copied in for each use
// (streaming weights when device memory is short). The returned Buffer is not pooled.
type WeightPlacer interface {
	PlaceWeight(data []byte) (*Buffer, error)
}

// runStaged runs op on the cpu backend for operands in device memory: the inputs'
// buffers are copied to host memory, the cpu kernel writes a host output and that is
// copied into c.Out. Slow, but every op runs on every backend.
func (rt *Runtime) runStaged(op Op, c *Call) error {
	host := func(t *Tensor, fetch bool) (*Tensor, error) {
		if t == nil || t.buf.Host != nil {
			return t, nil
		}
		raw := make([]byte, t.buf.size)
		if fetch { // not the output, which the kernel writes whole
			if err := rt.be.Download(raw, t.buf, 0); err != nil {
				return nil, err
			}
		}
		b := &Buffer{Host: raw, size: t.buf.size, backend: rt.cpu}
		b.refs.Store(1)
		// not recycled: shares t's layout, which outlives this call
		return &Tensor{dtype: t.dtype, shape: t.shape, strides: t.strides, offset: t.offset, buf: b, rt: rt, deq: t.deq}, nil
	}
	hc := &Call{In: make([]*Tensor, len(c.In)), Params: c.Params}
	for i, t := range c.In {
		h, err := host(t, true)
		if err != nil {
			return err
		}
		hc.In[i] = h
	}
	out, err := host(c.Out, false)
	if err != nil {
		return err
	}
	hc.Out = out
	if err := rt.be.Synchronize(); err != nil {
		return err
	}
	if err := rt.cpu.Run(op, hc); err != nil {
		return err
	}
	if out == c.Out {
		return nil
	}
	return rt.be.Upload(c.Out.buf, 0, out.buf.Host)
}

func hostVisible(c *Call) bool {
	for _, t := range c.In {
		if t != nil && t.buf.Host == nil {
			return false
		}
	}
	return c.Out == nil || c.Out.buf.Host != nil
}

// pool keeps released buffers by exact byte size: a sampling step asks for the same
// sizes every step, so after the first step every request is a hit.
type pool struct {
	be           Backend
	mu           sync.Mutex
	free         map[int][]*Buffer
	idle         int64
	hits, misses int64
}

func newPool(be Backend) *pool { return &pool{be: be, free: map[int][]*Buffer{}} }

func (p *pool) get(n int) (*Buffer, error) {
	p.mu.Lock()
	if l := p.free[n]; len(l) > 0 {
		b := l[len(l)-1]
		p.free[n] = l[:len(l)-1]
		p.idle -= int64(n)
		p.hits++
		p.mu.Unlock()
		b.refs.Store(1)
		return b, nil
	}
	p.misses++
	p.mu.Unlock()
	b, err := p.be.Alloc(n)
	if err != nil {
		return nil, err
	}
	b.size, b.backend, b.pool = n, p.be, p
	b.refs.Store(1)
	return b, nil
}

func (p *pool) put(b *Buffer) {
	p.mu.Lock()
	p.free[b.size] = append(p.free[b.size], b)
	p.idle += int64(b.size)
	p.mu.Unlock()
}

func (p *pool) stats() (hits, misses, idle int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hits, p.misses, p.idle
}

func (p *pool) trim() {
	p.mu.Lock()
	free := p.free
	p.free = map[int][]*Buffer{}
	p.idle = 0
	p.mu.Unlock()
	for _, l := range free {
		for _, b := range l {
			p.be.Free(b)
		}
	}
}

// HostFloat32 returns the live storage of a contiguous F32 tensor in host memory (the cpu
// backend), without a copy: writes through the slice change the tensor, so a sampler can
// update a latent in place. ok is false for other dtypes, strided views and device memory;
// use Float32 (a copy) then.
func (t *Tensor) HostFloat32() (data []float32, ok bool) {
	if t == nil || t.buf == nil || t.dtype != F32 || t.buf.Host == nil || !t.IsContiguous() {
		return nil, false
	}
	return t.f32c(), true
}

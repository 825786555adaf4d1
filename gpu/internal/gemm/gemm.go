package gemm

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"

	"github.com/forgeflow/forgeflow/gpu/internal/par"
)

// Path names a micro-kernel family.
type Path int

const (
	// PathAuto picks the fastest path the CPU supports.
	PathAuto Path = iota
	// PathGeneric is the portable pure-Go kernel.
	PathGeneric
	// PathAVX2 is the AVX2+FMA assembly kernel (amd64).
	PathAVX2
	// PathAVX512 is the AVX-512F assembly kernel (amd64).
	PathAVX512
)

func (p Path) String() string {
	switch p {
	case PathAuto:
		return "auto"
	case PathGeneric:
		return "generic"
	case PathAVX2:
		return "avx2"
	case PathAVX512:
		return "avx512"
	}
	return fmt.Sprintf("Path(%d)", int(p))
}

// ParsePath parses a path name: "generic", "avx2", "avx512", or "auto" or "" for the
// best available (cmd/forgeflow's --gemm flag and FORGEFLOW_GEMM variable).
func ParsePath(s string) (Path, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return PathAuto, nil
	case "generic", "go", "purego":
		return PathGeneric, nil
	case "avx2":
		return PathAVX2, nil
	case "avx512", "avx-512":
		return PathAVX512, nil
	}
	return PathAuto, fmt.Errorf("gemm: unknown path %q (want generic, avx2, avx512 or auto)", s)
}

// Options configures an Engine. The zero value is the default: the best
// kernel for this CPU and one worker per GOMAXPROCS.
type Options struct {
	// Path forces a kernel family; PathAuto picks the best available.
	Path Path
	// Threads is the number of goroutines one call may use; 0 means
	// runtime.GOMAXPROCS(0).
	Threads int
	// Pool runs the calls' parallel phases (several Engines, and the caller's
	// other kernels, may share one); nil gives the Engine a pool of its own
	// with Threads goroutines, stopped when the Engine is collected.
	Pool *par.Pool
	// BF16 multiplies with AVX512_BF16 dot products (VDPBF16PS): A and B
	// are rounded to bfloat16 (8 significant bits, round to nearest even)
	// while they are packed and the products are summed in float32. It
	// doubles the arithmetic rate at the cost of about 2^-9 relative error
	// per input, so a caller turns it on only where its golden tests still
	// pass. It needs PathAuto or PathAVX512 and a CPU with AVX512_BF16.
	// Linear with at most four rows still uses float32 dot products.
	BF16 bool
	// Source chooses the kernel's cache blocking: derived from this CPU's
	// cache sizes (the zero value) or the fixed constants measured on the
	// development machine.
	Source BlockingSource
	// Blocking overrides the cache blocking of the chosen kernel, for
	// tuning, for a calibrated choice (Calibrate) and for tests that reach
	// every loop level with small sizes. Zero fields keep the values Source
	// gives.
	Blocking Blocking
	// Widen16 chooses the element type Pack gives F16 and BF16 weights:
	// Widen16Auto measures, once per process and kernel path, whether the
	// micro-kernel that widens 16-bit panels while loading them keeps up
	// with the float32 one (it does where the conversion runs beside the
	// FMA units, as on AMD Zen; on CPUs where it shares their ports the
	// float32 panels win) and widens only where it does not.
	Widen16 Widen16
}

// Widen16 is Options.Widen16.
type Widen16 int

const (
	// Widen16Auto widens 16-bit panels to float32 where the calibration
	// finds the widening micro-kernel more than 5 % slower.
	Widen16Auto Widen16 = iota
	// Widen16Never keeps 16-bit weights in 16-bit panels (same memory as
	// the stored weights).
	Widen16Never
	// Widen16Always packs 16-bit weights as float32 panels (twice the
	// memory, no conversion in the micro-kernel).
	Widen16Always
)

// BlockingSource is Options.Source.
type BlockingSource int

const (
	// BlockingDerived sizes KC, MC and NC from the caches DetectCaches
	// reports (deriveBlocking; codex/gemm.md, "Blocking").
	BlockingDerived BlockingSource = iota
	// BlockingFixed uses the constants measured with BenchmarkTune on the
	// development machine (AMD Zen 5: 48 KiB L1d, 1 MiB L2), for A/B runs.
	BlockingFixed
)

func (s BlockingSource) String() string {
	switch s {
	case BlockingDerived:
		return "derived"
	case BlockingFixed:
		return "fixed"
	}
	return fmt.Sprintf("BlockingSource(%d)", int(s))
}

// Blocking is the cache blocking of the packed loops, in elements: KC is
// the depth of a packed panel, MC the rows of A packed at once and NC the
// columns of B packed at once. MC and NC are rounded up to the register
// tile.
type Blocking struct {
	KC, MC, NC int
}

// Engine runs matrix multiplications with one chosen kernel and thread
// count. It holds only read-only configuration and pools of packing
// buffers, so one Engine may be used by many goroutines at once. Create it
// with New; the zero Engine reports an error on every call.
type Engine struct {
	k       kernel
	threads int
	pool    *par.Pool
	bufs    freeList[*workspace]
	panels  freeList[*[]float32] // shared B blocks (runShared)
	jobs    freeList[*job]
	apanels freeList[*[]float32] // shared A of runPacked
	noShare bool                 // benchmarks only: always split into private rectangles
	widen   bool                 // Pack gives 16-bit weights float32 panels (Options.Widen16)
}

// New returns an Engine for opts, or an error when opts.Path names a
// kernel this CPU (or this build) cannot run.
func New(opts Options) (*Engine, error) {
	sel := selectKernel
	if opts.BF16 {
		sel = selectBF16Kernel
	}
	k, err := sel(opts.Path)
	if err != nil {
		return nil, err
	}
	if b := opts.Blocking; b.KC < 0 || b.MC < 0 || b.NC < 0 {
		return nil, fmt.Errorf("gemm: negative blocking %+v", b)
	}
	if opts.Source != BlockingDerived && opts.Source != BlockingFixed {
		return nil, fmt.Errorf("gemm: unknown blocking source %d", int(opts.Source))
	}
	t := opts.Threads
	if t <= 0 {
		t = runtime.GOMAXPROCS(0)
	}
	if t < 1 {
		t = 1
	}
	e := &Engine{threads: t}
	switch opts.Widen16 {
	case Widen16Always:
		e.widen = true
	case Widen16Auto:
		e.widen = k.tilePH != nil && !k.pairs && widenPays(k.path)
	}
	if opts.Source == BlockingDerived {
		// KC is sized for the panels this kernel reads weights from: 16-bit
		// where it widens them itself, which checkpoints' F16 weights use.
		// Not e.widen: that timing sits within a few per cent of its
		// threshold on Zen 5, and a blocking that flips with the load
		// between runs would make figures incomparable.
		panel := 4
		if k.tilePH != nil {
			panel = 2
		}
		b := deriveBlocking(k.mr, k.nr, panel, DetectCaches())
		k.kc, k.mc, k.nc = b.KC, b.MC, b.NC
	}
	if opts.Blocking.KC > 0 {
		k.kc = opts.Blocking.KC
	}
	if opts.Blocking.MC > 0 {
		k.mc = (opts.Blocking.MC + k.mr - 1) / k.mr * k.mr
	}
	if opts.Blocking.NC > 0 {
		k.nc = (opts.Blocking.NC + k.nr - 1) / k.nr * k.nr
	}
	e.k, e.pool = k, opts.Pool
	if e.pool == nil {
		e.pool = par.New(t)
		runtime.AddCleanup(e, (*par.Pool).Close, e.pool)
	}
	return e, nil
}

// Path reports the kernel family the Engine runs.
func (e *Engine) Path() Path { return e.k.path }

// Blocking reports the cache blocking in use.
func (e *Engine) Blocking() Blocking { return Blocking{KC: e.k.kc, MC: e.k.mc, NC: e.k.nc} }

// BF16 reports whether the Engine multiplies with bfloat16 dot products.
func (e *Engine) BF16() bool { return e.k.pairs }

// Threads reports how many goroutines one call may use.
func (e *Engine) Threads() int { return e.threads }

// Available reports whether this CPU and build can run path p.
func Available(p Path) bool {
	_, err := selectKernel(p)
	return err == nil
}

var defaultEngine = sync.OnceValues(func() (*Engine, error) { return New(Options{}) })

// Default returns the Engine of the package-level calls: the best path for
// this CPU on all threads, made on first use and read-only after. Callers
// that choose a path or a thread count build their own with New.
func Default() (*Engine, error) { return defaultEngine() }

// SGEMM computes C = A·B, or C += A·B when accumulate is true, with the
// Default engine. A is m×k with row stride lda, B is k×n with row stride
// ldb and C is m×n with row stride ldc, all row-major float32 with strides
// in elements. C must not overlap A or B.
func SGEMM(m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int, accumulate bool) error {
	e, err := Default()
	if err != nil {
		return err
	}
	return e.SGEMM(m, n, k, a, lda, b, ldb, c, ldc, accumulate)
}

// SGEMM computes C (+)= A·B; see the package-level SGEMM.
func (e *Engine) SGEMM(m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int, accumulate bool) error {
	return e.SGEMMBatched(Batch{Count: 1}, false, false, m, n, k, a, lda, b, ldb, c, ldc, accumulate)
}

// SGEMMT computes C (+)= op(A)·op(B) where op(X) is X or Xᵀ. When transA
// is true, A is stored k×m (row stride lda) and used transposed; when
// transB is true, B is stored n×k (row stride ldb), which is the layout of
// attention's Q·Kᵀ.
func (e *Engine) SGEMMT(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int, accumulate bool) error {
	return e.SGEMMBatched(Batch{Count: 1}, transA, transB, m, n, k, a, lda, b, ldb, c, ldc, accumulate)
}

// Batch describes a batch of equally shaped products: product i reads A at
// offset i*StrideA, B at i*StrideB and writes C at i*StrideC (in elements).
// A stride of 0 reuses the same matrix for every product (broadcasting a
// weight, say). StrideC must not make two products' C overlap.
type Batch struct {
	Count                     int
	StrideA, StrideB, StrideC int
}

// SGEMMBatched computes Count products C_i (+)= op(A_i)·op(B_i) in one
// call, spreading them and their tiles over the Engine's threads.
func (e *Engine) SGEMMBatched(bt Batch, transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int, accumulate bool) error {
	if err := e.check(); err != nil {
		return err
	}
	ar, ac := m, k
	if transA {
		ar, ac = k, m
	}
	br, bc := k, n
	if transB {
		br, bc = n, k
	}
	if err := checkDims(m, n, k, bt); err != nil {
		return err
	}
	if err := checkMatrix("A", a, ar, ac, lda, bt.Count, bt.StrideA); err != nil {
		return err
	}
	if err := checkMatrix("B", b, br, bc, ldb, bt.Count, bt.StrideB); err != nil {
		return err
	}
	if err := checkMatrix("C", c, m, n, ldc, bt.Count, bt.StrideC); err != nil {
		return err
	}
	if bt.Count > 1 && bt.StrideC == 0 && m > 0 && n > 0 {
		return fmt.Errorf("gemm: batch of %d with StrideC 0 would write one C several times", bt.Count)
	}
	p := problem{
		m: m, n: n, k: k, acc: accumulate, batch: bt,
		a: aSource{data: a, ld: lda, trans: transA},
		b: bSource{f32: b, ld: ldb, trans: transB},
		c: c, ldc: ldc,
	}
	e.run(&p)
	return nil
}

// errNoEngine is returned by calls on an Engine not made by New.
var errNoEngine = errors.New("gemm: Engine not created with New")

func (e *Engine) check() error {
	if e == nil || e.k.tile == nil {
		return errNoEngine
	}
	return nil
}

func checkDims(m, n, k int, bt Batch) error {
	if m < 0 || n < 0 || k < 0 {
		return fmt.Errorf("gemm: negative size m=%d n=%d k=%d", m, n, k)
	}
	if bt.Count < 0 || bt.StrideA < 0 || bt.StrideB < 0 || bt.StrideC < 0 {
		return fmt.Errorf("gemm: negative batch count or stride %+v", bt)
	}
	return nil
}

// checkMatrix verifies that data holds count rows×cols matrices with row
// stride ld, spaced stride elements apart.
func checkMatrix(name string, data []float32, rows, cols, ld, count, stride int) error {
	if ld < max(cols, 1) {
		return fmt.Errorf("gemm: %s: row stride %d less than width %d", name, ld, cols)
	}
	if rows == 0 || cols == 0 || count == 0 {
		return nil
	}
	// Each term of need must fit in data on its own; checking that first
	// keeps the sum below from overflowing on absurd sizes.
	if cols > len(data) || (rows > 1 && rows-1 > len(data)/ld) || (count > 1 && stride > 0 && count-1 > len(data)/stride) {
		return fmt.Errorf("gemm: %s: %d elements cannot hold %d×%d (stride %d, batch %d×%d)", name, len(data), rows, cols, ld, count, stride)
	}
	need := (count-1)*stride + (rows-1)*ld + cols
	if len(data) < need {
		return fmt.Errorf("gemm: %s: %d elements, need %d for %d×%d (stride %d, batch %d×%d)", name, len(data), need, rows, cols, ld, count, stride)
	}
	return nil
}

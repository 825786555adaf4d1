package gpu

import (
	"context"
	"fmt"
	"runtime"
	"runtime/pprof"
	"sync"
	"unsafe"

	"github.com/forgeflow/forgeflow/gpu/internal/gemm"
	"github.com/forgeflow/forgeflow/gpu/internal/par"
	"github.com/forgeflow/forgeflow/gpu/resample"
)

// CPUOptions configures the cpu backend; the zero value uses GOMAXPROCS goroutines and
// the best GEMM kernel for this CPU.
type CPUOptions struct {
	Threads int
	// GEMM forces a GEMM kernel family as Options.GEMM does; a name that is unknown or
	// that this CPU cannot run makes every product fail (New reports it up front).
	GEMM string
	// BF16 multiplies Linear and Conv2D (not attention or MatMul) with AVX512_BF16 dot
	// products: activations and weights are rounded to bfloat16 while they are packed
	// and summed in float32, about twice the float32 rate. SD1.5 images stay ≥ 35 dB
	// PSNR from the float32 ones (codex/gpu.md has the measurement). Where the CPU
	// lacks AVX512_BF16, or the generic GEMM path is forced, it stays float32
	// (CPU.BF16 reports which).
	BF16 bool
	// PackBudget bounds the bytes of weight panels and Winograd matrices the backend
	// keeps (pack.go): 0 means a quarter of the RAM, a negative value turns packing off.
	PackBudget int64
	// Conv is the convolution form: "" or "auto" (chosen per call), "direct" (never
	// Winograd) or "winograd" (every stride-1 3×3 conv); another name is taken as auto
	// (Options.Conv reports it).
	Conv string
	// OpLabels tags each op's work with pprof labels (Options.OpLabels).
	OpLabels bool
	// Blocking chooses the GEMM's cache blocking: BlockingDerived ("" too) or
	// BlockingFixed; BlockingAuto is BlockingDerived here, the calibration being the
	// Runtime's (Options.Blocking). Another value makes every product fail.
	Blocking string
	// calibrated is the blocking the Runtime's calibration chose (zero: none).
	calibrated gemm.Blocking
}

// CPU is the host backend: buffers are Go byte slices and kernels are Go (plus the
// assembly GEMM kernels of gpu/internal/gemm), spread over Threads goroutines.
type CPU struct {
	threads int
	mm      *matmuler
	rk      rowKernels
	scratch sizedPool[float32]
	// tileFloats bounds conv scratch (convTileFloats; tests lower it to reach the banding)
	tileFloats int
	// convForm forces a conv form (convFormBand, convFormCol) or leaves the choice to
	// preferCol (convAuto); tests force both
	convForm int
	// labels: tag work with pprof labels (CPUOptions.OpLabels)
	labels bool
	// noWino keeps convAuto from choosing the Winograd form (CPUOptions.Conv "direct")
	noWino bool
	// ints recycles int scratch (*[]int): conv column offsets, broadcast strides
	ints sizedPool[int]
	pack packer
	// pool runs the kernels' parallel loops and the GEMM engines' (parallel.go)
	pool  *par.Pool
	slots slotLists
	// winoPtrs recycles the Winograd transforms' row pointers (one per worker in flight)
	winoPtrs  freeList[winoPtrSet]
	attnHeads freeList[attnHeads]
	// planes recycles Upscale's index and weight tables
	planes freeList[resample.Planes]
}

// NewCPU returns a cpu backend.
func NewCPU(opts CPUOptions) *CPU {
	t := opts.Threads
	if t <= 0 {
		t = runtime.GOMAXPROCS(0)
	}
	pool := par.New(t)
	if opts.OpLabels {
		// parked workers would not carry the op's pprof labels
		pool = par.NewSpawning(t)
	}
	src, _, err := parseBlocking(opts.Blocking)
	mm := newMatmuler(pool, opts.GEMM, opts.BF16, src, opts.calibrated)
	if err != nil {
		mm = &matmuler{err: err}
	}
	c := &CPU{threads: t, mm: mm, rk: selectRowKernels(mm.generic()), tileFloats: convTileFloats, pool: pool}
	// A backend nobody closes still stops its workers once it is unreachable (they
	// reference only the pool).
	runtime.AddCleanup(c, (*par.Pool).Close, pool)
	c.pack.budget = opts.PackBudget
	if c.pack.budget == 0 {
		c.pack.budget = defaultPackBudget()
	}
	c.convForm, c.noWino, _ = convForm(opts.Conv)
	c.labels = opts.OpLabels
	return c
}

// Close stops the backend's worker goroutines, after the loop in flight; ops run
// afterwards still work, on their caller's goroutine alone. Close may be called more
// than once.
func (c *CPU) Close() { c.pool.Close() }

// BF16 reports whether Linear and Conv2D run with bfloat16 dot products.
func (c *CPU) BF16() bool { return c.mm.weighted != c.mm.wide && c.mm.weighted != nil }

// Name implements Backend.
func (c *CPU) Name() string { return "cpu" }

// Alloc implements Backend: Go memory (8-byte aligned by the allocator, page-aligned for
// the large buffers that matter).
func (c *CPU) Alloc(n int) (*Buffer, error) {
	if n < 0 {
		return nil, fmt.Errorf("gpu: cpu: negative allocation %d", n)
	}
	b := make([]byte, n)
	adviseHuge(b)
	return &Buffer{Host: b}, nil
}

// Free implements Backend; Go's collector reclaims the memory.
func (c *CPU) Free(b *Buffer) { b.Host = nil }

// Upload implements Backend.
func (c *CPU) Upload(dst *Buffer, off int, src []byte) error {
	if off < 0 || off+len(src) > len(dst.Host) {
		return fmt.Errorf("gpu: cpu: upload of %d bytes at %d outside a %d-byte buffer", len(src), off, len(dst.Host))
	}
	copy(dst.Host[off:], src)
	return nil
}

// Download implements Backend.
func (c *CPU) Download(dst []byte, src *Buffer, off int) error {
	if off < 0 || off+len(dst) > len(src.Host) {
		return fmt.Errorf("gpu: cpu: download of %d bytes at %d outside a %d-byte buffer", len(dst), off, len(src.Host))
	}
	copy(dst, src.Host[off:])
	return nil
}

// Synchronize implements Backend; cpu kernels finish before Run returns.
func (c *CPU) Synchronize() error { return nil }

// Supports implements Backend: every op on F32 activations; OpLinear also takes its
// weight in any dtype the GEMM package decodes, OpConv2D in any plain float dtype;
// OpCopy any dtype; OpCast plain floats.
func (c *CPU) Supports(op Op, dtypes ...DType) bool {
	if op < 0 || op >= OpCount || cpuKernels[op] == nil {
		return false
	}
	switch op {
	case OpCopy:
		return true
	case OpCast:
		for _, d := range dtypes {
			if !d.IsFloat() {
				return false
			}
		}
		return true
	case OpEmbedding:
		_, ok := gemmDType(dtypes[0])
		return len(dtypes) == 2 && ok && dtypes[1] == F32
	case OpConv2D:
		for i, d := range dtypes {
			if (i == 1 && !d.IsFloat()) || (i != 1 && d != F32) {
				return false
			}
		}
		return true
	case OpLinear:
		for i, d := range dtypes {
			if i == 1 {
				if _, ok := gemmDType(d); !ok {
					return false
				}
			} else if d != F32 {
				return false
			}
		}
		return true
	}
	for _, d := range dtypes {
		if d != F32 {
			return false
		}
	}
	return true
}

// Run implements Backend.
func (c *CPU) Run(op Op, call *Call) error {
	if op < 0 || op >= OpCount || cpuKernels[op] == nil {
		return fmt.Errorf("gpu: cpu: no kernel for %s", op)
	}
	if c.labels {
		var err error
		pprof.Do(context.Background(), pprof.Labels("op", op.String()), func(context.Context) { err = cpuKernels[op](c, call) })
		return err
	}
	return cpuKernels[op](c, call)
}

type cpuKernel func(c *CPU, call *Call) error

// cpuKernels is the cpu backend's op table (filled in init from the kernel files so that
// each kernel sits beside its op; TestOpTable checks it is complete).
var cpuKernels [OpCount]cpuKernel

func init() {
	cpuKernels = [OpCount]cpuKernel{
		OpCopy:              cpuCopy,
		OpCast:              cpuCast,
		OpMatMul:            cpuMatMul,
		OpLinear:            cpuLinear,
		OpConv2D:            cpuConv2D,
		OpGroupNorm:         cpuGroupNorm,
		OpLayerNorm:         cpuLayerNorm,
		OpRMSNorm:           cpuRMSNorm,
		OpSoftmax:           cpuSoftmax,
		OpAttention:         cpuAttention,
		OpGELU:              cpuUnary(geluErf, func(c *CPU) func(dst, src []float32) { return c.rk.gelu }),
		OpGELUTanh:          cpuUnary(geluTanh, func(c *CPU) func(dst, src []float32) { return c.rk.geluTanh }),
		OpQuickGELU:         cpuUnary(quickGELU, nil),
		OpSiLU:              cpuUnary(silu, func(c *CPU) func(dst, src []float32) { return c.rk.silu }),
		OpAdd:               cpuBinary(OpAdd),
		OpSub:               cpuBinary(OpSub),
		OpMul:               cpuBinary(OpMul),
		OpDiv:               cpuBinary(OpDiv),
		OpConcat:            cpuConcat,
		OpRoPE:              cpuRoPE,
		OpTimestepEmbedding: cpuTimestepEmbedding,
		OpPatchify:          cpuPatchify,
		OpUnpatchify:        cpuUnpatchify,
		OpUpscale:           cpuUpscale,
		OpEmbedding:         cpuEmbedding,
		OpLeakyReLU:         cpuLeakyReLU,
		OpSigmoid:           cpuUnary(sigmoid, nil),
	}
}

// sizedPool recycles work buffers (im2col and attention tiles, conv column offsets,
// broadcast strides) by exact length. A step asks for the same sizes every time, and
// unlike a sync.Pool the free lists survive garbage collection, so a steady-state step
// takes nothing new.
type sizedPool[E any] struct {
	mu   sync.Mutex
	free map[int][][]E
}

// get returns a buffer of n elements (give it back with put); its contents are stale.
func (s *sizedPool[E]) get(n int) []E {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.free[n]; len(l) > 0 {
		b := l[len(l)-1]
		s.free[n] = l[:len(l)-1]
		return b
	}
	b := make([]E, n)
	var e E
	adviseHuge(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(b))), int(unsafe.Sizeof(e))*n))
	return b
}

func (s *sizedPool[E]) put(b []E) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.free == nil {
		s.free = map[int][][]E{}
	}
	s.free[len(b)] = append(s.free[len(b)], b)
}

// gemmDType maps a weight dtype to the GEMM package's, when its kernels decode it: every
// float dtype and every GGUF block type the runtime declares (TestGoldenGGUFLinear runs
// each block type on the golden gguf bytes).
func gemmDType(d DType) (gemm.DType, bool) {
	switch d {
	case F32:
		return gemm.F32, true
	case F16:
		return gemm.F16, true
	case BF16:
		return gemm.BF16, true
	case F8E4M3FN:
		return gemm.F8E4M3FN, true
	case F8E5M2:
		return gemm.F8E5M2, true
	case Q4_0:
		return gemm.Q4_0, true
	case Q4_1:
		return gemm.Q4_1, true
	case Q5_0:
		return gemm.Q5_0, true
	case Q5_1:
		return gemm.Q5_1, true
	case Q8_0:
		return gemm.Q8_0, true
	case Q2_K:
		return gemm.Q2_K, true
	case Q3_K:
		return gemm.Q3_K, true
	case Q4_K:
		return gemm.Q4_K, true
	case Q5_K:
		return gemm.Q5_K, true
	case Q6_K:
		return gemm.Q6_K, true
	case IQ4_NL:
		return gemm.IQ4_NL, true
	case IQ4_XS:
		return gemm.IQ4_XS, true
	case TQ1_0:
		return gemm.TQ1_0, true
	case TQ2_0:
		return gemm.TQ2_0, true
	case MXFP4:
		return gemm.MXFP4, true
	}
	return 0, false
}

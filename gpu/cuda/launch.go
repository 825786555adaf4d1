package cuda

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"time"
	"unsafe"

	"github.com/forgeflow/forgeflow/gpu"
)

// function returns the kernel name of module m, compiling or loading the module on
// first use. Called under b.do. A module that failed once is not tried again: its ops
// fall back to the CPU.
func (b *Backend) function(m module, name string) (uintptr, error) {
	if f, ok := b.fns[name]; ok {
		return f, nil
	}
	if err := b.modErrs[m]; err != nil {
		return 0, err
	}
	mod, ok := b.mods[m]
	if !ok {
		var err error
		if mod, err = b.loadModule(m); err != nil {
			b.modErrs[m] = err
			b.log.Warn("cuda: kernel module unavailable, its ops run on the cpu", "module", string(m), "err", err)
			return 0, err
		}
		b.mods[m] = mod
	}
	var f uintptr
	if err := b.drv.check(b.drv.cuModuleGetFunction(&f, mod, name), "cuModuleGetFunction "+name); err != nil {
		return 0, err
	}
	b.fns[name] = f
	return f, nil
}

// loadModule returns module m: from the disk cache, else compiled by NVRTC for the
// device (and cached).
func (b *Backend) loadModule(m module) (uintptr, error) {
	src, err := moduleSource(m)
	if err != nil {
		return 0, err
	}
	hash := sourceHash(src)
	key := cacheKey{Module: m, SourceHash: hash, CC: b.cc, NVRTC: b.nv.Version()}
	if img, hit := b.cache.load(key); hit {
		if mod, err := b.loadImage(m, img); err == nil {
			return mod, nil
		}
		// a cached image this driver rejects: compile afresh
	}
	start := time.Now()
	img, err := b.nv.compile(src, string(m)+".cu", b.cc)
	if err != nil {
		return 0, fmt.Errorf("cuda: module %s: %w", m, err)
	}
	b.log.Info("cuda: compiled kernels", "module", string(m), "arch", b.cc, "ptx", img.PTX, "ms", time.Since(start).Milliseconds())
	mod, err := b.loadImage(m, img)
	if err != nil {
		return 0, err
	}
	if err := b.cache.store(key, img); err != nil {
		b.log.Warn("cuda: kernel cache not written", "err", err)
	}
	return mod, nil
}

// loadImage loads a CUBIN or PTX image into the context.
func (b *Backend) loadImage(m module, img image) (uintptr, error) {
	data := img.Data
	if img.PTX && (len(data) == 0 || data[len(data)-1] != 0) {
		data = append(slices.Clip(data), 0) // PTX is loaded as a C string
	}
	var mod uintptr
	err := b.drv.check(b.drv.cuModuleLoadData(&mod, unsafe.Pointer(&data[0])), "cuModuleLoadData "+string(m))
	runtime.KeepAlive(data)
	return mod, err
}

// args holds kernel parameters as cuLaunchKernel wants them: an array of pointers, one
// per parameter, each to a value of the parameter's C type. The values are separate Go
// heap objects (never moved by the collector) kept alive until the launch returns.
type args struct {
	ptrs []unsafe.Pointer
	keep []any
}

func (a *args) ptr(p uint64) *args { return a.u64(p) }
func (a *args) u64(v uint64) *args { x := new(uint64); *x = v; return a.add(unsafe.Pointer(x), x) }
func (a *args) i64(v int) *args    { x := new(int64); *x = int64(v); return a.add(unsafe.Pointer(x), x) }
func (a *args) i32(v int) *args    { x := new(int32); *x = int32(v); return a.add(unsafe.Pointer(x), x) }
func (a *args) f32(v float64) *args {
	x := new(float32)
	*x = float32(v)
	return a.add(unsafe.Pointer(x), x)
}
func (a *args) f64(v float64) *args { x := new(float64); *x = v; return a.add(unsafe.Pointer(x), x) }
func (a *args) desc(d desc) *args   { x := new(desc); *x = d; return a.add(unsafe.Pointer(x), x) }

func (a *args) add(p unsafe.Pointer, keep any) *args {
	a.ptrs = append(a.ptrs, p)
	a.keep = append(a.keep, keep)
	return a
}

// launch queues kernel k on the stream with grid × block threads. Called under b.do.
func (b *Backend) launch(k kernelRef, grid [3]int, block int, a *args) error {
	for _, g := range grid {
		if g <= 0 {
			return nil // nothing to do
		}
	}
	if grid[0] > math.MaxInt32 || grid[1] > 65535 || grid[2] > 65535 {
		return fmt.Errorf("cuda: %s: grid %v too large: %w", k.name, grid, gpu.ErrNotSupported)
	}
	f, err := b.function(k.mod, k.name)
	if err != nil {
		return fmt.Errorf("%w: %w", gpu.ErrNotSupported, err)
	}
	var params unsafe.Pointer
	if len(a.ptrs) > 0 {
		params = unsafe.Pointer(&a.ptrs[0])
	}
	res := b.drv.cuLaunchKernel(f, uint32(grid[0]), uint32(grid[1]), uint32(grid[2]), uint32(block), 1, 1, 0, b.stream, params, nil)
	runtime.KeepAlive(a)
	return b.drv.check(res, "cuLaunchKernel "+k.name)
}

// desc is kernels/common.cuh's Desc: a strided view with merged dims.
type desc struct {
	Rank   int64
	Offset int64
	Shape  [maxRank]int64
	Stride [maxRank]int64
}

const maxRank = 8

// mergeDims returns the shapes and strides of views sharing one shape with size-1 dims
// dropped and neighbouring dims merged wherever every view allows (dim i folds into
// i+1 when stride[i] = stride[i+1]·shape[i+1] in all of them): a contiguous tensor
// becomes rank 1, a permuted one keeps the few dims it needs.
func mergeDims(shape []int, strides ...[]int) ([]int, [][]int) {
	var sh []int
	st := make([][]int, len(strides))
	for i, n := range shape {
		if n == 1 {
			continue
		}
		if len(sh) > 0 {
			last := len(sh) - 1
			ok := true
			for k, s := range strides {
				if st[k][last] != s[i]*n {
					ok = false
				}
			}
			if ok {
				sh[last] *= n
				for k, s := range strides {
					st[k][last] = s[i]
				}
				continue
			}
		}
		sh = append(sh, n)
		for k, s := range strides {
			st[k] = append(st[k], s[i])
		}
	}
	return sh, st
}

// descOf builds the Desc of one view (shape, strides, element offset) after mergeDims.
func descOf(shape, strides []int, offset int) (desc, error) {
	var d desc
	if len(shape) > maxRank {
		return d, fmt.Errorf("cuda: %d dims after merging: %w", len(shape), gpu.ErrNotSupported)
	}
	d.Rank, d.Offset = int64(len(shape)), int64(offset)
	for i := range shape {
		d.Shape[i], d.Stride[i] = int64(shape[i]), int64(strides[i])
	}
	return d, nil
}

// gridFor returns a 1-d grid for a grid-stride loop over n elements.
func (b *Backend) gridFor(n int) [3]int {
	const threads = 256
	blocks := (n + threads - 1) / threads
	return [3]int{min(blocks, max(b.sms, 1)*32), 1, 1}
}

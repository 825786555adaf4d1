package cuda

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"github.com/forgeflow/forgeflow/gpu"
)

// Options configure Open. The zero value opens device 0 with the kernel cache in the
// user's cache folder and every weight on the device while memory lasts.
type Options struct {
	// Device is the CUDA ordinal (ComfyUI's --cuda-device).
	Device int
	// Logger receives compile and placement messages; nil discards.
	Logger *slog.Logger
	// CacheDir holds compiled kernels ("" means the user's cache folder,
	// ~/.cache/forgeflow/cuda).
	CacheDir string
	// Placement decides weight by weight whether a weight goes on the device or stays
	// in host memory, streamed in for each use; nil places weights while device memory
	// lasts. weights/memory's Placer applies --lowvram, --novram and --reserve-vram.
	Placement Placement

	// env replaces the machine's library search (tests).
	env *searchEnv
}

// Placement is asked, for each weight of n bytes, whether it goes on the device, which
// has free bytes available (idle pool blocks included); Release gives back the bytes of
// a placed weight that was freed.
type Placement interface {
	Place(n, free int64) bool
	Release(n int64)
}

// Backend is one CUDA device: its context, one stream on which every copy and kernel is
// ordered, the pooling allocator, pinned staging buffers and the compiled kernel
// modules. It implements gpu.Backend and gpu.WeightPlacer and is safe for concurrent
// use (calls are serialised: the device runs one stream).
type Backend struct {
	drv   *driver
	nv    *nvrtcLib
	log   *slog.Logger
	opts  Options
	cache kernelCache

	dev        int32
	ctx        uintptr
	stream     uintptr
	name       string
	cc         int // compute capability ×10
	sms        int
	totalBytes uint64
	driverVer  int

	pool  *devicePool
	stage *staging

	mu      sync.Mutex // serialises device work and guards the fields below
	mods    map[module]uintptr
	modErrs map[module]error
	fns     map[string]uintptr
	placed  int64 // weight bytes placed on the device
	closed  bool
}

// devMem is the Handle of a device buffer.
type devMem struct {
	ptr, class uint64
	weight     bool
	freed      bool
}

// Open loads the driver and NVRTC, opens device opts.Device and returns its backend.
// Every failure is an error that says what was missing and where the search looked:
// the caller logs it in one line and runs on the CPU.
func Open(opts Options) (*Backend, error) {
	env := osSearchEnv()
	if opts.env != nil {
		env = *opts.env
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dirs := searchDirs(env)
	drv, err := loadDriver(env, dirs)
	if err != nil {
		return nil, err
	}
	nv, err := loadNVRTC(env, dirs)
	if err != nil {
		return nil, err
	}
	cacheDir := opts.CacheDir
	if cacheDir == "" {
		cacheDir = defaultCacheDir()
	}
	b := &Backend{drv: drv, nv: nv, log: log, opts: opts, cache: kernelCache{dir: cacheDir},
		mods: map[module]uintptr{}, modErrs: map[module]error{}, fns: map[string]uintptr{}}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := b.init(); err != nil {
		return nil, err
	}
	b.pool = newDevicePool(deviceMemory{b})
	b.stage = newStaging(b)
	return b, nil
}

func (b *Backend) init() error {
	d := b.drv
	if err := d.check(d.cuInit(0), "cuInit"); err != nil {
		return err
	}
	var v, n int32
	if err := d.check(d.cuDriverGetVersion(&v), "cuDriverGetVersion"); err != nil {
		return err
	}
	b.driverVer = int(v)
	if err := d.check(d.cuDeviceGetCount(&n), "cuDeviceGetCount"); err != nil {
		return err
	}
	if n == 0 {
		return errors.New("cuda: the driver reports no CUDA device")
	}
	if b.opts.Device < 0 || b.opts.Device >= int(n) {
		return fmt.Errorf("cuda: device %d does not exist (%d found: 0…%d)", b.opts.Device, n, n-1)
	}
	if err := d.check(d.cuDeviceGet(&b.dev, int32(b.opts.Device)), "cuDeviceGet"); err != nil {
		return err
	}
	name := make([]byte, 256)
	if err := d.check(d.cuDeviceGetName(unsafe.Pointer(&name[0]), int32(len(name)), b.dev), "cuDeviceGetName"); err != nil {
		return err
	}
	for i, c := range name {
		if c == 0 {
			name = name[:i]
			break
		}
	}
	b.name = string(name)
	attr := func(a int32) int {
		var x int32
		d.cuDeviceGetAttribute(&x, a, b.dev)
		return int(x)
	}
	b.cc = 10*attr(attrCCMajor) + attr(attrCCMinor)
	b.sms = attr(attrMultiprocessors)
	if err := d.check(d.cuDeviceTotalMem(&b.totalBytes, b.dev), "cuDeviceTotalMem"); err != nil {
		return err
	}
	if err := d.check(d.cuDevicePrimaryCtxRetain(&b.ctx, b.dev), "cuDevicePrimaryCtxRetain"); err != nil {
		return err
	}
	if err := d.check(d.cuCtxSetCurrent(b.ctx), "cuCtxSetCurrent"); err != nil {
		return err
	}
	const streamNonBlocking = 1
	return d.check(d.cuStreamCreate(&b.stream, streamNonBlocking), "cuStreamCreate")
}

// do runs f with the device's context current on this OS thread, one caller at a time.
func (b *Backend) do(f func() error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errors.New("cuda: backend is closed")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := b.drv.check(b.drv.cuCtxSetCurrent(b.ctx), "cuCtxSetCurrent"); err != nil {
		return err
	}
	return f()
}

// Info describes the device.
type Info struct {
	Name          string
	Index         int
	CC            int // compute capability ×10
	SMs           int
	TotalBytes    uint64
	DriverVersion int    // e.g. 12040
	NVRTC         string // "major.minor"
	DriverPath    string
	NVRTCPath     string
}

// Info returns what Open found.
func (b *Backend) Info() Info {
	i := Info{Name: b.name, Index: b.opts.Device, CC: b.cc, SMs: b.sms, TotalBytes: b.totalBytes,
		DriverVersion: b.driverVer, NVRTC: b.nv.Version(), NVRTCPath: b.nv.path, DriverPath: b.drv.path}
	return i
}

// MemoryStats are the device's numbers for /system_stats.
type MemoryStats struct {
	Total, Free         uint64 // the whole device (cuMemGetInfo)
	Reserved, Active    uint64 // held by the pool / in use (torch's reserved and allocated)
	Peak                uint64
	WeightBytesOnDevice int64
}

// MemoryStats reads free and total device memory and the pool's numbers.
func (b *Backend) MemoryStats() MemoryStats {
	var s MemoryStats
	_ = b.do(func() error { return b.drv.check(b.drv.cuMemGetInfo(&s.Free, &s.Total), "cuMemGetInfo") })
	s.Reserved, s.Active, s.Peak = b.pool.stats()
	b.mu.Lock()
	s.WeightBytesOnDevice = b.placed
	b.mu.Unlock()
	return s
}

// FreeCache returns the pool's idle blocks to the device (POST /free).
func (b *Backend) FreeCache() { _ = b.do(func() error { b.pool.trim(); return nil }) }

// Name implements gpu.Backend.
func (b *Backend) Name() string { return "cuda" }

// deviceMemory is the pool's raw memory: cuMemAlloc/cuMemFree, called under b.do.
type deviceMemory struct{ b *Backend }

func (m deviceMemory) alloc(n uint64) (uint64, error) {
	var p uint64
	return p, m.b.drv.check(m.b.drv.cuMemAlloc(&p, n), "cuMemAlloc")
}

func (m deviceMemory) free(p uint64) error { return m.b.drv.check(m.b.drv.cuMemFree(p), "cuMemFree") }

// alloc takes a block from the pool. Device buffers that Go collects without a Free
// (tensors never released, the weights of an evicted model) go back to the pool through
// a cleanup; when the device is full, one collection gives those back before failing.
func (b *Backend) alloc(n int, weight bool) (*gpu.Buffer, error) {
	if n < 0 {
		return nil, fmt.Errorf("cuda: negative allocation %d", n)
	}
	var ptr, class uint64
	err := b.do(func() error {
		var err error
		ptr, class, err = b.pool.get(uint64(n))
		return err
	})
	if errors.Is(err, errOutOfMemory) {
		runtime.GC()
		time.Sleep(20 * time.Millisecond) // let the cleanups of the collected buffers run
		err = b.do(func() error {
			var err error
			ptr, class, err = b.pool.get(uint64(n))
			return err
		})
	}
	if err != nil {
		return nil, fmt.Errorf("cuda: allocating %d bytes: %w", n, err)
	}
	m := &devMem{ptr: ptr, class: class, weight: weight}
	buf := &gpu.Buffer{Handle: m}
	runtime.AddCleanup(buf, func(m *devMem) { b.release(m) }, m)
	return buf, nil
}

func (b *Backend) release(m *devMem) {
	b.mu.Lock()
	if m.freed || b.closed {
		b.mu.Unlock()
		return
	}
	m.freed = true
	if m.weight {
		b.placed -= int64(m.class)
		if p := b.opts.Placement; p != nil {
			p.Release(int64(m.class))
		}
	}
	b.mu.Unlock()
	// stream order makes the block safe to reuse at once: later work is queued after
	// every kernel that may still read it
	b.pool.put(m.ptr, m.class)
}

// Alloc implements gpu.Backend.
func (b *Backend) Alloc(n int) (*gpu.Buffer, error) { return b.alloc(n, false) }

// Free implements gpu.Backend.
func (b *Backend) Free(buf *gpu.Buffer) {
	if m, ok := buf.Handle.(*devMem); ok {
		b.release(m)
	}
}

func devPtr(buf *gpu.Buffer) (uint64, bool) {
	m, ok := buf.Handle.(*devMem)
	if !ok || m.freed {
		return 0, false
	}
	return m.ptr, true
}

// Upload implements gpu.Backend: through pinned staging buffers, asynchronously.
func (b *Backend) Upload(dst *gpu.Buffer, off int, src []byte) error {
	p, ok := devPtr(dst)
	if !ok || off < 0 || off+len(src) > dst.Size() {
		return fmt.Errorf("cuda: upload of %d bytes at %d into a %d-byte buffer", len(src), off, dst.Size())
	}
	return b.do(func() error { return b.stage.upload(p+uint64(off), src) })
}

// Download implements gpu.Backend; the bytes are in dst when it returns.
func (b *Backend) Download(dst []byte, src *gpu.Buffer, off int) error {
	if src.Host != nil {
		copy(dst, src.Host[off:])
		return nil
	}
	p, ok := devPtr(src)
	if !ok || off < 0 || off+len(dst) > src.Size() {
		return fmt.Errorf("cuda: download of %d bytes at %d from a %d-byte buffer", len(dst), off, src.Size())
	}
	return b.do(func() error { return b.stage.download(dst, p+uint64(off)) })
}

// Synchronize implements gpu.Backend.
func (b *Backend) Synchronize() error {
	return b.do(func() error { return b.drv.check(b.drv.cuStreamSynchronize(b.stream), "cuStreamSynchronize") })
}

// PlaceWeight implements gpu.WeightPlacer: the weight goes to the device while the
// options' bounds and the device's free memory (less the reserve) allow; otherwise it
// stays in host memory (no copy: a memory-mapped file stays mapped) and each op that
// reads it copies it in through the staging buffers.
func (b *Backend) PlaceWeight(data []byte) (*gpu.Buffer, error) {
	n := int64(sizeClass(uint64(len(data))))
	if !b.fitsWeight(n) {
		return &gpu.Buffer{Host: data}, nil
	}
	buf, err := b.alloc(len(data), true)
	if err != nil {
		b.mu.Lock()
		p := b.opts.Placement
		b.mu.Unlock()
		if p != nil {
			p.Release(n)
		}
		b.log.Debug("weight kept in host memory", "bytes", len(data), "err", err)
		return &gpu.Buffer{Host: data}, nil
	}
	m := buf.Handle.(*devMem)
	b.mu.Lock()
	b.placed += int64(m.class)
	b.mu.Unlock()
	if err := b.do(func() error { return b.stage.upload(m.ptr, data) }); err != nil {
		b.Free(buf)
		return nil, err
	}
	return buf, nil
}

// SetPlacement sets the weight placement policy (Options.Placement) once the device's
// memory is known; weights placed before keep their place.
func (b *Backend) SetPlacement(p Placement) {
	b.mu.Lock()
	b.opts.Placement = p
	b.mu.Unlock()
}

func (b *Backend) fitsWeight(n int64) bool {
	var free, total uint64
	if err := b.do(func() error { return b.drv.check(b.drv.cuMemGetInfo(&free, &total), "cuMemGetInfo") }); err != nil {
		return false
	}
	reserved, active, _ := b.pool.stats()
	avail := int64(free) + int64(reserved-active) // idle pool blocks count as free
	b.mu.Lock()
	p := b.opts.Placement
	b.mu.Unlock()
	if p == nil {
		return avail >= n
	}
	return p.Place(n, avail)
}

// Close releases the device; the backend must not be used afterwards.
func (b *Backend) Close() error {
	return b.do(func() error {
		b.pool.trim()
		b.stage.close()
		b.closed = true
		return b.drv.check(b.drv.cuDevicePrimaryCtxRelease(b.dev), "cuDevicePrimaryCtxRelease")
	})
}

var (
	_ gpu.Backend      = (*Backend)(nil)
	_ gpu.WeightPlacer = (*Backend)(nil)
)

// Describe names the device for reports, e.g. "cuda:0 NVIDIA H100 80GB HBM3 (sm_90)".
func (b *Backend) Describe() string {
	return fmt.Sprintf("cuda:%d %s (sm_%d)", b.opts.Device, b.name, b.cc)
}

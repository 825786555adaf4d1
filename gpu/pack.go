package gpu

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/forgeflow/forgeflow/gpu/internal/gemm"
)

// Weight panels. Converting and transposing a stored weight into the GEMM's panel layout
// on every call cost 12–20 % of an SD1.5 UNet evaluation (all of it at the 8×8 and 4×4
// latents, where a 14.7 M-element weight meets only 128 rows). The cpu backend therefore
// lays each Linear/Conv2D weight out once, at first use, in its stored width (F32, F16
// or BF16: the micro-kernel widens 16-bit panels as it loads them), and keeps the panels
// with the weight's buffer. Only weights wrapped by Runtime.FromBytes are packed: they
// are immutable by contract, whereas pooled buffers are reused for other tensors. The
// results are bit-identical to the unpacked path.

// convForm maps a CPUOptions.Conv name to a CPU.convForm, and whether Winograd is
// ruled out.
func convForm(name string) (form int, direct bool, err error) {
	switch strings.ToLower(name) {
	case "", "auto":
		return convAuto, false, nil
	case "winograd":
		return convFormWino, false, nil
	case "direct":
		return convAuto, true, nil
	}
	return convAuto, false, fmt.Errorf("gpu: conv form %q: want auto, direct or winograd", name)
}

// packEntry is one packed view of a buffer: a weight's element offset, shape and dtype,
// and its GEMM panels or its Winograd matrices (winograd.go).
type packEntry struct {
	off, n, k int
	dt        DType
	pk        *gemm.Packed
	wino      *winoWeights
}

// packSet is the packed views of one buffer (usually one).
type packSet struct {
	mu      sync.Mutex
	entries []packEntry
}

// packer owns the cpu backend's packing budget and the bytes its panels hold.
type packer struct {
	budget int64 // bytes; ≤ 0: never pack
	held   atomic.Int64
}

// defaultPackBudget is a quarter of the machine's RAM (the panels are as large as the
// stored weights, which stay mapped): an SDXL UNet in F16 fits on a 24 GB machine, a
// bfloat16 Flux does not and keeps converting per call. Without a RAM figure, 4 GiB.
func defaultPackBudget() int64 {
	if r := totalRAM(); r > 0 {
		return r / 4
	}
	return 4 << 30
}

// packedWeight returns the panels of weight w (n×k, contiguous) for the cpu backend's
// weighted engine, packing them on first use, or nil where w is not packed: a pooled or
// device buffer, a dtype the kernel cannot widen, an engine without panels (bfloat16 dot
// products, the generic path), or no budget left.
func (c *CPU) packedWeight(w *Tensor, n, k int) *gemm.Packed {
	gd, ok := gemmDType(w.dtype)
	e := c.mm.weighted
	if !ok || n == 0 || k == 0 || c.mm.err != nil || !e.CanPack(gd) {
		return nil
	}
	ps := c.packSetOf(w)
	if ps == nil {
		return nil
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, en := range ps.entries {
		if en.pk != nil && en.off == w.offset && en.n == n && en.k == k && en.dt == w.dtype {
			return en.pk
		}
	}
	size := e.PackedBytes(gd, n, k)
	if !c.pack.reserve(size) {
		return nil
	}
	pk, err := e.Pack(gemm.Weight{DType: gd, N: n, K: k, Data: w.bytes()})
	if err != nil {
		c.pack.held.Add(-size)
		return nil
	}
	c.pack.track(w.buf, size)
	ps.entries = append(ps.entries, packEntry{off: w.offset, n: n, k: k, dt: w.dtype, pk: pk})
	return pk
}

// packSetOf returns the pack cache of w's buffer, or nil when w may not be packed
// (packing off, or a pooled or device buffer).
func (c *CPU) packSetOf(w *Tensor) *packSet {
	b := w.buf
	if c.pack.budget <= 0 || b == nil || b.pool != nil || b.Host == nil {
		return nil
	}
	ps := b.packs.Load()
	if ps == nil {
		b.packs.CompareAndSwap(nil, new(packSet))
		ps = b.packs.Load()
	}
	return ps
}

// reserve counts size more bytes against the budget, or reports false (counting
// nothing) when they do not fit.
func (p *packer) reserve(size int64) bool {
	if p.held.Add(size) > p.budget {
		p.held.Add(-size)
		return false
	}
	return true
}

// track gives size bytes back to the budget once b is collected: packed data lives as
// long as its weight's buffer.
func (p *packer) track(b *Buffer, size int64) {
	runtime.AddCleanup(b, func(p *packer) { p.held.Add(-size) }, p)
}

// PackedBytes reports the bytes the cpu backend holds in packed weight panels (memory on
// top of the model files, counted against a budget of a quarter of the RAM).
func (rt *Runtime) PackedBytes() int64 { return rt.cpu.pack.held.Load() }

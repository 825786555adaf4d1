package gpu

import (
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/forgeflow/forgeflow/gpu/internal/gemm"
)

// TestPackedWeights checks that Conv2D (both forms) and Linear with weights packed at
// first use (pack.go) give exactly the bits of the unpacked runtime, that the panels are
// made once and counted, that pooled (reusable) buffers and an exhausted budget are never
// packed, and that a weight view at an offset gets its own panels.
func TestPackedWeights(t *testing.T) {
	off, err := New(Options{Threads: 2, PackBudget: -1})
	if err != nil {
		t.Fatal(err)
	}
	on := newRT(t)
	if on.cpu.pack.budget <= 0 || off.cpu.pack.budget > 0 {
		t.Fatalf("budgets: on %d, off %d", on.cpu.pack.budget, off.cpu.pack.budget)
	}
	if !on.cpu.mm.weighted.CanPack(gemm.F32) {
		t.Skip("this path packs no weights (generic GEMM)")
	}
	r := rand.New(rand.NewPCG(5, 6))
	same := func(name string, a *Tensor, ea error, b *Tensor, eb error) {
		t.Helper()
		x, y := ok(t)(a, ea), ok(t)(b, eb)
		defer x.Release()
		defer y.Release()
		xv, _ := x.Float32()
		yv, _ := y.Float32()
		for i := range xv {
			if math.Float32bits(xv[i]) != math.Float32bits(yv[i]) {
				t.Fatalf("%s: element %d = %v packed, %v unpacked", name, i, xv[i], yv[i])
			}
		}
	}
	// every dtype's weights stay reachable to the end: a collected weight gives its
	// panels' bytes back (pack.go's cleanup), which would cancel a later dtype's count
	var keep []*Tensor
	defer func() { runtime.KeepAlive(keep) }()
	for _, dt := range []DType{F32, F16, BF16} {
		// a weight with two views: rows 0…39 and rows 8…47 of one buffer
		wv := randData(r, 48*24*3*3)
		nb, _ := dt.StorageBytes(len(wv))
		raw := make([]byte, nb)
		if err := EncodeFloat32(dt, raw, wv); err != nil {
			t.Fatal(err)
		}
		wOn, wOff := ok(t)(on.FromBytes(dt, raw, 48, 24, 3, 3)), ok(t)(off.FromBytes(dt, raw, 48, 24, 3, 3))
		xv := randData(r, 2*24*13*11)
		xOn, xOff := ok(t)(on.FromFloat32(xv, 2, 24, 13, 11)), ok(t)(off.FromFloat32(xv, 2, 24, 13, 11))
		before := on.PackedBytes()
		for _, view := range [][2]int{{0, 40}, {8, 40}} {
			a, b := ok(t)(Narrow(wOn, 0, view[0], view[1])), ok(t)(Narrow(wOff, 0, view[0], view[1]))
			for _, form := range []int{convFormBand, convFormCol} {
				on.cpu.convForm, off.cpu.convForm = form, form
				for range 2 {
					y1, e1 := Conv2D(on, xOn, a, nil, 1, 1)
					y2, e2 := Conv2D(off, xOff, b, nil, 1, 1)
					same(dt.String()+" conv", y1, e1, y2, e2)
				}
			}
		}
		on.cpu.convForm, off.cpu.convForm = convAuto, convAuto
		// the Linear view of a 2-d weight: 40 × 216
		lw := ok(t)(on.FromBytes(dt, raw[:len(raw)/48*40], 40, 216))
		lwOff := ok(t)(off.FromBytes(dt, raw[:len(raw)/48*40], 40, 216))
		keep = append(keep, wOn, lw)
		lx := randData(r, 30*216)
		a, b := ok(t)(on.FromFloat32(lx, 30, 216)), ok(t)(off.FromFloat32(lx, 30, 216))
		for range 2 {
			y1, e1 := Linear(on, a, lw, nil)
			y2, e2 := Linear(off, b, lwOff, nil)
			same(dt.String()+" linear", y1, e1, y2, e2)
		}
		per := on.cpu.mm.weighted.PackedBytes(gemmDTypeOf(t, dt), 40, 216)
		if got := on.PackedBytes() - before; got != 3*per {
			t.Errorf("%s: %d packed bytes for three weight views, want %d", dt, got, 3*per)
		}
		if off.PackedBytes() != 0 {
			t.Errorf("packing off, yet %d bytes packed", off.PackedBytes())
		}
	}
	// pooled buffers are reused for other tensors: never packed
	pw := ok(t)(on.FromFloat32(randData(r, 40*216), 40, 216))
	before := on.PackedBytes()
	y, err := Linear(on, ok(t)(on.FromFloat32(randData(r, 30*216), 30, 216)), pw, nil)
	ok(t)(y, err).Release()
	if on.PackedBytes() != before {
		t.Error("a pooled weight was packed")
	}
	// no budget left: the weight is used unpacked
	small := newRT(t)
	small.cpu.pack.budget = 1
	sw := ok(t)(small.FromBytes(F32, make([]byte, 40*216*4), 40, 216))
	y, err = Linear(small, ok(t)(small.FromFloat32(randData(r, 30*216), 30, 216)), sw, nil)
	ok(t)(y, err).Release()
	if small.PackedBytes() != 0 {
		t.Errorf("%d bytes packed past a 1-byte budget", small.PackedBytes())
	}
}

func gemmDTypeOf(t *testing.T, d DType) gemm.DType {
	g, found := gemmDType(d)
	if !found {
		t.Fatalf("%s has no gemm dtype", d)
	}
	return g
}

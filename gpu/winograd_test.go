package gpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/forgeflow/forgeflow/gpu/internal/gemm"
)

// TestWinogradConv runs stride-1 3×3 convolutions through the Winograd form (forced, so
// that small shapes take it) against the float64 reference with the op suite's conv
// tolerance: channel counts with and without 16-channel vector tails, odd output sizes
// (half-used edge tiles), asymmetric and zero padding, several images, several row bands
// (a small scratch), every weight dtype, with and without bias; then checks that the
// automatic choice takes it for a large map and that the transformed weights are made
// once.
func TestWinogradConv(t *testing.T) {
	rt := newRT(t)
	if !rt.cpu.mm.wide.CanPack(0) {
		t.Skip("the Winograd form needs a packing GEMM path")
	}
	r := rand.New(rand.NewPCG(11, 12))
	old := rt.cpu.convForm
	rt.cpu.convForm = convFormWino
	defer func() { rt.cpu.convForm = old }()
	cases := []struct {
		n, cin, h, w, cout int
		p                  ConvParams
		wd                 DType
		bias               bool
		tile               int
	}{
		{1, 16, 8, 8, 16, ConvParams{Stride: 1, Top: 1, Bottom: 1, Left: 1, Right: 1}, F32, true, 0},
		{2, 20, 9, 7, 35, ConvParams{Stride: 1, Top: 1, Bottom: 1, Left: 1, Right: 1}, F16, true, 0},
		{1, 48, 13, 11, 32, ConvParams{Stride: 1, Top: 1, Bottom: 1, Left: 1, Right: 1}, BF16, false, 3000},
		{3, 5, 6, 10, 4, ConvParams{Stride: 1}, F32, true, 0},
		{1, 32, 7, 9, 16, ConvParams{Stride: 1, Top: 0, Bottom: 2, Left: 2, Right: 0}, F16, true, 0},
		{1, 64, 32, 32, 64, ConvParams{Stride: 1, Top: 1, Bottom: 1, Left: 1, Right: 1}, F16, true, 0},
	}
	for _, cs := range cases {
		t.Run(fmt.Sprintf("%dx%dx%dx%d-to-%d-%s-%+v", cs.n, cs.cin, cs.h, cs.w, cs.cout, cs.wd, cs.p), func(t *testing.T) {
			if cs.tile > 0 {
				oldT := rt.cpu.tileFloats
				rt.cpu.tileFloats = cs.tile
				defer func() { rt.cpu.tileFloats = oldT }()
			}
			x, xv := randTensor(t, rt, r, false, cs.n, cs.cin, cs.h, cs.w)
			wt, wv := weightOf(t, rt, cs.wd, randData(r, cs.cout*cs.cin*9), cs.cout, cs.cin*9)
			wt = ok(t)(Reshape(rt, wt, cs.cout, cs.cin, 3, 3))
			var b *Tensor
			var bv []float64
			if cs.bias {
				b, bv = randTensor(t, rt, r, false, cs.cout)
			}
			// the reference on the explicitly padded input
			hp, wp := cs.h+cs.p.Top+cs.p.Bottom, cs.w+cs.p.Left+cs.p.Right
			padded := make([]float64, cs.n*cs.cin*hp*wp)
			for i := 0; i < cs.n*cs.cin; i++ {
				for y := 0; y < cs.h; y++ {
					copy(padded[(i*hp+y+cs.p.Top)*wp+cs.p.Left:][:cs.w], xv[(i*cs.h+y)*cs.w:][:cs.w])
				}
			}
			want, _, _ := convRef(padded, wv, bv, cs.n, cs.cin, hp, wp, cs.cout, 3, 3, 1, 0)
			for range 2 {
				checkClose(t, ok(t)(Conv2DPadded(rt, x, wt, b, cs.p)), want, 1e-4, 1e-5)
			}
			// made once, and only the Winograd matrices (no direct-form panels)
			if ps := wt.buf.packs.Load(); ps == nil || len(ps.entries) != 1 || ps.entries[0].wino == nil {
				t.Errorf("pack entries %+v, want one set of transformed weights", ps)
			}
		})
	}
	rt.cpu.convForm = convAuto
	cv := convGeom{n: 2, cin: 320, cout: 320, kh: 3, kw: 3, oh: 32, ow: 32, p: ConvParams{Stride: 1}}
	if !rt.cpu.wantWinograd(&cv) {
		t.Error("a 2×320×32×32 conv does not take the Winograd form")
	}
	cv.oh, cv.ow = 8, 8
	if rt.cpu.wantWinograd(&cv) {
		t.Error("a 2×320×8×8 conv takes the Winograd form")
	}
	cv.oh, cv.ow, cv.cin, cv.cout = 32, 32, 1280, 1280
	if rt.cpu.wantWinograd(&cv) {
		t.Error("a 1280-channel conv takes the Winograd form (105 MB of transformed weights)")
	}
}

// TestWinogradTransforms checks the vector transforms against the Go forms bit for bit
// on channel counts with vector tails.
func TestWinogradTransforms(t *testing.T) {
	rk := selectRowKernels(false)
	r := rand.New(rand.NewPCG(13, 14))
	for _, n := range []int{1, 15, 16, 17, 48, 70} {
		in := make([]float32, 16*n)
		for i := range in {
			in[i] = float32(r.NormFloat64())
		}
		outV, outG := make([]float32, 16*n), make([]float32, 16*n)
		var src, dv, dg [16]*float32
		for k := range src {
			src[k] = &in[k*n]
			dv[k], dg[k] = &outV[k*n], &outG[k*n]
		}
		rk.winoIn(&dv, &src, n)
		winoInGo(&dg, &src, n)
		var ov, og [4]*float32
		yv, yg := make([]float32, 4*n), make([]float32, 4*n)
		for k := range ov {
			ov[k], og[k] = &yv[k*n], &yg[k*n]
		}
		rk.winoOut(&ov, &src, n)
		winoOutGo(&og, &src, n)
		for i := range outV {
			if math.Float32bits(outV[i]) != math.Float32bits(outG[i]) {
				t.Fatalf("n=%d: input transform value %d: %v, Go %v", n, i, outV[i], outG[i])
			}
		}
		for i := range yv {
			if math.Float32bits(yv[i]) != math.Float32bits(yg[i]) {
				t.Fatalf("n=%d: output transform value %d: %v, Go %v", n, i, yv[i], yg[i])
			}
		}
	}
	// a single tile against the definition: Y = Aᵀ·((G·g·Gᵀ) ⊙ (Bᵀ·d·B))·A is the valid
	// 3×3 correlation of the 4×4 window
	var d [16]float32
	var g [9]float32
	for i := range d {
		d[i] = float32(r.NormFloat64())
	}
	for i := range g {
		g[i] = float32(r.NormFloat64())
	}
	var v [16]float32
	var src, dst [16]*float32
	for k := range src {
		src[k], dst[k] = &d[k], &v[k]
	}
	winoInGo(&dst, &src, 1)
	gb := unsafe.Slice((*byte)(unsafe.Pointer(&g[0])), 36)
	rt := newRT(t)
	w := ok(t)(rt.FromBytes(F32, gb, 1, 1, 3, 3))
	if !rt.cpu.mm.wide.CanPack(0) {
		return
	}
	ww, err := transformWeights(rt.cpu, w, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	var m [16]float32
	for ij := range m {
		y := make([]float32, 5)
		x := []float32{v[ij], 0, 0, 0, 0}
		if err := rt.cpu.mm.wide.Linear(5, x, 1, gemmWeight(ww, ij), y, 1, false); err != nil {
			t.Fatal(err)
		}
		m[ij] = y[0]
	}
	var y [4]float32
	var ms [16]*float32
	var ys [4]*float32
	for k := range ms {
		ms[k] = &m[k]
	}
	for k := range ys {
		ys[k] = &y[k]
	}
	winoOutGo(&ys, &ms, 1)
	for a := 0; a < 2; a++ {
		for b := 0; b < 2; b++ {
			var want float64
			for ky := 0; ky < 3; ky++ {
				for kx := 0; kx < 3; kx++ {
					want += float64(d[(a+ky)*4+b+kx]) * float64(g[ky*3+kx])
				}
			}
			if math.Abs(float64(y[2*a+b])-want) > 1e-5*(1+math.Abs(want)) {
				t.Errorf("output (%d, %d) = %v, want %v", a, b, y[2*a+b], want)
			}
		}
	}
}

// gemmWeight is transformed matrix ij of a 1×1-channel weight, as the GEMM takes it.
func gemmWeight(ww *winoWeights, ij int) gemm.Weight {
	return gemm.Weight{DType: gemm.F32, N: 1, K: 1, Packed: ww.u[ij]}
}

// TestConvOption checks that Options.Conv names are checked and honoured.
func TestConvOption(t *testing.T) {
	if _, err := New(Options{Conv: "fft"}); err == nil {
		t.Error("an unknown conv form was accepted")
	}
	for name, want := range map[string]int{"": convAuto, "auto": convAuto, "direct": convAuto, "winograd": convFormWino} {
		rt, err := New(Options{Conv: name})
		if err != nil {
			t.Fatal(err)
		}
		if rt.cpu.convForm != want || rt.cpu.noWino != (name == "direct") {
			t.Errorf("conv %q: form %d, noWino %v", name, rt.cpu.convForm, rt.cpu.noWino)
		}
	}
}

// TestOpLabels runs ops of both conv forms with profile labels on: the results are the
// same as without.
func TestOpLabels(t *testing.T) {
	plain := newRT(t)
	labelled, err := New(Options{Threads: 2, OpLabels: true})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(15, 16))
	xv, wv := randData(r, 2*16*9*9), randData(r, 16*16*9)
	raw := make([]byte, 4*len(wv))
	if err := EncodeFloat32(F32, raw, wv); err != nil {
		t.Fatal(err)
	}
	for _, form := range []int{convAuto, convFormWino} {
		var got [2][]float32
		for i, rt := range []*Runtime{plain, labelled} {
			rt.cpu.convForm = form
			x := ok(t)(rt.FromFloat32(xv, 2, 16, 9, 9))
			w := ok(t)(rt.FromBytes(F32, raw, 16, 16, 3, 3))
			y := ok(t)(Conv2D(rt, x, w, nil, 1, 1))
			got[i], _ = y.Float32()
		}
		for i := range got[0] {
			if math.Float32bits(got[0][i]) != math.Float32bits(got[1][i]) {
				t.Fatalf("form %d: element %d differs with labels: %v vs %v", form, i, got[1][i], got[0][i])
			}
		}
	}
}

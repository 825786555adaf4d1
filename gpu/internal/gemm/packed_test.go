package gemm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestPackedMatchesStored checks that Linear and LinearGather with a Packed
// weight give exactly the bits of the same call on the stored weight (same
// panel depth and summation order), on every path that packs, for the
// packable dtypes, shapes that leave edge slivers and edge rows, grids with
// one and several column blocks, and accumulate on and off.
func TestPackedMatchesStored(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	shapes := []shape{{5, 7, 3}, {13, 33, 64}, {24, 40, 17}, {100, 1280, 96}, {37, 320, 900}, {600, 70, 50}, {2000, 96, 40}}
	engines := enginesUnderTest(t)
	for _, p := range []Path{PathAVX2, PathAVX512} {
		// 16-bit weights in float32 panels (Options.Widen16)
		if e, err := New(Options{Path: p, Threads: 2, Widen16: Widen16Always}); err == nil {
			engines = append(engines, e)
		}
	}
	for _, e := range engines {
		for _, d := range []DType{F32, F16, BF16} {
			if !e.CanPack(d) {
				if e.Path() != PathGeneric {
					t.Errorf("%s cannot pack %s", engineName(e), d)
				}
				continue
			}
			for _, sh := range shapes {
				m, n, k := sh.m, sh.n, sh.k
				t.Run(fmt.Sprintf("%s-widen%v/%s/%dx%dx%d", engineName(e), e.Widened(), d, m, n, k), func(t *testing.T) {
					data, _ := testWeight(r, d, n, k)
					w := Weight{DType: d, N: n, K: k, Data: data}
					pk, err := e.Pack(w)
					if err != nil {
						t.Fatal(err)
					}
					if got, want := pk.Bytes(), e.PackedBytes(d, n, k); got != want || got == 0 {
						t.Fatalf("Bytes %d, PackedBytes %d", got, want)
					}
					wp := w
					wp.Packed = pk
					if e.usablePacked(&wp) == nil {
						t.Fatal("the engine does not use its own packed weight")
					}
					x := randSlice(r, m*k)
					gx := randSlice(r, 2*m+k+20)
					off := make([]int, k)
					for p := range off {
						off[p] = r.IntN(len(gx) - m + 1)
					}
					for _, acc := range []bool{false, true} {
						ldy := n + 3
						y0 := randSlice(r, m*ldy)
						for _, gather := range []bool{false, true} {
							want, got := append([]float32(nil), y0...), append([]float32(nil), y0...)
							run := func(w Weight, y []float32) {
								var err error
								if gather {
									err = e.LinearGather(m, gx, off, w, y, ldy, acc)
								} else {
									err = e.Linear(m, x, k, w, y, ldy, acc)
								}
								if err != nil {
									t.Fatal(err)
								}
							}
							run(w, want)
							run(wp, got)
							for i := range want {
								if math.Float32bits(want[i]) != math.Float32bits(got[i]) {
									t.Fatalf("gather %v acc %v: element %d (row %d col %d) = %v packed, %v stored", gather, acc, i, i/ldy, i%ldy, got[i], want[i])
								}
							}
						}
					}
				})
			}
		}
	}
}

// TestPackedIgnoredWhereUnusable checks that an Engine whose kernel does
// not read a Packed layout (another path, the bfloat16 dot products) falls
// back to the stored weight, and that Pack refuses what it cannot lay out.
func TestPackedIgnoredWhereUnusable(t *testing.T) {
	r := rand.New(rand.NewPCG(43, 44))
	data, wf := testWeight(r, F16, 40, 24)
	w := Weight{DType: F16, N: 40, K: 24, Data: data}
	var packer *Engine
	for _, p := range []Path{PathAVX512, PathAVX2} {
		if e, err := New(Options{Path: p}); err == nil && e.CanPack(F16) {
			packer = e
			break
		}
	}
	if packer == nil {
		t.Skip("no path packs F16 here")
	}
	pk, err := packer.Pack(w)
	if err != nil {
		t.Fatal(err)
	}
	w.Packed = pk
	gen, err := New(Options{Path: PathGeneric})
	if err != nil {
		t.Fatal(err)
	}
	if gen.CanPack(F16) || !gen.CanPack(F32) {
		t.Errorf("the generic path packs F16 %v, F32 %v; want false, true", gen.CanPack(F16), gen.CanPack(F32))
	}
	x := randSlice(r, 30*24)
	y := make([]float32, 30*40)
	if err := gen.Linear(30, x, 24, w, y, 40, false); err != nil {
		t.Fatal(err)
	}
	want, mag := refGEMM(false, true, 30, 40, 24, x, 24, wf, 24, make([]float32, 30*40), 40, false)
	checkClose(t, 30, 40, 24, y, 40, want, mag)
	if _, err := packer.Pack(Weight{DType: Q8_0, N: 4, K: 32, Data: make([]byte, 4*34)}); err == nil {
		t.Error("Pack accepted a Q8_0 weight")
	}
	if _, err := packer.Pack(Weight{DType: F16, N: 4, K: 8, Data: make([]byte, 10)}); err == nil {
		t.Error("Pack accepted a short weight")
	}
	if bf, err := New(Options{BF16: true}); err == nil && bf.CanPack(F16) {
		t.Error("the bfloat16 engine claims to pack")
	}
}

// TestPackedOnly checks a weight given only as panels (no Data, as the Winograd
// convolution keeps its transformed weights): Linear at every row count, including the
// few-row sizes that otherwise take the dot-product path, and the error from an engine
// that cannot read the panels.
func TestPackedOnly(t *testing.T) {
	e, err := New(Options{Threads: 2})
	if err != nil || !e.CanPack(F32) {
		t.Skip("no packing path here")
	}
	r := rand.New(rand.NewPCG(45, 46))
	data, wf := testWeight(r, F32, 70, 33)
	pk, err := e.Pack(Weight{DType: F32, N: 70, K: 33, Data: data})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []int{1, 3, 4, 5, 40} {
		x := randSlice(r, m*33)
		y := make([]float32, m*70)
		if err := e.Linear(m, x, 33, Weight{DType: F32, N: 70, K: 33, Packed: pk}, y, 70, false); err != nil {
			t.Fatal(err)
		}
		want, mag := refGEMM(false, true, m, 70, 33, x, 33, wf, 33, make([]float32, m*70), 70, false)
		checkClose(t, m, 70, 33, y, 70, want, mag)
	}
	gen, _ := New(Options{Path: PathGeneric})
	if err := gen.Linear(5, make([]float32, 5*33), 33, Weight{DType: F32, N: 70, K: 33, Packed: pk}, make([]float32, 5*70), 70, false); err == nil {
		t.Error("the generic engine accepted panels it cannot read")
	}
}

// TestMulPacked checks PackA + MulPacked against the float64 product on a sub-range of
// a weight's depth and rows (attention's key blocks), edge slivers and rows, accumulate
// on and off, with panels filled by the caller through PanelsF32.
func TestMulPacked(t *testing.T) {
	for _, e := range enginesUnderTest(t) {
		if !e.CanPack(F32) {
			continue
		}
		r := rand.New(rand.NewPCG(47, 48))
		for _, sh := range []struct{ m, n, k, j0, j1, k0, k1 int }{
			{13, 70, 50, 32, 70, 10, 50}, {256, 256, 40, 0, 256, 0, 40}, {5, 64, 9, 0, 40, 3, 7}, {30, 96, 300, 64, 96, 0, 300},
		} {
			nr := e.PanelWidth()
			wv := randSlice(r, sh.n*sh.k)
			panel := make([]float32, (sh.n+nr-1)/nr*nr*sh.k)
			for j := 0; j < sh.n; j++ {
				for p := 0; p < sh.k; p++ {
					panel[j/nr*sh.k*nr+p*nr+j%nr] = wv[j*sh.k+p]
				}
			}
			w, err := e.PanelsF32(sh.n, sh.k, panel)
			if err != nil {
				t.Fatal(err)
			}
			kd := sh.k1 - sh.k0
			a := randSlice(r, sh.m*kd)
			pa, err := e.PackA(sh.m, kd, a, kd, make([]float32, (sh.m+11)/12*12*kd+64))
			if err != nil {
				t.Fatal(err)
			}
			// the reference: A · W[j0:j1, k0:k1]ᵀ
			sub := make([]float32, (sh.j1-sh.j0)*kd)
			for j := sh.j0; j < sh.j1; j++ {
				copy(sub[(j-sh.j0)*kd:], wv[j*sh.k+sh.k0:j*sh.k+sh.k1])
			}
			for _, acc := range []bool{false, true} {
				ldc := sh.j1 - sh.j0 + 5
				c := randSlice(r, sh.m*ldc)
				want, mag := refGEMM(false, true, sh.m, sh.j1-sh.j0, kd, a, kd, sub, kd, c, ldc, acc)
				if err := e.MulPacked(&pa, &w, sh.k0, sh.k1, sh.j0, sh.j1, c, ldc, acc); err != nil {
					t.Fatal(err)
				}
				checkClose(t, sh.m, sh.j1-sh.j0, kd, c, ldc, want, mag)
			}
		}
		if _, err := e.PanelsF32(40, 8, make([]float32, 10)); err == nil {
			t.Error("PanelsF32 accepted short storage")
		}
	}
}

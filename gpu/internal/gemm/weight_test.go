package gemm

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/forgeflow/forgeflow/internal/dtype"
)

// The scalar conversions and the block layouts are internal/dtype's and tested
// there; these tests check that every path decodes and multiplies with them.

// synthTypes are the dtypes testWeight can build from chosen values. The
// other GGUF types are checked against the golden gguf family
// (TestGoldenGGUF) and across paths on random bytes.
var synthTypes = []DType{F32, F16, BF16, F8E4M3FN, F8E5M2, Q8_0, Q4_0, Q4_K}

// testWeight builds an n×k weight of dtype d with random contents chosen so
// that every element is exact in float32 whatever the evaluation order
// (scales are powers of two), and returns its bytes and its elements.
func testWeight(r *rand.Rand, d DType, n, k int) ([]byte, []float32) {
	rb, err := d.RowBytes(k)
	if err != nil {
		panic(err)
	}
	data := make([]byte, n*rb)
	want := make([]float32, n*k)
	le := binary.LittleEndian
	// halfPow2 encodes 2^e (−14 ≤ e ≤ 15) as binary16.
	halfPow2 := func(e int) uint16 { return uint16(e+15) << 10 }
	for j := 0; j < n; j++ {
		row := data[j*rb : (j+1)*rb]
		w := want[j*k : (j+1)*k]
		switch d {
		case F32:
			for i := range w {
				w[i] = float32(r.NormFloat64())
				le.PutUint32(row[4*i:], math.Float32bits(w[i]))
			}
		case F16:
			for i := range w {
				// A random normal binary16: sign, exponent 1..30, mantissa.
				h := uint16(r.IntN(2))<<15 | uint16(1+r.IntN(30))<<10 | uint16(r.IntN(1024))
				e, m := int(h>>10&31), int(h&1023)
				v := math.Ldexp(1+float64(m)/1024, e-15)
				if h>>15 == 1 {
					v = -v
				}
				w[i] = float32(v)
				le.PutUint16(row[2*i:], h)
			}
		case BF16:
			for i := range w {
				v := float32(r.NormFloat64())
				bits := math.Float32bits(v) &^ 0xffff
				w[i] = math.Float32frombits(bits)
				le.PutUint16(row[2*i:], uint16(bits>>16))
			}
		case F8E4M3FN, F8E5M2:
			for i := range w {
				// Small integers times a power of two are exact in both formats.
				q := r.IntN(15) - 7
				v := float32(q) / 4
				var b byte
				if v != 0 {
					b = f8Encode(d, v)
				}
				w[i] = v
				row[i] = b
			}
		case Q8_0:
			for blk := 0; blk < k/32; blk++ {
				e := -r.IntN(8)
				le.PutUint16(row[blk*34:], halfPow2(e))
				for i := 0; i < 32; i++ {
					q := int8(r.IntN(256) - 128)
					row[blk*34+2+i] = byte(q)
					w[blk*32+i] = float32(math.Ldexp(float64(q), e))
				}
			}
		case Q4_0:
			for blk := 0; blk < k/32; blk++ {
				e := -r.IntN(8)
				le.PutUint16(row[blk*18:], halfPow2(e))
				for i := 0; i < 16; i++ {
					lo, hi := r.IntN(16), r.IntN(16)
					row[blk*18+2+i] = byte(lo | hi<<4)
					w[blk*32+i] = float32(math.Ldexp(float64(lo-8), e))
					w[blk*32+16+i] = float32(math.Ldexp(float64(hi-8), e))
				}
			}
		case Q4_K:
			for sb := 0; sb < k/256; sb++ {
				blk := row[sb*144 : (sb+1)*144]
				ed, em := -r.IntN(6), -3-r.IntN(6)
				le.PutUint16(blk, halfPow2(ed))
				le.PutUint16(blk[2:], halfPow2(em))
				var sc, mn [8]int
				for s := range sc {
					sc[s], mn[s] = r.IntN(64), r.IntN(64)
				}
				q4KPack(blk[4:16], sc, mn)
				for c := 0; c < 4; c++ {
					for l := 0; l < 32; l++ {
						lo, hi := r.IntN(16), r.IntN(16)
						blk[16+32*c+l] = byte(lo | hi<<4)
						// Sub-block 2c holds the low nibbles, 2c+1 the high ones.
						w[sb*256+64*c+l] = float32(math.Ldexp(float64(sc[2*c]*lo), ed) - math.Ldexp(float64(mn[2*c]), em))
						w[sb*256+64*c+32+l] = float32(math.Ldexp(float64(sc[2*c+1]*hi), ed) - math.Ldexp(float64(mn[2*c+1]), em))
					}
				}
			}
		default:
			panic(fmt.Sprintf("testWeight: no synthetic %s", d))
		}
	}
	return data, want
}

// q4KPack stores eight 6-bit scales and mins in ggml's 12-byte K_SCALE
// layout: bytes 0..3 scales 0..3 (+ top bits of scales 4..7), bytes 4..7
// mins 0..3 (+ top bits of mins 4..7), bytes 8..11 low nibbles of scale
// and min 4..7.
func q4KPack(dst []byte, sc, mn [8]int) {
	for j := 0; j < 4; j++ {
		dst[j] = byte(sc[j]) | byte(sc[j+4]>>4)<<6
		dst[j+4] = byte(mn[j]) | byte(mn[j+4]>>4)<<6
		dst[j+8] = byte(sc[j+4]&15) | byte(mn[j+4]&15)<<4
	}
}

// f8Encode finds the byte that decodes to v (v is exact in the format).
func f8Encode(d DType, v float32) byte {
	dec := dtype.E4M3FNToF32
	if d == F8E5M2 {
		dec = dtype.E5M2ToF32
	}
	for b := 0; b < 256; b++ {
		if dec(uint8(b)) == v {
			return byte(b)
		}
	}
	panic(fmt.Sprintf("%g not representable in %s", v, d))
}

func TestDecodeRow(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, e := range enginesUnderTest(t) {
		for _, d := range synthTypes {
			t.Run(engineName(e)+"/"+d.String(), func(t *testing.T) {
				const k = 512
				data, want := testWeight(r, d, 1, k)
				got := make([]float32, k)
				// Decode in two halves, as packing does at a kc boundary.
				e.k.decodeRow(d, got[:256], data, 0)
				e.k.decodeRow(d, got[256:], data, 256)
				for i := range got {
					if got[i] != want[i] {
						t.Fatalf("element %d: got %g, want %g", i, got[i], want[i])
					}
				}
			})
		}
	}
}

// TestConverters runs every path's 16-bit converters over all 65536 bit
// patterns at lengths that leave vector tails, against dtype.F16ToF32 (itself
// checked against the definition) and the bfloat16 definition.
func TestConverters(t *testing.T) {
	all := make([]byte, 2<<16)
	for h := 0; h < 1<<16; h++ {
		binary.LittleEndian.PutUint16(all[2*h:], uint16(h))
	}
	for _, e := range enginesUnderTest(t) {
		for _, n := range []int{1, 7, 15, 16, 17, 33, 1<<16 - 3, 1 << 16} {
			got := make([]float32, n)
			e.k.cvtF16(got, all)
			for h := 0; h < n; h++ {
				want := dtype.F16ToF32(uint16(h))
				if got[h] != want && !(want != want && got[h] != got[h]) {
					t.Fatalf("%s: f16 %#04x (n=%d): got %g, want %g", e.Path(), h, n, got[h], want)
				}
			}
			e.k.cvtBF16(got, all)
			for h := 0; h < n; h++ {
				if want := math.Float32frombits(uint32(h) << 16); math.Float32bits(got[h]) != math.Float32bits(want) {
					t.Fatalf("%s: bf16 %#04x (n=%d): got %g, want %g", e.Path(), h, n, got[h], want)
				}
			}
		}
	}
}

func TestDot(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, e := range enginesUnderTest(t) {
		for _, n := range []int{0, 1, 5, 16, 31, 64, 65, 100, 1000} {
			a, b := randSlice(r, n), randSlice(r, n)
			var want, mag float64
			for i := range a {
				want += float64(a[i]) * float64(b[i])
				mag += math.Abs(float64(a[i]) * float64(b[i]))
			}
			got := e.k.dot(a, b)
			if d := math.Abs(float64(got) - want); d > float64(n+2)*mag/(1<<24)+1e-30 {
				t.Errorf("%s: n=%d: dot = %g, want %g", e.Path(), n, got, want)
			}
		}
	}
}

func TestLinear(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	shapes := []shape{{1, 1, 256}, {3, 70, 768}, {4, 33, 1024}, {5, 33, 256}, {37, 70, 512}, {1, 100, 768}, {64, 3, 256}, {100, 40, 512}}
	if !testing.Short() {
		shapes = append(shapes, shape{130, 257, 1024})
	}
	for _, e := range enginesUnderTest(t) {
		for _, d := range synthTypes {
			for _, sh := range shapes {
				for _, pad := range []int{0, 8} {
					name := fmt.Sprintf("%s/%s/%dx%dx%d/pad=%d", engineName(e), d, sh.m, sh.n, sh.k, pad)
					t.Run(name, func(t *testing.T) {
						m, n, k := sh.m, sh.n, sh.k
						data, wf := testWeight(r, d, n, k)
						w := Weight{DType: d, N: n, K: k, Data: data}
						if pad > 0 {
							// Rows further apart than their size.
							rb, _ := d.RowBytes(k)
							w.Stride = rb + pad
							w.Data = make([]byte, n*w.Stride)
							for j := 0; j < n; j++ {
								copy(w.Data[j*w.Stride:], data[j*rb:(j+1)*rb])
							}
						}
						ldx, ldy := k+1, n+3
						x := randSlice(r, m*ldx)
						y := randSlice(r, m*ldy)
						acc := pad > 0
						want, mag := refGEMM(false, true, m, n, k, x, ldx, wf, k, y, ldy, acc)
						if err := e.Linear(m, x, ldx, w, y, ldy, acc); err != nil {
							t.Fatal(err)
						}
						checkClose(t, m, n, k, y, ldy, want, mag)
					})
				}
			}
		}
	}
}

// TestLinearBF16 runs Linear on the bfloat16 dot-product engine (packed
// path, m > 4) against the product of the bfloat16-rounded operands.
func TestLinearBF16(t *testing.T) {
	e, err := New(Options{BF16: true, Threads: 2})
	if err != nil {
		t.Skipf("bf16 path not available: %v", err)
	}
	r := rand.New(rand.NewPCG(19, 20))
	round := func(s []float32) []float32 {
		o := make([]float32, len(s))
		for i, v := range s {
			o[i] = math.Float32frombits(bf16Round(v) << 16)
		}
		return o
	}
	for _, d := range []DType{F32, F16, Q8_0, Q4_K} {
		t.Run(d.String(), func(t *testing.T) {
			const m, n, k = 37, 70, 512
			data, wf := testWeight(r, d, n, k)
			x, y := randSlice(r, m*k), make([]float32, m*n)
			want, mag := refGEMM(false, true, m, n, k, round(x), k, round(wf), k, y, n, false)
			if err := e.Linear(m, x, k, Weight{DType: d, N: n, K: k, Data: data}, y, n, false); err != nil {
				t.Fatal(err)
			}
			checkClose(t, m, n, k, y, n, want, mag)
		})
	}
}

// TestDecodersMatchGeneric feeds random bytes (any scale, any quants) to
// every path's converters and requires the same bits as the generic Go
// decoders, NaNs aside (VCVTPH2PS quiets a signalling NaN).
func TestDecodersMatchGeneric(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	gen := genericKernel()
	const k = 1024
	for _, e := range enginesUnderTest(t) {
		for d := DType(0); d < dtypeCount; d++ {
			rb, _ := d.RowBytes(k)
			src := make([]byte, rb)
			for i := range src {
				src[i] = byte(r.Uint32())
			}
			want, got := make([]float32, k), make([]float32, k)
			gen.decodeRow(d, want, src, 0)
			e.k.decodeRow(d, got, src, 0)
			for i := range got {
				w, g := want[i], got[i]
				if math.Float32bits(w) != math.Float32bits(g) && !(w != w && g != g) {
					t.Fatalf("%s %s element %d: got %g (%#08x), want %g (%#08x)", e.Path(), d, i, g, math.Float32bits(g), w, math.Float32bits(w))
				}
			}
		}
	}
}

// TestLinearEmpty covers K = 0 (y is cleared, or kept when accumulating)
// and m = 0 or N = 0 (nothing is touched).
func TestLinearEmpty(t *testing.T) {
	e, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, acc := range []bool{false, true} {
		y := []float32{1, 2, 3, 4, 5, 6}
		if err := e.Linear(2, []float32{0}, 1, Weight{DType: F16, N: 3, K: 0}, y, 3, acc); err != nil {
			t.Fatal(err)
		}
		want := []float32{0, 0, 0, 0, 0, 0}
		if acc {
			want = []float32{1, 2, 3, 4, 5, 6}
		}
		for i := range y {
			if y[i] != want[i] {
				t.Fatalf("acc=%v: y = %v, want %v", acc, y, want)
			}
		}
	}
	y := []float32{7}
	if err := e.Linear(0, nil, 32, Weight{DType: Q8_0, N: 1, K: 32, Data: make([]byte, 34)}, y, 1, false); err != nil || y[0] != 7 {
		t.Fatalf("m=0: y = %v, err %v", y, err)
	}
	if err := e.Linear(1, make([]float32, 32), 32, Weight{DType: Q8_0, N: 0, K: 32}, y, 1, false); err != nil || y[0] != 7 {
		t.Fatalf("N=0: y = %v, err %v", y, err)
	}
}

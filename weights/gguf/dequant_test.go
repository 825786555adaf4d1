package gguf

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/forgeflow/forgeflow/internal/dtype"
)

// The legacy and k-quant types are checked against ComfyUI-GGUF in golden_test.go. IQ4_NL
// and IQ4_XS have no golden fixture; these tests compute each element independently from
// the block layout in ggml-common.h (block_iq4_nl, block_iq4_xs).

var iq4Codebook = []float32{-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}

func TestIQ4_NL(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const blocks = 3
	src := make([]byte, 0, blocks*18)
	var want []float32
	for b := 0; b < blocks; b++ {
		d := float32(0.01 * float64(b+1))
		dh := dtype.F32ToF16(d)
		src = binary.LittleEndian.AppendUint16(src, dh)
		qs := make([]byte, 16)
		for i := range qs {
			qs[i] = byte(rng.UintN(256))
		}
		src = append(src, qs...)
		df := dtype.F16ToF32(dh)
		for e := 0; e < 32; e++ {
			nib := qs[e%16] & 0xf
			if e >= 16 {
				nib = qs[e%16] >> 4
			}
			want = append(want, df*iq4Codebook[nib])
		}
	}
	checkDequant(t, TypeIQ4_NL, src, want)
}

func TestIQ4_XS(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const blocks = 2
	var src []byte
	var want []float32
	for b := 0; b < blocks; b++ {
		dh := dtype.F32ToF16(0.003 * float32(b+1))
		df := dtype.F16ToF32(dh)
		scales := make([]int, 8) // 6-bit scales
		for i := range scales {
			scales[i] = rng.IntN(64)
		}
		var sh uint16
		sl := make([]byte, 4)
		for ib, s := range scales {
			sl[ib/2] |= byte(s&0xf) << (4 * (ib % 2))
			sh |= uint16(s>>4) << (2 * ib)
		}
		qs := make([]byte, 128)
		for i := range qs {
			qs[i] = byte(rng.UintN(256))
		}
		src = binary.LittleEndian.AppendUint16(src, dh)
		src = binary.LittleEndian.AppendUint16(src, sh)
		src = append(append(src, sl...), qs...)
		for e := 0; e < QK_K; e++ {
			ib, k := e/32, e%32
			byt := qs[16*ib+k%16]
			nib := byt & 0xf
			if k >= 16 {
				nib = byt >> 4
			}
			want = append(want, df*float32(scales[ib]-32)*iq4Codebook[nib])
		}
	}
	checkDequant(t, TypeIQ4_XS, src, want)
}

func checkDequant(t *testing.T, typ Type, src []byte, want []float32) {
	t.Helper()
	got := make([]float32, len(want))
	if err := Dequantize(got, typ, src); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s [%d] = %g, want %g", typ, i, got[i], want[i])
		}
	}
}

// TestQ4_0Layout pins the Q4_0 nibble order with a hand-made block: element j is the low
// nibble of qs[j] for j < 16, the high nibble of qs[j-16] after.
func TestQ4_0Layout(t *testing.T) {
	src := binary.LittleEndian.AppendUint16(nil, dtype.F32ToF16(2))
	for j := 0; j < 16; j++ {
		src = append(src, byte(j)|byte(15-j)<<4)
	}
	want := make([]float32, 32)
	for j := 0; j < 16; j++ {
		want[j] = 2 * float32(j-8)
		want[j+16] = 2 * float32(15-j-8)
	}
	checkDequant(t, TypeQ4_0, src, want)
}

func BenchmarkDequantize(b *testing.B) {
	for _, typ := range []Type{TypeF16, TypeQ4_0, TypeQ8_0, TypeQ4_K, TypeQ6_K} {
		b.Run(typ.String()+"/4096x64", func(b *testing.B) {
			n := 4096 * 64
			// Random bytes exercise every code path (subnormal, normal, every quant).
			src := make([]byte, n/typ.BlockSize()*typ.TypeSize())
			rng := rand.New(rand.NewPCG(5, 6))
			for i := range src {
				src[i] = byte(rng.UintN(256))
			}
			dst := make([]float32, n)
			b.SetBytes(int64(len(src)))
			for b.Loop() {
				Dequantize(dst, typ, src)
			}
		})
	}
}

// TestQuantizeRoundTrip checks Dequantize(Quantize(x)) stays within each type's step:
// the quantizers' bytes are pinned exactly by TestGoldenQuantize, this checks that the
// two directions agree on every layout.
func TestQuantizeRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	x := make([]float32, 32*64)
	for i := range x {
		x[i] = float32(rng.NormFloat64()) * float32(1+i%5)
	}
	// step returns the quantization step of a block for each type; the error may reach
	// one step (clipping at the top code) plus fp16 rounding of the scales.
	step := map[Type]func(lo, hi, amax float32) float32{
		TypeF32:  func(lo, hi, amax float32) float32 { return 0 },
		TypeF16:  func(lo, hi, amax float32) float32 { return amax / 1024 },
		TypeBF16: func(lo, hi, amax float32) float32 { return amax / 128 },
		TypeQ4_0: func(lo, hi, amax float32) float32 { return amax / 8 },
		TypeQ4_1: func(lo, hi, amax float32) float32 { return (hi - lo) / 15 },
		TypeQ5_0: func(lo, hi, amax float32) float32 { return amax / 16 },
		TypeQ5_1: func(lo, hi, amax float32) float32 { return (hi - lo) / 31 },
		TypeQ8_0: func(lo, hi, amax float32) float32 { return amax / 127 },
	}
	for typ, stepOf := range step {
		t.Run(typ.String(), func(t *testing.T) {
			q := make([]byte, len(x)/typ.BlockSize()*typ.TypeSize())
			if err := Quantize(q, typ, x); err != nil {
				t.Fatal(err)
			}
			y := make([]float32, len(x))
			if err := Dequantize(y, typ, q); err != nil {
				t.Fatal(err)
			}
			for b := 0; b < len(x); b += 32 {
				blk := x[b : b+32]
				lo, hi := minMax(blk)
				amax := max(-lo, hi)
				limit := stepOf(lo, hi, amax)*1.01 + amax*2e-3*float32(min(1, typ.BlockSize()-1))
				for j, v := range blk {
					if e := y[b+j] - v; e > limit || -e > limit {
						t.Fatalf("[%d] = %g, was %g (error %g > %g)", b+j, y[b+j], v, e, limit)
					}
				}
			}
		})
	}
	if err := Quantize(make([]byte, 84), TypeQ2_K, make([]float32, 256)); err == nil {
		t.Error("Q2_K quantization: no error")
	}
	if err := Quantize(make([]byte, 17), TypeQ4_0, make([]float32, 32)); err == nil {
		t.Error("short dst: no error")
	}
}

// TestDequantizeParallel checks the split version against the serial one.
func TestDequantizeParallel(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, typ := range []Type{TypeQ8_0, TypeQ4_K, TypeF16} {
		n := parallelMin*3 + 7*typ.BlockSize() // an uneven number of blocks
		src := make([]byte, n/typ.BlockSize()*typ.TypeSize())
		for i := range src {
			src[i] = byte(rng.UintN(256))
		}
		want := make([]float32, n)
		got := make([]float32, n)
		if err := Dequantize(want, typ, src); err != nil {
			t.Fatal(err)
		}
		for _, workers := range []int{1, 2, 3, 8} {
			clear(got)
			if err := DequantizeParallel(got, typ, src, workers); err != nil {
				t.Fatal(err)
			}
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("%s, %d workers: [%d] = %g, want %g", typ, workers, i, got[i], want[i])
				}
			}
		}
	}
	if err := DequantizeParallel(make([]float32, parallelMin), TypeQ4_0, make([]byte, 17), 4); err == nil {
		t.Error("bad sizes: no error")
	}
}

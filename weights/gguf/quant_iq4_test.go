package gguf

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestQuantizeIQ4 round-trips random blocks through the IQ4 quantizers and ggml's
// dequantization: every value lands within the codebook's widest half-gap (14 of 127
// at the positive end) of its block's largest magnitude, plus, for IQ4_XS, the 6-bit
// sub-block scale's rounding (one super-block step, 1/32 of the largest sub-block
// scale, over at most 127 codebook units).
func TestQuantizeIQ4(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	x := make([]float32, 256*8)
	for i := range x {
		x[i] = float32(rng.NormFloat64()) * float32(1+(i/32)%5)
	}
	for _, typ := range []Type{TypeIQ4_NL, TypeIQ4_XS} {
		t.Run(typ.String(), func(t *testing.T) {
			q := make([]byte, len(x)/typ.BlockSize()*typ.TypeSize())
			if err := Quantize(q, typ, x); err != nil {
				t.Fatal(err)
			}
			y := make([]float32, len(x))
			if err := Dequantize(y, typ, q); err != nil {
				t.Fatal(err)
			}
			for sb := 0; sb < len(x); sb += 256 {
				super := amax(x[sb : sb+256])
				for b := sb; b < sb+256; b += 32 {
					limit := amax(x[b:b+32]) * 14 / 127 * 1.01
					if typ == TypeIQ4_XS {
						limit += super / 32 * 1.01
					}
					for j := b; j < b+32; j++ {
						if e := float32(math.Abs(float64(y[j] - x[j]))); e > limit {
							t.Fatalf("[%d] = %g, was %g (error %g > %g)", j, y[j], x[j], e, limit)
						}
					}
				}
			}
		})
	}
	// Values on the codebook grid of a power-of-two scale come back exactly.
	grid := make([]float32, 32)
	for j := range grid {
		grid[j] = iq4Values[(j*7)%16] / 4
	}
	grid[3] = -127.0 / 4 // the largest magnitude sets d = 1/4
	q := make([]byte, 18)
	if err := Quantize(q, TypeIQ4_NL, grid); err != nil {
		t.Fatal(err)
	}
	y := make([]float32, 32)
	if err := Dequantize(y, TypeIQ4_NL, q); err != nil {
		t.Fatal(err)
	}
	for j := range y {
		if y[j] != grid[j] {
			t.Fatalf("grid value [%d] %g came back as %g", j, grid[j], y[j])
		}
	}
}

func amax(x []float32) float32 {
	var m float32
	for _, v := range x {
		m = max(m, float32(math.Abs(float64(v))))
	}
	return m
}

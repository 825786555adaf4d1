package gguf

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/forgeflow/forgeflow/internal/dtype"
)

// These tests encode random values with the formats' definitions and check the decoders
// give them back; no golden fixture covers these types.

// packTrits packs five trits (t0 most significant, each in {-1,0,1}) the way
// quantize_row_tq1_0_ref does: v = Σ (t_n+1)·3^(4-n), byte = ceil(v·256/243).
func packTrits(t []int) byte {
	v := 0
	for _, x := range t {
		v = 3*v + x + 1
	}
	return byte((v*256 + 242) / 243)
}

func TestTQ1_0(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	want := make([]int, QK_K)
	for i := range want {
		want[i] = rng.IntN(3) - 1
	}
	blk := make([]byte, 54)
	// qs[0:32]: element 32n + m is trit n of byte m.
	for m := 0; m < 32; m++ {
		blk[m] = packTrits([]int{want[m], want[32+m], want[64+m], want[96+m], want[128+m]})
	}
	for m := 0; m < 16; m++ {
		blk[32+m] = packTrits([]int{want[160+m], want[176+m], want[192+m], want[208+m], want[224+m]})
	}
	// qh: four trits per byte, element 240 + 4n + m is trit n of qh[m]; the fifth trit
	// position is digit 0, as the reference quantizer leaves it.
	for m := 0; m < 4; m++ {
		blk[48+m] = packTrits([]int{want[240+m], want[244+m], want[248+m], want[252+m], -1})
	}
	d := dtype.F32ToF16(0.25)
	binary.LittleEndian.PutUint16(blk[52:], d)
	exp := make([]float32, QK_K)
	for i, v := range want {
		exp[i] = float32(v) * dtype.F16ToF32(d)
	}
	checkDequant(t, TypeTQ1_0, blk, exp)
}

func TestTQ2_0(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	blk := make([]byte, 66)
	exp := make([]float32, QK_K)
	for i := 0; i < QK_K; i++ {
		q := rng.IntN(3) // stored q+1 for q in {-1,0,1}
		j, l, m := i/128, (i%128)/32, i%32
		blk[32*j+m] |= byte(q) << (2 * l)
		exp[i] = float32(q-1) * 2
	}
	binary.LittleEndian.PutUint16(blk[64:], dtype.F32ToF16(2))
	checkDequant(t, TypeTQ2_0, blk, exp)
}

// fp4 decodes an e2m1 code from its fields (sign, 2-bit exponent bias 1, 1-bit mantissa).
func fp4(c byte) float64 {
	e, m := int(c>>1)&3, float64(c&1)
	v := m / 2 // subnormal: 0.m × 2^0
	if e > 0 {
		v = (1 + m/2) * math.Ldexp(1, e-1)
	}
	if c&8 != 0 {
		v = -v
	}
	return v
}

func TestMXFP4(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	for _, e := range []byte{0, 1, 2, 100, 127, 130, 254} {
		blk := make([]byte, 17)
		blk[0] = e
		exp := make([]float32, 32)
		for j := 0; j < 16; j++ {
			lo, hi := byte(rng.IntN(16)), byte(rng.IntN(16))
			blk[1+j] = lo | hi<<4
			exp[j] = float32(fp4(lo) * math.Ldexp(1, int(e)-127))
			exp[j+16] = float32(fp4(hi) * math.Ldexp(1, int(e)-127))
		}
		checkDequant(t, TypeMXFP4, blk, exp)
	}
}

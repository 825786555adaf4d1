package dtype

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// blockDecoders lists every block decoder with its block size and bytes.
var blockDecoders = []struct {
	name        string
	size, bytes int
	fn          func([]float32, []byte)
}{
	{"Q4_0", QK, 18, DecodeQ4_0}, {"Q4_1", QK, 20, DecodeQ4_1}, {"Q5_0", QK, 22, DecodeQ5_0},
	{"Q5_1", QK, 24, DecodeQ5_1}, {"Q8_0", QK, 34, DecodeQ8_0}, {"IQ4_NL", QK, 18, DecodeIQ4_NL},
	{"MXFP4", QK, 17, DecodeMXFP4}, {"Q2_K", QKK, 84, DecodeQ2_K}, {"Q3_K", QKK, 110, DecodeQ3_K},
	{"Q4_K", QKK, 144, DecodeQ4_K}, {"Q5_K", QKK, 176, DecodeQ5_K}, {"Q6_K", QKK, 210, DecodeQ6_K},
	{"IQ4_XS", QKK, 136, DecodeIQ4_XS}, {"TQ1_0", QKK, 54, DecodeTQ1_0}, {"TQ2_0", QKK, 66, DecodeTQ2_0},
}

// TestBlocksAreIndependent checks the decoders' contract: dst's length says how many
// blocks are read, a longer src is fine, and each block decodes alone to the same
// values as inside a run (what lets gemm decode a row piecewise and gguf split a tensor
// over goroutines).
func TestBlocksAreIndependent(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, d := range blockDecoders {
		t.Run(d.name, func(t *testing.T) {
			const n = 5
			src := make([]byte, (n+1)*d.bytes) // one spare block
			for i := range src {
				src[i] = byte(r.Uint32())
			}
			for b := 0; b <= n; b++ { // finite fp16 scales: exponent field below 31
				for _, off := range []int{0, 2} {
					if off+2 <= d.bytes {
						binary.LittleEndian.PutUint16(src[b*d.bytes+off:], F32ToF16(float32(r.NormFloat64())))
					}
				}
			}
			all := make([]float32, n*d.size)
			d.fn(all, src)
			one := make([]float32, d.size)
			for b := 0; b < n; b++ {
				d.fn(one, src[b*d.bytes:])
				for i, v := range one {
					if w := all[b*d.size+i]; v != w && v == v {
						t.Fatalf("block %d element %d: alone %g, in a run %g", b, i, v, w)
					}
				}
			}
		})
	}
}

// TestDecodeQ4_0 decodes a hand-built block: y = (q - 8)·d with the low nibbles first.
func TestDecodeQ4_0(t *testing.T) {
	blk := binary.LittleEndian.AppendUint16(nil, F32ToF16(0.5))
	for j := 0; j < 16; j++ {
		blk = append(blk, byte(j)|byte(15-j)<<4)
	}
	got := make([]float32, QK)
	DecodeQ4_0(got, blk)
	for j := 0; j < 16; j++ {
		if want := float32(j-8) * 0.5; got[j] != want {
			t.Errorf("element %d = %g, want %g", j, got[j], want)
		}
		if want := float32(15-j-8) * 0.5; got[j+16] != want {
			t.Errorf("element %d = %g, want %g", j+16, got[j+16], want)
		}
	}
}

// TestScaleMinK4 unpacks all eight 6-bit pairs from a packing built by the layout.
func TestScaleMinK4(t *testing.T) {
	var sc, mn [8]uint8
	for j := range sc {
		sc[j], mn[j] = uint8(7*j+5)&63, uint8(11*j+60)&63
	}
	var q [12]byte
	for j := 0; j < 4; j++ {
		q[j] = sc[j] | (sc[j+4]>>4)<<6
		q[j+4] = mn[j] | (mn[j+4]>>4)<<6
		q[j+8] = sc[j+4]&15 | (mn[j+4]&15)<<4
	}
	for j := 0; j < 8; j++ {
		if s, m := ScaleMinK4(j, &q); s != sc[j] || m != mn[j] {
			t.Errorf("pair %d = (%d, %d), want (%d, %d)", j, s, m, sc[j], mn[j])
		}
	}
}

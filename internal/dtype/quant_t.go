package dtype

import "math"

// Ternary and microscaling types (ggml-common.h block_tq1_0, block_tq2_0, block_mxfp4;
// ggml-quants.c dequantize_row_tq1_0, _tq2_0, _mxfp4).

// pow3 are the multipliers that bring trit n of a TQ1_0 byte to the top (pow3 in
// dequantize_row_tq1_0).
var pow3 = [5]byte{1, 3, 9, 27, 81}

// trit extracts trit n (0 = most significant) of a byte packing five base-3 digits as
// ceil(v·256/243): multiplying by 3^n (mod 256) shifts the wanted digit to the top, and
// ×3 >> 8 reads it.
func trit(b byte, n int) int { return int(uint16(b*pow3[n])*3>>8) - 1 }

// DecodeTQ1_0 decodes TQ1_0 super-blocks (54 bytes: qs[48] (five trits per byte), qh[4]
// (four trits per byte), d fp16; y = d·t with t in {-1, 0, 1}). Elements: the first 32
// bytes of qs give 5×32 values (trit n of byte m is element 32n + m), the last 16 give
// 5×16, then qh 4×4.
func DecodeTQ1_0(dst []float32, src []byte) {
	nb, src := blocks(dst, src, QKK, 54)
	for b := 0; b < nb; b++ {
		blk := (*[54]byte)(src[54*b:])
		d := half(blk[52:])
		y := (*[QKK]float32)(dst[QKK*b:])
		k := 0
		for _, seg := range [2][2]int{{0, 32}, {32, 16}} {
			qs := blk[seg[0] : seg[0]+seg[1]]
			for n := 0; n < 5; n++ {
				for _, q := range qs {
					y[k] = float32(trit(q, n)) * d
					k++
				}
			}
		}
		qh := blk[48:52]
		for n := 0; n < 4; n++ {
			for _, q := range qh {
				y[k] = float32(trit(q, n)) * d
				k++
			}
		}
	}
}

// DecodeTQ2_0 decodes TQ2_0 super-blocks (66 bytes: qs[64] (four 2-bit values per
// byte, stored q+1), d fp16; bits 2l..2l+1 of qs[32j + m] are element 128j + 32l + m;
// y = d·(q - 1)).
func DecodeTQ2_0(dst []float32, src []byte) {
	nb, src := blocks(dst, src, QKK, 66)
	for b := 0; b < nb; b++ {
		blk := (*[66]byte)(src[66*b:])
		d := half(blk[64:])
		y := (*[QKK]float32)(dst[QKK*b:])
		for j := 0; j < 2; j++ {
			for l := 0; l < 4; l++ {
				for m := 0; m < 32; m++ {
					q := int(blk[32*j+m]>>(2*l)) & 3
					y[128*j+32*l+m] = float32(q-1) * d
				}
			}
		}
	}
}

// kvaluesMXFP4 are the FP4 (e2m1) values doubled, as kvalues_mxfp4 stores them; the
// block scale is halved to match.
var kvaluesMXFP4 = [16]int8{0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12}

// e8m0Half returns 2^(e-127) / 2, the halved MX block scale (ggml_e8m0_to_fp32_half,
// which maps 255 to 2^127 rather than NaN).
func e8m0Half(e byte) float32 { return float32(math.Ldexp(1, int(e)-128)) }

// DecodeMXFP4 decodes MXFP4 blocks (17 bytes: e (E8M0 shared exponent), qs[16] of FP4
// codes laid out as Q4_0's nibbles (OCP Microscaling Formats spec v1.0, MXFP4);
// y = fp4(q)·2^(e-127)).
func DecodeMXFP4(dst []float32, src []byte) {
	nb, src := blocks(dst, src, QK, 17)
	for b := 0; b < nb; b++ {
		blk := (*[17]byte)(src[17*b:])
		d := e8m0Half(blk[0])
		y := (*[QK]float32)(dst[QK*b:])
		for j := 0; j < 16; j++ {
			q := blk[1+j]
			y[j] = float32(kvaluesMXFP4[q&0xf]) * d
			y[j+16] = float32(kvaluesMXFP4[q>>4]) * d
		}
	}
}

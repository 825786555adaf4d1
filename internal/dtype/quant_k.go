package dtype

import "encoding/binary"

// The k-quants work on super-blocks of QKK = 256 elements split into sub-blocks with
// their own quantized scales (ggml-common.h block_q*_K; ggml-quants.c
// dequantize_row_q*_K).

// DecodeQ2_K decodes Q2_K super-blocks (84 bytes: scales[16] (low nibble scale, high
// nibble min, per 16 elements), qs[64] (2-bit quants), d fp16, dmin fp16;
// y = d·sc·q - dmin·m).
func DecodeQ2_K(dst []float32, src []byte) {
	nb, src := blocks(dst, src, QKK, 84)
	for b := 0; b < nb; b++ {
		blk := (*[84]byte)(src[84*b:])
		y := (*[QKK]float32)(dst[QKK*b:])
		d, dmin := half(blk[80:]), half(blk[82:])
		// Element 128·n + 32·j + 16·h + l uses scale 8·n + 2·j + h and the 2-bit field
		// j of qs[32·n + 16·h + l].
		for n := 0; n < 2; n++ {
			for j := 0; j < 4; j++ {
				shift := uint(2 * j)
				for h := 0; h < 2; h++ {
					sc := blk[8*n+2*j+h]
					dl := d * float32(sc&0xf)
					ml := dmin * float32(sc>>4)
					q := (*[16]byte)(blk[16+32*n+16*h:])
					yy := (*[16]float32)(y[128*n+32*j+16*h:])
					for l := range yy {
						yy[l] = float32(dl*float32((q[l]>>shift)&3)) - ml
					}
				}
			}
		}
	}
}

// DecodeQ3_K decodes Q3_K super-blocks (110 bytes: hmask[32] (the high bit, inverted:
// clear means -4), qs[64] (low 2 bits), scales[12] (sixteen 6-bit scales, biased by 32),
// d fp16; y = d·(sc-32)·q with q in [-4, 3]).
func DecodeQ3_K(dst []float32, src []byte) {
	nb, src := blocks(dst, src, QKK, 110)
	for b := 0; b < nb; b++ {
		blk := (*[110]byte)(src[110*b:])
		hm := (*[32]byte)(blk[0:])
		d := half(blk[108:])
		sc := unpackQ3KScales(blk[96:108])
		y := (*[QKK]float32)(dst[QKK*b:])
		// Element 128·n + 32·j + 16·h + l uses scale 8·n + 2·j + h, the 2-bit field j of
		// qs[32·n + 16·h + l] and bit 4·n + j of hmask[16·h + l].
		for n := 0; n < 2; n++ {
			for j := 0; j < 4; j++ {
				shift := uint(2 * j)
				m := byte(1) << (4*n + j)
				for h := 0; h < 2; h++ {
					dl := d * float32(int(sc[8*n+2*j+h])-32)
					q := (*[16]byte)(blk[32+32*n+16*h:])
					hh := (*[16]byte)(hm[16*h:])
					yy := (*[16]float32)(y[128*n+32*j+16*h:])
					for l := range yy {
						v := int((q[l] >> shift) & 3)
						if hh[l]&m == 0 {
							v -= 4
						}
						yy[l] = dl * float32(v)
					}
				}
			}
		}
	}
}

// unpackQ3KScales spreads the 12 packed bytes into 16 six-bit scales: the low 4 bits come
// from bytes 0..7 (nibbles), the high 2 bits from bytes 8..11 (the kmask1/kmask2 shuffle of
// dequantize_row_q3_K).
func unpackQ3KScales(p []byte) [16]uint8 {
	const kmask1, kmask2 = 0x03030303, 0x0f0f0f0f
	a0 := binary.LittleEndian.Uint32(p[0:])
	a1 := binary.LittleEndian.Uint32(p[4:])
	tmp := binary.LittleEndian.Uint32(p[8:])
	aux := [4]uint32{
		a0&kmask2 | (tmp>>0&kmask1)<<4,
		a1&kmask2 | (tmp>>2&kmask1)<<4,
		a0>>4&kmask2 | (tmp>>4&kmask1)<<4,
		a1>>4&kmask2 | (tmp>>6&kmask1)<<4,
	}
	var out [16]uint8
	for i, v := range aux {
		binary.LittleEndian.PutUint32(out[4*i:], v)
	}
	return out
}

// ScaleMinK4 returns the j-th 6-bit scale and min of a Q4_K/Q5_K super-block's 12 packed
// bytes (get_scale_min_k4 in ggml-quants.c): sub-blocks 0..3 keep their six bits in the
// low bits of bytes j and j+4; sub-blocks 4..7 keep their low four bits in the nibbles
// of byte j+4 and their top two bits in the top bits of bytes j-4 (scale) and j (min).
func ScaleMinK4(j int, q *[12]byte) (sc, m uint8) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	return q[j+4]&0xf | (q[j-4]>>6)<<4, q[j+4]>>4 | (q[j]>>6)<<4
}

// DecodeQ4_K decodes Q4_K super-blocks (144 bytes: d fp16, dmin fp16, scales[12] (eight
// 6-bit scale/min pairs), qs[128]; per 64 elements the low nibbles use pair 2i, the high
// nibbles 2i+1; y = d·sc·q - dmin·m).
func DecodeQ4_K(dst []float32, src []byte) {
	nb, src := blocks(dst, src, QKK, 144)
	for b := 0; b < nb; b++ {
		blk := (*[144]byte)(src[144*b:])
		d, dmin := half(blk[0:]), half(blk[2:])
		scales := (*[12]byte)(blk[4:])
		y := (*[QKK]float32)(dst[QKK*b:])
		for i := 0; i < 4; i++ {
			sc, m := ScaleMinK4(2*i, scales)
			d1, m1 := d*float32(sc), dmin*float32(m)
			sc, m = ScaleMinK4(2*i+1, scales)
			d2, m2 := d*float32(sc), dmin*float32(m)
			q := (*[32]byte)(blk[16+32*i:])
			lo := (*[32]float32)(y[64*i:])
			hi := (*[32]float32)(y[64*i+32:])
			for l := range q {
				lo[l] = float32(d1*float32(q[l]&0xf)) - m1
				hi[l] = float32(d2*float32(q[l]>>4)) - m2
			}
		}
	}
}

// DecodeQ5_K decodes Q5_K super-blocks (176 bytes: d fp16, dmin fp16, scales[12],
// qh[32] (fifth bits), qs[128]; as Q4_K with q += 16 where the high bit is set: bit 2i
// for the low nibbles of the i-th 64, bit 2i+1 for the high nibbles).
func DecodeQ5_K(dst []float32, src []byte) {
	nb, src := blocks(dst, src, QKK, 176)
	for b := 0; b < nb; b++ {
		blk := (*[176]byte)(src[176*b:])
		d, dmin := half(blk[0:]), half(blk[2:])
		scales := (*[12]byte)(blk[4:])
		qh := (*[32]byte)(blk[16:])
		y := (*[QKK]float32)(dst[QKK*b:])
		for i := 0; i < 4; i++ {
			sc, m := ScaleMinK4(2*i, scales)
			d1, m1 := d*float32(sc), dmin*float32(m)
			sc, m = ScaleMinK4(2*i+1, scales)
			d2, m2 := d*float32(sc), dmin*float32(m)
			u1, u2 := byte(1)<<(2*i), byte(2)<<(2*i)
			ql := (*[32]byte)(blk[48+32*i:])
			lo := (*[32]float32)(y[64*i:])
			hi := (*[32]float32)(y[64*i+32:])
			for l := range ql {
				v1, v2 := ql[l]&0xf, ql[l]>>4
				if qh[l]&u1 != 0 {
					v1 += 16
				}
				if qh[l]&u2 != 0 {
					v2 += 16
				}
				lo[l] = float32(d1*float32(v1)) - m1
				hi[l] = float32(d2*float32(v2)) - m2
			}
		}
	}
}

// DecodeQ6_K decodes Q6_K super-blocks (210 bytes: ql[128] (low 4 bits), qh[64] (high
// 2 bits), scales int8[16], d fp16; y = d·sc·(q - 32)).
func DecodeQ6_K(dst []float32, src []byte) {
	nb, src := blocks(dst, src, QKK, 210)
	for b := 0; b < nb; b++ {
		blk := (*[210]byte)(src[210*b:])
		d := half(blk[208:])
		y := (*[QKK]float32)(dst[QKK*b:])
		for n := 0; n < 2; n++ {
			ql := (*[64]byte)(blk[64*n:])
			qh := (*[32]byte)(blk[128+32*n:])
			sc := (*[8]byte)(blk[192+8*n:])
			yy := (*[128]float32)(y[128*n:])
			for l := 0; l < 32; l++ {
				is := l / 16
				q1 := int(ql[l]&0xf|(qh[l]>>0&3)<<4) - 32
				q2 := int(ql[l+32]&0xf|(qh[l]>>2&3)<<4) - 32
				q3 := int(ql[l]>>4|(qh[l]>>4&3)<<4) - 32
				q4 := int(ql[l+32]>>4|(qh[l]>>6&3)<<4) - 32
				yy[l] = float32(d*float32(int8(sc[is+0]))) * float32(q1)
				yy[l+32] = float32(d*float32(int8(sc[is+2]))) * float32(q2)
				yy[l+64] = float32(d*float32(int8(sc[is+4]))) * float32(q3)
				yy[l+96] = float32(d*float32(int8(sc[is+6]))) * float32(q4)
			}
		}
	}
}

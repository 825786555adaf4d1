package gguf

import "encoding/binary"

// The k-quants work on super-blocks of QK_K = 256 elements split into sub-blocks with their
// own quantized scales (ggml-common.h, block_q*_K; ggml-quants.c, dequantize_row_q*_K).

// Q2_K super-block (84 bytes): scales[16] (low nibble scale, high nibble min, per 16
// elements), qs[64] (2-bit quants), d fp16, dmin fp16; y = d·sc·q - dmin·m.
func dequantQ2_K(dst []float32, src []byte) {
	for b := 0; len(src) > 0; b++ {
		scales := src[0:16]
		q := src[16:80]
		d, dmin := f16(src[80:]), f16(src[82:])
		y := dst[QK_K*b : QK_K*b+QK_K]
		is := 0
		for n := 0; n < QK_K; n += 128 {
			shift := uint(0)
			for j := 0; j < 4; j++ {
				for half := 0; half < 2; half++ {
					sc := scales[is]
					is++
					dl := d * float32(sc&0xf)
					ml := dmin * float32(sc>>4)
					for l := 0; l < 16; l++ {
						y[l] = float32(dl*float32((q[l+16*half]>>shift)&3)) - ml
					}
					y = y[16:]
				}
				shift += 2
			}
			q = q[32:]
		}
		src = src[84:]
	}
}

// Q3_K super-block (110 bytes): hmask[32] (the high bit, inverted: clear means -4),
// qs[64] (low 2 bits), scales[12] (sixteen 6-bit scales, biased by 32), d fp16;
// y = d·(sc-32)·q with q in [-4, 3].
func dequantQ3_K(dst []float32, src []byte) {
	for b := 0; len(src) > 0; b++ {
		hm := src[0:32]
		q := src[32:96]
		d := f16(src[108:])
		sc := unpackQ3KScales(src[96:108])
		y := dst[QK_K*b : QK_K*b+QK_K]
		is := 0
		m := byte(1)
		for n := 0; n < QK_K; n += 128 {
			shift := uint(0)
			for j := 0; j < 4; j++ {
				for half := 0; half < 2; half++ {
					dl := d * float32(int(sc[is])-32)
					is++
					for l := 0; l < 16; l++ {
						k := l + 16*half
						v := int((q[k] >> shift) & 3)
						if hm[k]&m == 0 {
							v -= 4
						}
						y[l] = dl * float32(v)
					}
					y = y[16:]
				}
				shift += 2
				m <<= 1
			}
			q = q[32:]
		}
		src = src[110:]
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

// scaleMinK4 returns the j-th 6-bit scale and min of a Q4_K/Q5_K super-block's 12 packed
// bytes (get_scale_min_k4 in ggml-quants.c).
func scaleMinK4(j int, q []byte) (sc, m uint8) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	return q[j+4]&0xf | (q[j-4]>>6)<<4, q[j+4]>>4 | (q[j]>>6)<<4
}

// Q4_K super-block (144 bytes): d fp16, dmin fp16, scales[12] (eight 6-bit scale/min
// pairs), qs[128]; per 64 elements the low nibbles use pair 2i, the high nibbles 2i+1;
// y = d·sc·q - dmin·m.
func dequantQ4_K(dst []float32, src []byte) {
	for b := 0; len(src) > 0; b++ {
		d, dmin := f16(src), f16(src[2:])
		scales := src[4:16]
		q := src[16:144]
		y := dst[QK_K*b : QK_K*b+QK_K]
		for j, is := 0, 0; j < QK_K; j, is = j+64, is+2 {
			sc, m := scaleMinK4(is, scales)
			d1, m1 := d*float32(sc), dmin*float32(m)
			sc, m = scaleMinK4(is+1, scales)
			d2, m2 := d*float32(sc), dmin*float32(m)
			for l := 0; l < 32; l++ {
				y[l] = float32(d1*float32(q[l]&0xf)) - m1
				y[l+32] = float32(d2*float32(q[l]>>4)) - m2
			}
			y = y[64:]
			q = q[32:]
		}
		src = src[144:]
	}
}

// Q5_K super-block (176 bytes): d fp16, dmin fp16, scales[12], qh[32] (fifth bits),
// qs[128]; as Q4_K with q += 16 where the high bit is set.
func dequantQ5_K(dst []float32, src []byte) {
	for b := 0; len(src) > 0; b++ {
		d, dmin := f16(src), f16(src[2:])
		scales := src[4:16]
		qh := src[16:48]
		ql := src[48:176]
		y := dst[QK_K*b : QK_K*b+QK_K]
		u1, u2 := byte(1), byte(2)
		for j, is := 0, 0; j < QK_K; j, is = j+64, is+2 {
			sc, m := scaleMinK4(is, scales)
			d1, m1 := d*float32(sc), dmin*float32(m)
			sc, m = scaleMinK4(is+1, scales)
			d2, m2 := d*float32(sc), dmin*float32(m)
			for l := 0; l < 32; l++ {
				v1, v2 := ql[l]&0xf, ql[l]>>4
				if qh[l]&u1 != 0 {
					v1 += 16
				}
				if qh[l]&u2 != 0 {
					v2 += 16
				}
				y[l] = float32(d1*float32(v1)) - m1
				y[l+32] = float32(d2*float32(v2)) - m2
			}
			y = y[64:]
			ql = ql[32:]
			u1 <<= 2
			u2 <<= 2
		}
		src = src[176:]
	}
}

// Q6_K super-block (210 bytes): ql[128] (low 4 bits), qh[64] (high 2 bits), scales
// int8[16], d fp16; y = d·sc·(q - 32).
func dequantQ6_K(dst []float32, src []byte) {
	for b := 0; len(src) > 0; b++ {
		ql := src[0:128]
		qh := src[128:192]
		sc := src[192:208]
		d := f16(src[208:])
		y := dst[QK_K*b : QK_K*b+QK_K]
		for n := 0; n < QK_K; n += 128 {
			for l := 0; l < 32; l++ {
				is := l / 16
				q1 := int(ql[l]&0xf|(qh[l]>>0&3)<<4) - 32
				q2 := int(ql[l+32]&0xf|(qh[l]>>2&3)<<4) - 32
				q3 := int(ql[l]>>4|(qh[l]>>4&3)<<4) - 32
				q4 := int(ql[l+32]>>4|(qh[l]>>6&3)<<4) - 32
				y[l] = float32(d*float32(int8(sc[is+0]))) * float32(q1)
				y[l+32] = float32(d*float32(int8(sc[is+2]))) * float32(q2)
				y[l+64] = float32(d*float32(int8(sc[is+4]))) * float32(q3)
				y[l+96] = float32(d*float32(int8(sc[is+6]))) * float32(q4)
			}
			y = y[128:]
			ql = ql[64:]
			qh = qh[32:]
			sc = sc[8:]
		}
		src = src[210:]
	}
}

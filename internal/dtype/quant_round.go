package dtype

import (
	"encoding/binary"
	"math"
)

// Rounding is the float type a block's dequantization computes in. ComfyUI-GGUF's block
// kernels (dequant.py) take the fp16 block scales in the type its dequant_dtype option
// names (float16 by default, as the scales are stored) and compute every product and
// sum of the block in it; PyTorch evaluates each float16 or bfloat16 operation in
// float32 and rounds the result before the next one. The methods below repeat those
// operations in the same order, rounding after each; RoundF32 rounds nothing beyond
// float32 and gives the Decode* functions' (ggml's) values.
type Rounding uint8

const (
	RoundF32  Rounding = iota // float32 arithmetic (dequant_dtype float32, or target on a float32 model)
	RoundF16                  // float16 (ComfyUI-GGUF's default; dequant_dtype float16)
	RoundBF16                 // bfloat16 (dequant_dtype bfloat16)
)

// String names the rounding as ComfyUI-GGUF's dequant_dtype option does.
func (r Rounding) String() string {
	switch r {
	case RoundF32:
		return "float32"
	case RoundF16:
		return "float16"
	case RoundBF16:
		return "bfloat16"
	}
	return "Rounding(?)"
}

// Round rounds x to r's type (to nearest even, as c10::Half and c10::BFloat16 do).
func (r Rounding) Round(x float32) float32 {
	switch r {
	case RoundF16:
		return roundF16(x)
	case RoundBF16:
		return BF16ToF32(F32ToBF16(x))
	}
	return x
}

// roundF16 is F16ToF32(F32ToF16(x)) without the detour through the bits of a half: in
// the normal half range the float32 mantissa is rounded to 10 bits in place (a carry
// into the exponent is the right result); below it, adding and removing ±0.5 rounds to
// a multiple of 2⁻²⁴, the subnormal halves' spacing, since floats in [0.5, 1) are
// 2⁻²⁴ apart (ties go to the even multiple, as 0.5 is an even one).
func roundF16(x float32) float32 {
	u := math.Float32bits(x)
	switch a := u &^ (1 << 31); {
	case a < 0x38800000: // |x| < 2⁻¹⁴
		if u>>31 != 0 { // keep the sign of a result of zero
			return math.Float32frombits(math.Float32bits((x-0.5)+0.5) | 1<<31)
		}
		return (x + 0.5) - 0.5
	case a < 0x477ff000: // |x| < 65520: rounds to a finite half
		u += 0xfff + (u>>13)&1
		return math.Float32frombits(u &^ 0x1fff)
	case a <= 0x7f800000: // rounds to ±Inf, or is one
		return math.Float32frombits(u&(1<<31) | 0x7f800000)
	}
	return F16ToF32(F32ToF16(x)) // NaN: the quiet NaN of its sign
}

// scale reads a block's fp16 scale and converts it to r's type (.to(dtype)).
func (r Rounding) scale(b []byte) float32 {
	return r.Round(F16ToF32(binary.LittleEndian.Uint16(b)))
}

// mul and add are one rounded operation each; a float32 product of a scale and a small
// integer is exact, so only the rounding to r's type remains.
func (r Rounding) mul(a, b float32) float32 { return r.Round(a * b) }
func (r Rounding) add(a, b float32) float32 { return r.Round(a + b) }

// DecodeQ8_0 decodes Q8_0 blocks: y = d·q.
func (r Rounding) DecodeQ8_0(dst []float32, src []byte) {
	nb, src := blocks(dst, src, QK, 34)
	for b := 0; b < nb; b++ {
		blk := (*[34]byte)(src[34*b:])
		y := (*[QK]float32)(dst[QK*b:])
		d := r.scale(blk[0:])
		for j := range y {
			y[j] = r.mul(d, float32(int8(blk[2+j])))
		}
	}
}

// DecodeQ4_0 decodes Q4_0 blocks: y = d·(q − 8).
func (r Rounding) DecodeQ4_0(dst []float32, src []byte) {
	nb, src := blocks(dst, src, QK, 18)
	for b := 0; b < nb; b++ {
		blk := (*[18]byte)(src[18*b:])
		y := (*[QK]float32)(dst[QK*b:])
		d := r.scale(blk[0:])
		for j := 0; j < 16; j++ {
			q := blk[2+j]
			y[j] = r.mul(d, float32(int(q&0xf)-8))
			y[j+16] = r.mul(d, float32(int(q>>4)-8))
		}
	}
}

// DecodeQ4_1 decodes Q4_1 blocks: y = d·q + m, two roundings.
func (r Rounding) DecodeQ4_1(dst []float32, src []byte) {
	nb, src := blocks(dst, src, QK, 20)
	for b := 0; b < nb; b++ {
		blk := (*[20]byte)(src[20*b:])
		y := (*[QK]float32)(dst[QK*b:])
		d, m := r.scale(blk[0:]), r.scale(blk[2:])
		for j := 0; j < 16; j++ {
			q := blk[4+j]
			y[j] = r.add(r.mul(d, float32(q&0xf)), m)
			y[j+16] = r.add(r.mul(d, float32(q>>4)), m)
		}
	}
}

// DecodeQ5_0 decodes Q5_0 blocks: y = d·(q − 16).
func (r Rounding) DecodeQ5_0(dst []float32, src []byte) {
	nb, src := blocks(dst, src, QK, 22)
	for b := 0; b < nb; b++ {
		blk := (*[22]byte)(src[22*b:])
		y := (*[QK]float32)(dst[QK*b:])
		d := r.scale(blk[0:])
		qh := binary.LittleEndian.Uint32(blk[2:])
		for j := 0; j < 16; j++ {
			q := blk[6+j]
			h0 := byte((qh>>j)<<4) & 0x10
			h1 := byte(qh>>(j+12)) & 0x10
			y[j] = r.mul(d, float32(int(q&0xf|h0)-16))
			y[j+16] = r.mul(d, float32(int(q>>4|h1)-16))
		}
	}
}

// DecodeQ5_1 decodes Q5_1 blocks: y = d·q + m, two roundings.
func (r Rounding) DecodeQ5_1(dst []float32, src []byte) {
	nb, src := blocks(dst, src, QK, 24)
	for b := 0; b < nb; b++ {
		blk := (*[24]byte)(src[24*b:])
		y := (*[QK]float32)(dst[QK*b:])
		d, m := r.scale(blk[0:]), r.scale(blk[2:])
		qh := binary.LittleEndian.Uint32(blk[4:])
		for j := 0; j < 16; j++ {
			q := blk[8+j]
			h0 := byte((qh>>j)<<4) & 0x10
			h1 := byte(qh>>(j+12)) & 0x10
			y[j] = r.add(r.mul(d, float32(q&0xf|h0)), m)
			y[j+16] = r.add(r.mul(d, float32(q>>4|h1)), m)
		}
	}
}

// DecodeQ2_K decodes Q2_K super-blocks: dl = d·sc and ml = dmin·m per 16 elements,
// y = dl·q − ml.
func (r Rounding) DecodeQ2_K(dst []float32, src []byte) {
	nb, src := blocks(dst, src, QKK, 84)
	for b := 0; b < nb; b++ {
		blk := (*[84]byte)(src[84*b:])
		y := (*[QKK]float32)(dst[QKK*b:])
		d, dmin := r.scale(blk[80:]), r.scale(blk[82:])
		for n := 0; n < 2; n++ {
			for j := 0; j < 4; j++ {
				shift := uint(2 * j)
				for h := 0; h < 2; h++ {
					sc := blk[8*n+2*j+h]
					dl, ml := r.mul(d, float32(sc&0xf)), r.mul(dmin, float32(sc>>4))
					q := (*[16]byte)(blk[16+32*n+16*h:])
					yy := (*[16]float32)(y[128*n+32*j+16*h:])
					for l := range yy {
						yy[l] = r.add(r.mul(dl, float32((q[l]>>shift)&3)), -ml)
					}
				}
			}
		}
	}
}

// DecodeQ3_K decodes Q3_K super-blocks: dl = d·(sc − 32) per 16 elements, y = dl·q.
func (r Rounding) DecodeQ3_K(dst []float32, src []byte) {
	nb, src := blocks(dst, src, QKK, 110)
	for b := 0; b < nb; b++ {
		blk := (*[110]byte)(src[110*b:])
		hm := (*[32]byte)(blk[0:])
		d := r.scale(blk[108:])
		sc := unpackQ3KScales(blk[96:108])
		y := (*[QKK]float32)(dst[QKK*b:])
		for n := 0; n < 2; n++ {
			for j := 0; j < 4; j++ {
				shift := uint(2 * j)
				m := byte(1) << (4*n + j)
				for h := 0; h < 2; h++ {
					dl := r.mul(d, float32(int(sc[8*n+2*j+h])-32))
					q := (*[16]byte)(blk[32+32*n+16*h:])
					hh := (*[16]byte)(hm[16*h:])
					yy := (*[16]float32)(y[128*n+32*j+16*h:])
					for l := range yy {
						v := int((q[l] >> shift) & 3)
						if hh[l]&m == 0 {
							v -= 4
						}
						yy[l] = r.mul(dl, float32(v))
					}
				}
			}
		}
	}
}

// DecodeQ4_K decodes Q4_K super-blocks: d·sc and dmin·m per 32 elements, y = (d·sc)·q −
// dmin·m.
func (r Rounding) DecodeQ4_K(dst []float32, src []byte) {
	nb, src := blocks(dst, src, QKK, 144)
	for b := 0; b < nb; b++ {
		blk := (*[144]byte)(src[144*b:])
		d, dmin := r.scale(blk[0:]), r.scale(blk[2:])
		scales := (*[12]byte)(blk[4:])
		y := (*[QKK]float32)(dst[QKK*b:])
		for i := 0; i < 4; i++ {
			sc, m := ScaleMinK4(2*i, scales)
			d1, m1 := r.mul(d, float32(sc)), r.mul(dmin, float32(m))
			sc, m = ScaleMinK4(2*i+1, scales)
			d2, m2 := r.mul(d, float32(sc)), r.mul(dmin, float32(m))
			q := (*[32]byte)(blk[16+32*i:])
			lo := (*[32]float32)(y[64*i:])
			hi := (*[32]float32)(y[64*i+32:])
			for l := range q {
				lo[l] = r.add(r.mul(d1, float32(q[l]&0xf)), -m1)
				hi[l] = r.add(r.mul(d2, float32(q[l]>>4)), -m2)
			}
		}
	}
}

// DecodeQ5_K decodes Q5_K super-blocks as DecodeQ4_K with the fifth bits.
func (r Rounding) DecodeQ5_K(dst []float32, src []byte) {
	nb, src := blocks(dst, src, QKK, 176)
	for b := 0; b < nb; b++ {
		blk := (*[176]byte)(src[176*b:])
		d, dmin := r.scale(blk[0:]), r.scale(blk[2:])
		scales := (*[12]byte)(blk[4:])
		qh := (*[32]byte)(blk[16:])
		y := (*[QKK]float32)(dst[QKK*b:])
		for i := 0; i < 4; i++ {
			sc, m := ScaleMinK4(2*i, scales)
			d1, m1 := r.mul(d, float32(sc)), r.mul(dmin, float32(m))
			sc, m = ScaleMinK4(2*i+1, scales)
			d2, m2 := r.mul(d, float32(sc)), r.mul(dmin, float32(m))
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
				lo[l] = r.add(r.mul(d1, float32(v1)), -m1)
				hi[l] = r.add(r.mul(d2, float32(v2)), -m2)
			}
		}
	}
}

// DecodeQ6_K decodes Q6_K super-blocks: d·sc per 16 elements, y = (d·sc)·(q − 32).
func (r Rounding) DecodeQ6_K(dst []float32, src []byte) {
	nb, src := blocks(dst, src, QKK, 210)
	for b := 0; b < nb; b++ {
		blk := (*[210]byte)(src[210*b:])
		d := r.scale(blk[208:])
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
				yy[l] = r.mul(r.mul(d, float32(int8(sc[is+0]))), float32(q1))
				yy[l+32] = r.mul(r.mul(d, float32(int8(sc[is+2]))), float32(q2))
				yy[l+64] = r.mul(r.mul(d, float32(int8(sc[is+4]))), float32(q3))
				yy[l+96] = r.mul(r.mul(d, float32(int8(sc[is+6]))), float32(q4))
			}
		}
	}
}

// DecodeIQ4_NL decodes IQ4_NL blocks: y = d·codebook[q].
func (r Rounding) DecodeIQ4_NL(dst []float32, src []byte) {
	nb, src := blocks(dst, src, QK, 18)
	for b := 0; b < nb; b++ {
		blk := (*[18]byte)(src[18*b:])
		y := (*[QK]float32)(dst[QK*b:])
		d := r.scale(blk[0:])
		for j := 0; j < 16; j++ {
			y[j] = r.mul(d, float32(kvaluesIQ4NL[blk[2+j]&0xf]))
			y[j+16] = r.mul(d, float32(kvaluesIQ4NL[blk[2+j]>>4]))
		}
	}
}

// DecodeIQ4_XS decodes IQ4_XS super-blocks: dl = d·(ls − 32) per 32 elements,
// y = dl·codebook[q].
func (r Rounding) DecodeIQ4_XS(dst []float32, src []byte) {
	nb, src := blocks(dst, src, QKK, 136)
	for b := 0; b < nb; b++ {
		blk := (*[136]byte)(src[136*b:])
		d := r.scale(blk[0:])
		sh := binary.LittleEndian.Uint16(blk[2:])
		y := (*[QKK]float32)(dst[QKK*b:])
		for ib := 0; ib < QKK/32; ib++ {
			ls := int(blk[4+ib/2]>>(4*(ib%2)))&0xf | int(sh>>(2*ib))&3<<4
			dl := r.mul(d, float32(ls-32))
			q := (*[16]byte)(blk[8+16*ib:])
			yy := (*[32]float32)(y[32*ib:])
			for j := 0; j < 16; j++ {
				yy[j] = r.mul(dl, float32(kvaluesIQ4NL[q[j]&0xf]))
				yy[j+16] = r.mul(dl, float32(kvaluesIQ4NL[q[j]>>4]))
			}
		}
	}
}

package dtype

import "encoding/binary"

// The block decoders below convert len(dst)/B whole blocks of B elements from src,
// which must hold at least that many blocks. They follow ggml's block layouts
// (ggml-common.h) and the float32 arithmetic of dequantize_row_* (ggml-quants.c). Every
// product is rounded to float32 with an explicit conversion before it is added to
// anything: Go may otherwise fuse x*y+z into an FMA (on arm64 always), which would
// round differently from the reference. Blocks are viewed as fixed-size arrays so that
// the compiler drops the bounds checks.

// Block sizes in elements: the legacy and IQ4_NL/MXFP4 blocks hold 32, the k-quants,
// IQ4_XS and the ternary types super-blocks of QK_K.
const (
	QK  = 32
	QKK = 256
)

func half(b []byte) float32 { return F16ToF32(binary.LittleEndian.Uint16(b)) }

// blocks returns the number of whole blocks of size bs in dst and src cut to them.
func blocks(dst []float32, src []byte, bs, bytes int) (int, []byte) {
	n := len(dst) / bs
	return n, src[:n*bytes]
}

// DecodeQ4_0 decodes Q4_0 blocks (18 bytes: d fp16, qs[16]; the low nibbles are
// elements 0..15, the high nibbles 16..31; y = (q - 8)·d).
func DecodeQ4_0(dst []float32, src []byte) {
	nb, src := blocks(dst, src, QK, 18)
	for b := 0; b < nb; b++ {
		blk := (*[18]byte)(src[18*b:])
		y := (*[QK]float32)(dst[QK*b:])
		d := half(blk[:])
		for j := 0; j < 16; j++ {
			q := blk[2+j]
			y[j] = float32(int(q&0xf)-8) * d
			y[j+16] = float32(int(q>>4)-8) * d
		}
	}
}

// DecodeQ4_1 decodes Q4_1 blocks (20 bytes: d fp16, m fp16, qs[16]; y = q·d + m).
func DecodeQ4_1(dst []float32, src []byte) {
	nb, src := blocks(dst, src, QK, 20)
	for b := 0; b < nb; b++ {
		blk := (*[20]byte)(src[20*b:])
		y := (*[QK]float32)(dst[QK*b:])
		d, m := half(blk[0:]), half(blk[2:])
		for j := 0; j < 16; j++ {
			q := blk[4+j]
			y[j] = float32(float32(q&0xf)*d) + m
			y[j+16] = float32(float32(q>>4)*d) + m
		}
	}
}

// DecodeQ5_0 decodes Q5_0 blocks (22 bytes: d fp16, qh uint32 whose bit j is the fifth
// bit of element j, qs[16]; y = (q - 16)·d).
func DecodeQ5_0(dst []float32, src []byte) {
	nb, src := blocks(dst, src, QK, 22)
	for b := 0; b < nb; b++ {
		blk := (*[22]byte)(src[22*b:])
		y := (*[QK]float32)(dst[QK*b:])
		d := half(blk[0:])
		qh := binary.LittleEndian.Uint32(blk[2:])
		for j := 0; j < 16; j++ {
			q := blk[6+j]
			h0 := byte((qh>>j)<<4) & 0x10
			h1 := byte(qh>>(j+12)) & 0x10
			y[j] = float32(int(q&0xf|h0)-16) * d
			y[j+16] = float32(int(q>>4|h1)-16) * d
		}
	}
}

// DecodeQ5_1 decodes Q5_1 blocks (24 bytes: d fp16, m fp16, qh uint32, qs[16];
// y = q·d + m).
func DecodeQ5_1(dst []float32, src []byte) {
	nb, src := blocks(dst, src, QK, 24)
	for b := 0; b < nb; b++ {
		blk := (*[24]byte)(src[24*b:])
		y := (*[QK]float32)(dst[QK*b:])
		d, m := half(blk[0:]), half(blk[2:])
		qh := binary.LittleEndian.Uint32(blk[4:])
		for j := 0; j < 16; j++ {
			q := blk[8+j]
			h0 := byte((qh>>j)<<4) & 0x10
			h1 := byte(qh>>(j+12)) & 0x10
			y[j] = float32(float32(q&0xf|h0)*d) + m
			y[j+16] = float32(float32(q>>4|h1)*d) + m
		}
	}
}

// DecodeQ8_0 decodes Q8_0 blocks (34 bytes: d fp16, qs int8[32]; y = q·d).
func DecodeQ8_0(dst []float32, src []byte) {
	nb, src := blocks(dst, src, QK, 34)
	for b := 0; b < nb; b++ {
		blk := (*[34]byte)(src[34*b:])
		y := (*[QK]float32)(dst[QK*b:])
		d := half(blk[0:])
		for j := range y {
			y[j] = float32(int8(blk[2+j])) * d
		}
	}
}

// kvaluesIQ4NL is the non-linear 4-bit codebook of IQ4_NL and IQ4_XS (kvalues_iq4nl in
// ggml-common.h).
var kvaluesIQ4NL = [16]int8{-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}

// DecodeIQ4_NL decodes IQ4_NL blocks (18 bytes: d fp16, qs[16] of codebook indices,
// nibbles laid out as Q4_0).
func DecodeIQ4_NL(dst []float32, src []byte) {
	nb, src := blocks(dst, src, QK, 18)
	for b := 0; b < nb; b++ {
		blk := (*[18]byte)(src[18*b:])
		y := (*[QK]float32)(dst[QK*b:])
		d := half(blk[:])
		for j := 0; j < 16; j++ {
			y[j] = d * float32(kvaluesIQ4NL[blk[2+j]&0xf])
			y[j+16] = d * float32(kvaluesIQ4NL[blk[2+j]>>4])
		}
	}
}

// DecodeIQ4_XS decodes IQ4_XS super-blocks (136 bytes: d fp16, scales_h uint16,
// scales_l[4], qs[128]). Eight sub-blocks of 32 have 6-bit scales (low 4 bits in
// scales_l, high 2 in scales_h) biased by 32; y = d·(ls - 32)·codebook[q].
func DecodeIQ4_XS(dst []float32, src []byte) {
	nb, src := blocks(dst, src, QKK, 136)
	for b := 0; b < nb; b++ {
		blk := (*[136]byte)(src[136*b:])
		d := half(blk[:])
		sh := binary.LittleEndian.Uint16(blk[2:])
		y := (*[QKK]float32)(dst[QKK*b:])
		for ib := 0; ib < QKK/32; ib++ {
			ls := int(blk[4+ib/2]>>(4*(ib%2)))&0xf | int(sh>>(2*ib))&3<<4
			dl := d * float32(ls-32)
			q := (*[16]byte)(blk[8+16*ib:])
			yy := (*[32]float32)(y[32*ib:])
			for j := 0; j < 16; j++ {
				yy[j] = dl * float32(kvaluesIQ4NL[q[j]&0xf])
				yy[j+16] = dl * float32(kvaluesIQ4NL[q[j]>>4])
			}
		}
	}
}

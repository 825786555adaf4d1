package gguf

import (
	"encoding/binary"
	"math"

	"github.com/forgeflow/forgeflow/weights"
)

// The dequantizers below take whole blocks (the caller checked the sizes) and follow
// ggml's dequantize_row_* in ggml/src/ggml-quants.c. Every product is rounded to float32
// with an explicit conversion before it is added to anything: Go may otherwise fuse
// x*y+z into an FMA (on arm64 always), which would differ from the reference's rounding.

func f16(b []byte) float32 { return weights.F16ToF32(binary.LittleEndian.Uint16(b)) }

func dequantF32(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

func dequantF16(dst []float32, src []byte) { weights.F16SliceToF32(dst, src) }

func dequantBF16(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = weights.BF16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
	}
}

func dequantF64(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(src[8*i:])))
	}
}

func dequantI8(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = float32(int8(src[i]))
	}
}

func dequantI16(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = float32(int16(binary.LittleEndian.Uint16(src[2*i:])))
	}
}

func dequantI32(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = float32(int32(binary.LittleEndian.Uint32(src[4*i:])))
	}
}

func dequantI64(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = float32(int64(binary.LittleEndian.Uint64(src[8*i:])))
	}
}

// Q4_0 block (18 bytes): d fp16, qs[16]; the low nibbles are elements 0..15, the high
// nibbles 16..31; y = (q - 8) × d. Blocks are viewed as fixed-size arrays so that the
// compiler drops the bounds checks.
func dequantQ4_0(dst []float32, src []byte) {
	for b := 0; len(src) >= 18; b++ {
		blk := (*[18]byte)(src)
		y := (*[32]float32)(dst[32*b:])
		d := f16(blk[:])
		for j := 0; j < 16; j++ {
			q := blk[2+j]
			y[j] = float32(int(q&0xf)-8) * d
			y[j+16] = float32(int(q>>4)-8) * d
		}
		src = src[18:]
	}
}

// Q4_1 block (20 bytes): d fp16, m fp16, qs[16]; y = q × d + m.
func dequantQ4_1(dst []float32, src []byte) {
	for b := 0; len(src) >= 20; b++ {
		blk := (*[20]byte)(src)
		y := (*[32]float32)(dst[32*b:])
		d, m := f16(blk[0:]), f16(blk[2:])
		for j := 0; j < 16; j++ {
			q := blk[4+j]
			y[j] = float32(float32(q&0xf)*d) + m
			y[j+16] = float32(float32(q>>4)*d) + m
		}
		src = src[20:]
	}
}

// Q5_0 block (22 bytes): d fp16, qh uint32 (bit j is the fifth bit of element j), qs[16];
// y = (q - 16) × d.
func dequantQ5_0(dst []float32, src []byte) {
	for b := 0; len(src) >= 22; b++ {
		blk := (*[22]byte)(src)
		y := (*[32]float32)(dst[32*b:])
		d := f16(blk[0:])
		qh := binary.LittleEndian.Uint32(blk[2:])
		for j := 0; j < 16; j++ {
			q := blk[6+j]
			h0 := byte((qh>>j)<<4) & 0x10
			h1 := byte(qh>>(j+12)) & 0x10
			y[j] = float32(int(q&0xf|h0)-16) * d
			y[j+16] = float32(int(q>>4|h1)-16) * d
		}
		src = src[22:]
	}
}

// Q5_1 block (24 bytes): d fp16, m fp16, qh uint32, qs[16]; y = q × d + m.
func dequantQ5_1(dst []float32, src []byte) {
	for b := 0; len(src) >= 24; b++ {
		blk := (*[24]byte)(src)
		y := (*[32]float32)(dst[32*b:])
		d, m := f16(blk[0:]), f16(blk[2:])
		qh := binary.LittleEndian.Uint32(blk[4:])
		for j := 0; j < 16; j++ {
			q := blk[8+j]
			h0 := byte((qh>>j)<<4) & 0x10
			h1 := byte(qh>>(j+12)) & 0x10
			y[j] = float32(float32(q&0xf|h0)*d) + m
			y[j+16] = float32(float32(q>>4|h1)*d) + m
		}
		src = src[24:]
	}
}

// Q8_0 block (34 bytes): d fp16, qs int8[32]; y = q × d.
func dequantQ8_0(dst []float32, src []byte) {
	for b := 0; len(src) >= 34; b++ {
		blk := (*[34]byte)(src)
		y := (*[32]float32)(dst[32*b:])
		d := f16(blk[0:])
		for j := range y {
			y[j] = float32(int8(blk[2+j])) * d
		}
		src = src[34:]
	}
}

// kvaluesIQ4NL is the non-linear 4-bit codebook of IQ4_NL and IQ4_XS (kvalues_iq4nl in
// ggml-common.h).
var kvaluesIQ4NL = [16]int8{-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}

// IQ4_NL block (18 bytes): d fp16, qs[16] of codebook indices, nibbles laid out as Q4_0.
func dequantIQ4_NL(dst []float32, src []byte) {
	for b := 0; len(src) > 0; b++ {
		d := f16(src)
		qs := src[2:18]
		y := dst[32*b : 32*b+32]
		for j := 0; j < 16; j++ {
			y[j] = d * float32(kvaluesIQ4NL[qs[j]&0xf])
			y[j+16] = d * float32(kvaluesIQ4NL[qs[j]>>4])
		}
		src = src[18:]
	}
}

// IQ4_XS super-block (136 bytes): d fp16, scales_h uint16, scales_l[4], qs[128]. Eight
// sub-blocks of 32 have 6-bit scales (low 4 bits in scales_l, high 2 in scales_h) biased
// by 32; y = d × (ls - 32) × codebook[q].
func dequantIQ4_XS(dst []float32, src []byte) {
	for b := 0; len(src) > 0; b++ {
		d := f16(src)
		sh := binary.LittleEndian.Uint16(src[2:])
		sl := src[4:8]
		qs := src[8:136]
		y := dst[QK_K*b : QK_K*b+QK_K]
		for ib := 0; ib < QK_K/32; ib++ {
			ls := int(sl[ib/2]>>(4*(ib%2)))&0xf | int(sh>>(2*ib))&3<<4
			dl := d * float32(ls-32)
			q := qs[16*ib : 16*ib+16]
			yy := y[32*ib : 32*ib+32]
			for j := 0; j < 16; j++ {
				yy[j] = dl * float32(kvaluesIQ4NL[q[j]&0xf])
				yy[j+16] = dl * float32(kvaluesIQ4NL[q[j]>>4])
			}
		}
		src = src[136:]
	}
}

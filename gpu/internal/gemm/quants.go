package gemm

import "encoding/binary"

// The GGUF block types below are converted in Go on every path. Each
// decoder follows the block layout of ggml (ggml-common.h) and the
// element formula of its dequantize_row_* (ggml-quants.c), re-derived from
// those definitions; the golden gguf family (ComfyUI-GGUF's float32 math,
// equal to gguf-py's) checks them bit for bit.

// decodeOther converts len(dst) elements (whole blocks) of d from src.
func decodeOther(d DType, dst []float32, src []byte) {
	bs, bb := d.BlockSize(), d.BlockBytes()
	for b := 0; b < len(dst); b += bs {
		blk := src[b/bs*bb : b/bs*bb+bb]
		out := dst[b : b+bs]
		switch d {
		case Q4_1:
			decodeQ4_1(out, blk)
		case Q5_0, Q5_1:
			decodeQ5(out, blk, d == Q5_1)
		case Q2_K:
			decodeQ2K(out, blk)
		case Q3_K:
			decodeQ3K(out, blk)
		case Q5_K:
			decodeQ5K(out, blk)
		case Q6_K:
			decodeQ6K(out, blk)
		}
	}
}

func half(b []byte) float32 { return HalfToFloat32(binary.LittleEndian.Uint16(b)) }

// decodeQ4_1: element i is the low nibble of byte i, element i+16 the high
// nibble; x = d·q + m.
func decodeQ4_1(out []float32, blk []byte) {
	d, m := half(blk), half(blk[2:])
	q := blk[4:20]
	for i := 0; i < 16; i++ {
		out[i] = d*float32(q[i]&0x0f) + m
		out[i+16] = d*float32(q[i]>>4) + m
	}
}

// decodeQ5 handles Q5_0 (x = d·(q−16)) and Q5_1 (x = d·q + m): the fifth
// bit of element i is bit i of the little-endian 32-bit qh, and the low
// four bits are nibbles as in Q4_0.
func decodeQ5(out []float32, blk []byte, withMin bool) {
	d := half(blk)
	var m float32
	off := 2
	if withMin {
		m = half(blk[2:])
		off = 4
	}
	qh := binary.LittleEndian.Uint32(blk[off:])
	q := blk[off+4 : off+20]
	for i := 0; i < 16; i++ {
		lo := int32(q[i]&0x0f) | int32(qh>>i&1)<<4
		hi := int32(q[i]>>4) | int32(qh>>(i+16)&1)<<4
		if withMin {
			out[i] = d*float32(lo) + m
			out[i+16] = d*float32(hi) + m
		} else {
			out[i] = d * float32(lo-16)
			out[i+16] = d * float32(hi-16)
		}
	}
}

// decodeQ2K: 16 sub-blocks of 16, each with a 4-bit scale (low nibble)
// and 4-bit min (high nibble) in scales[16]; quants are 2-bit fields of qs,
// 32 bytes per 128 elements, field s (shift 2s) of byte l giving element
// 32s + l of that half. x = d·sc·q − dmin·mn.
func decodeQ2K(out []float32, blk []byte) {
	scales, qs := blk[:16], blk[16:80]
	d, dmin := half(blk[80:]), half(blk[82:])
	is := 0
	for h := 0; h < 2; h++ {
		q := qs[32*h : 32*h+32]
		for s := 0; s < 4; s++ {
			shift := 2 * s
			for part := 0; part < 2; part++ {
				sc := scales[is]
				is++
				dl, ml := d*float32(sc&0x0f), dmin*float32(sc>>4)
				o := out[128*h+32*s+16*part : 128*h+32*s+16*part+16]
				for l := range o {
					o[l] = dl*float32(q[16*part+l]>>shift&3) - ml
				}
			}
		}
	}
}

// decodeQ3K: 16 sub-blocks of 16 with 6-bit scales (offset −32) packed in
// 12 bytes: the low nibbles of bytes 0..7 are scales 0..7, their high
// nibbles scales 8..15, and bytes 8..11 carry the top two bits, two bits
// per scale in order. A quant is a 2-bit field of qs (as in Q2_K) minus 4
// unless its bit in hmask is set; hmask bit b of byte l belongs to element
// 32b + l. x = d·(sc−32)·q.
func decodeQ3K(out []float32, blk []byte) {
	hmask, qs, packed := blk[:32], blk[32:96], blk[96:108]
	d := half(blk[108:])
	var sc [16]int32
	for i := 0; i < 16; i++ {
		low := packed[i%8] >> (4 * (i / 8)) & 0x0f
		high := packed[8+i%4] >> (2 * (i / 4)) & 3
		sc[i] = int32(low|high<<4) - 32
	}
	is := 0
	for h := 0; h < 2; h++ {
		q := qs[32*h : 32*h+32]
		for s := 0; s < 4; s++ {
			shift := 2 * s
			bit := byte(1) << (4*h + s)
			for part := 0; part < 2; part++ {
				dl := d * float32(sc[is])
				is++
				o := out[128*h+32*s+16*part : 128*h+32*s+16*part+16]
				for l := range o {
					idx := 16*part + l
					v := int32(q[idx] >> shift & 3)
					if hmask[idx]&bit == 0 {
						v -= 4
					}
					o[l] = dl * float32(v)
				}
			}
		}
	}
}

// decodeQ5K: as Q4_K (eight sub-blocks of 32, 6-bit scales and mins) with
// a fifth bit per element: bit 2c of qh byte l for element 64c + l and bit
// 2c+1 for element 64c + 32 + l. x = d·sc·q − dmin·mn.
func decodeQ5K(out []float32, blk []byte) {
	d, dmin := half(blk), half(blk[2:])
	scales, qh, qs := blk[4:16], blk[16:48], blk[48:176]
	for c := 0; c < 4; c++ {
		sc0, m0 := q4KScaleMin(2*c, scales)
		sc1, m1 := q4KScaleMin(2*c+1, scales)
		d0, mm0 := d*float32(sc0), dmin*float32(m0)
		d1, mm1 := d*float32(sc1), dmin*float32(m1)
		q := qs[32*c : 32*c+32]
		for l := 0; l < 32; l++ {
			lo := int32(q[l]&0x0f) | int32(qh[l]>>(2*c)&1)<<4
			hi := int32(q[l]>>4) | int32(qh[l]>>(2*c+1)&1)<<4
			out[64*c+l] = d0*float32(lo) - mm0
			out[64*c+32+l] = d1*float32(hi) - mm1
		}
	}
}

// decodeQ6K: 16 sub-blocks of 16 with int8 scales; each half of 128
// elements takes 64 bytes of low nibbles and 32 bytes of 2-bit highs.
// Element 32s + l of a half (s = 0..3) has the low nibble of ql[l] (s=0),
// ql[l+32] (s=1), their high nibbles (s=2, 3), and the high bits 2s of
// qh[l]; q is offset by −32 and x = d·sc·q.
func decodeQ6K(out []float32, blk []byte) {
	ql, qh, scales := blk[:128], blk[128:192], blk[192:208]
	d := half(blk[208:])
	for h := 0; h < 2; h++ {
		l4, h2, sc := ql[64*h:64*h+64], qh[32*h:32*h+32], scales[8*h:8*h+8]
		o := out[128*h : 128*h+128]
		for l := 0; l < 32; l++ {
			is := l / 16
			q1 := int32(l4[l]&0x0f|(h2[l]>>0&3)<<4) - 32
			q2 := int32(l4[l+32]&0x0f|(h2[l]>>2&3)<<4) - 32
			q3 := int32(l4[l]>>4|(h2[l]>>4&3)<<4) - 32
			q4 := int32(l4[l+32]>>4|(h2[l]>>6&3)<<4) - 32
			o[l] = d * float32(int8(sc[is])) * float32(q1)
			o[l+32] = d * float32(int8(sc[is+2])) * float32(q2)
			o[l+64] = d * float32(int8(sc[is+4])) * float32(q3)
			o[l+96] = d * float32(int8(sc[is+6])) * float32(q4)
		}
	}
}

package gguf

import (
	"encoding/binary"
	"math"

	"github.com/forgeflow/forgeflow/internal/dtype"
)

// IQ4_NL and IQ4_XS quantizers for writing test and benchmark models. gguf-py has no
// reference quantizer for them (and ggml's searches several scales per block), so these
// are the plain form: each block's largest-magnitude value maps onto the codebook's
// −127 end and every value takes its nearest codebook entry. The bytes decode with
// ggml's (and ComfyUI-GGUF's) dequantization like any other file's.

// iq4Values is kvalues_iq4nl (ggml-common.h), the values a nibble indexes.
var iq4Values = [16]float32{-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}

// nearestIQ4 returns the index of the codebook entry nearest v (the lower on a tie).
func nearestIQ4(v float32) byte {
	best, bestErr := 0, float32(math.Inf(1))
	for i, c := range iq4Values {
		if e := float32(math.Abs(float64(v - c))); e < bestErr {
			best, bestErr = i, e
		}
	}
	return byte(best)
}

// signedMax returns the value of largest magnitude in x (the first on a tie).
func signedMax(x []float32) float32 {
	var m float32
	for _, v := range x {
		if math.Abs(float64(v)) > math.Abs(float64(m)) {
			m = v
		}
	}
	return m
}

// f16Round rounds to a binary16 value, as a block scale is stored.
func f16Round(f float32) float32 { return dtype.F16ToF32(dtype.F32ToF16(f)) }

// putIQ4Nibbles writes 32 values' nearest codebook indices for scale d in Q4_0's nibble
// order (element j in the low nibble of byte j, element j+16 in the high one).
func putIQ4Nibbles(dst []byte, x []float32, d float32) {
	inv := float32(0)
	if d != 0 {
		inv = 1 / d
	}
	for j := 0; j < 16; j++ {
		dst[j] = nearestIQ4(x[j]*inv) | nearestIQ4(x[j+16]*inv)<<4
	}
}

// quantIQ4NL writes IQ4_NL blocks (18 bytes: d fp16, 16 bytes of nibbles).
func quantIQ4NL(dst []byte, src []float32) {
	for b := 0; b < len(src)/32; b++ {
		x, blk := src[32*b:32*b+32], dst[18*b:18*b+18]
		d := f16Round(signedMax(x) / -127)
		binary.LittleEndian.PutUint16(blk, dtype.F32ToF16(d))
		putIQ4Nibbles(blk[2:], x, d)
	}
}

// quantIQ4XS writes IQ4_XS super-blocks (136 bytes: d fp16, scales_h uint16,
// scales_l[4], qs[128]): each sub-block of 32 gets the 6-bit scale ls (d·(ls − 32)
// nearest its own −127-end scale), the super-block scale maps the largest of those onto
// ls = 0.
func quantIQ4XS(dst []byte, src []float32) {
	for b := 0; b < len(src)/256; b++ {
		x, blk := src[256*b:256*b+256], dst[136*b:136*b+136]
		var sub [8]float32
		for ib := range sub {
			sub[ib] = signedMax(x[32*ib:32*ib+32]) / -127
		}
		d := f16Round(signedMax(sub[:]) / -32)
		binary.LittleEndian.PutUint16(blk, dtype.F32ToF16(d))
		var sh uint16
		clear(blk[4:8])
		for ib, s := range sub {
			l := 0
			if d != 0 {
				l = max(-32, min(31, int(math.Round(float64(s/d)))))
			}
			ls := l + 32
			blk[4+ib/2] |= byte(ls&0xf) << (4 * (ib % 2))
			sh |= uint16(ls>>4) << (2 * ib)
			putIQ4Nibbles(blk[8+16*ib:], x[32*ib:32*ib+32], float32(float32(l)*d))
		}
		binary.LittleEndian.PutUint16(blk[2:], sh)
	}
}

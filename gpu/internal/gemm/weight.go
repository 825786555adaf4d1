package gemm

import (
	"encoding/binary"
	"fmt"
	"math"
)

// DType is the storage type of a Linear weight.
type DType int

const (
	F32      DType = iota // IEEE binary32, little-endian
	F16                   // IEEE binary16
	BF16                  // bfloat16 (the top half of a binary32)
	F8E4M3FN              // float8 e4m3fn: bias 7, no infinities, S.1111.111 is NaN
	F8E5M2                // float8 e5m2: bias 15, IEEE-like with infinities
	Q8_0                  // GGUF/ggml block of 32: f16 scale d, 32 int8 q; x = d·q
	Q4_0                  // GGUF/ggml block of 32: f16 scale d, 16 bytes of nibbles; x = d·(q-8)
	Q4_K                  // GGUF/ggml super-block of 256: f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles
	Q4_1                  // GGUF block of 32: f16 d, f16 m, 16 bytes of nibbles; x = d·q + m
	Q5_0                  // GGUF block of 32: f16 d, 4 bytes of fifth bits, 16 bytes of nibbles; x = d·(q-16)
	Q5_1                  // GGUF block of 32: f16 d, f16 m, 4 bytes of fifth bits, 16 bytes of nibbles; x = d·q + m
	Q2_K                  // GGUF super-block of 256: 16 bytes of 4-bit scale/min pairs, 64 bytes of 2-bit quants, f16 d, f16 dmin
	Q3_K                  // GGUF super-block of 256: 32 bytes of high bits, 64 bytes of 2-bit quants, 12 bytes of 6-bit scales, f16 d
	Q5_K                  // GGUF super-block of 256: f16 d, f16 dmin, 12 bytes of scales/mins, 32 bytes of fifth bits, 128 bytes of nibbles
	Q6_K                  // GGUF super-block of 256: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 int8 scales, f16 d
	dtypeCount
)

var dtypeNames = [dtypeCount]string{"F32", "F16", "BF16", "F8_E4M3FN", "F8_E5M2", "Q8_0", "Q4_0", "Q4_K",
	"Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q5_K", "Q6_K"}

func (d DType) String() string {
	if d >= 0 && d < dtypeCount {
		return dtypeNames[d]
	}
	return fmt.Sprintf("DType(%d)", int(d))
}

// BlockSize is the number of elements one storage block of d holds (1 for
// the plain float types).
func (d DType) BlockSize() int {
	switch d {
	case Q8_0, Q4_0, Q4_1, Q5_0, Q5_1:
		return 32
	case Q4_K, Q2_K, Q3_K, Q5_K, Q6_K:
		return 256
	}
	return 1
}

// BlockBytes is the byte size of one storage block of d.
func (d DType) BlockBytes() int {
	switch d {
	case F32:
		return 4
	case F16, BF16:
		return 2
	case F8E4M3FN, F8E5M2:
		return 1
	case Q8_0:
		return 2 + 32
	case Q4_0:
		return 2 + 16
	case Q4_K:
		return 2 + 2 + 12 + 128
	case Q4_1:
		return 2 + 2 + 16
	case Q5_0:
		return 2 + 4 + 16
	case Q5_1:
		return 2 + 2 + 4 + 16
	case Q2_K:
		return 16 + 64 + 2 + 2
	case Q3_K:
		return 32 + 64 + 12 + 2
	case Q5_K:
		return 2 + 2 + 12 + 32 + 128
	case Q6_K:
		return 128 + 64 + 16 + 2
	}
	return 0
}

// RowBytes is the byte size of a row of cols elements of d, or an error
// when cols is not a whole number of blocks.
func (d DType) RowBytes(cols int) (int, error) {
	if d < 0 || d >= dtypeCount {
		return 0, fmt.Errorf("gemm: unknown weight dtype %d", int(d))
	}
	bs := d.BlockSize()
	if cols%bs != 0 {
		return 0, fmt.Errorf("gemm: %s row of %d elements is not a multiple of the block size %d", d, cols, bs)
	}
	return cols / bs * d.BlockBytes(), nil
}

// Weight is an N×K row-major matrix in its storage dtype: row j holds the
// K input weights of output j, as torch.nn.Linear stores its weight. Data
// is the raw little-endian storage (for example a slice of a memory-mapped
// safetensors or GGUF file); rows are RowBytes(K) apart unless Stride (in
// bytes) is set larger.
type Weight struct {
	DType  DType
	N, K   int
	Data   []byte
	Stride int // bytes between rows; 0 means DType.RowBytes(K)
}

func (w *Weight) rowStride() (int, error) {
	rb, err := w.DType.RowBytes(w.K)
	if err != nil {
		return 0, err
	}
	if w.Stride == 0 {
		return rb, nil
	}
	if w.Stride < rb {
		return 0, fmt.Errorf("gemm: weight %s %d×%d: row stride %d bytes less than row size %d", w.DType, w.N, w.K, w.Stride, rb)
	}
	return w.Stride, nil
}

// decodeRow converts elements [k0, k0+len(dst)) of the weight row src to
// float32. k0 and len(dst) are multiples of the block size, except that
// the last call of a row may end at the row's end.
func (kr *kernel) decodeRow(d DType, dst []float32, src []byte, k0 int) {
	n := len(dst)
	switch d {
	case F32:
		s := src[4*k0 : 4*(k0+n)]
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(s[4*i:]))
		}
	case F16:
		kr.cvtF16(dst, src[2*k0:2*(k0+n)])
	case BF16:
		kr.cvtBF16(dst, src[2*k0:2*(k0+n)])
	case F8E4M3FN:
		s := src[k0 : k0+n]
		for i, b := range s {
			dst[i] = f8e4m3fnTable[b]
		}
	case F8E5M2:
		s := src[k0 : k0+n]
		for i, b := range s {
			dst[i] = f8e5m2Table[b]
		}
	case Q8_0:
		kr.decQ8_0(dst, src[k0/32*34:])
	case Q4_0:
		kr.decQ4_0(dst, src[k0/32*18:])
	case Q4_K:
		kr.decQ4K(dst, src[k0/256*144:])
	default:
		// The other GGUF types (quants.go) are converted in Go on every path.
		bs, bb := d.BlockSize(), d.BlockBytes()
		decodeOther(d, dst, src[k0/bs*bb:])
	}
}

func cvtF16Generic(dst []float32, src []byte) {
	src = src[:2*len(dst)]
	for i := range dst {
		dst[i] = HalfToFloat32(binary.LittleEndian.Uint16(src[2*i:]))
	}
}

func cvtBF16Generic(dst []float32, src []byte) {
	src = src[:2*len(dst)]
	for i := range dst {
		dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(src[2*i:])) << 16)
	}
}

// decodeQ8_0 follows ggml's block_q8_0 (ggml-common.h) and
// dequantize_row_q8_0 (ggml-quants.c): x[i] = d·q[i].
func decodeQ8_0(dst []float32, src []byte) {
	for b := 0; b < len(dst); b += 32 {
		blk := src[b/32*34:]
		d := HalfToFloat32(binary.LittleEndian.Uint16(blk))
		q := blk[2:34]
		out := dst[b : b+32]
		for i := range out {
			out[i] = d * float32(int8(q[i]))
		}
	}
}

// decodeQ4_0 follows ggml's block_q4_0 and dequantize_row_q4_0: element i
// of the block is the low nibble of byte i, element i+16 the high nibble,
// both offset by -8 and scaled by d.
func decodeQ4_0(dst []float32, src []byte) {
	for b := 0; b < len(dst); b += 32 {
		blk := src[b/32*18:]
		d := HalfToFloat32(binary.LittleEndian.Uint16(blk))
		q := blk[2:18]
		out := dst[b : b+32]
		for i := 0; i < 16; i++ {
			out[i] = d * float32(int(q[i]&0x0f)-8)
			out[i+16] = d * float32(int(q[i]>>4)-8)
		}
	}
}

// q4KScaleMin unpacks the 6-bit scale and min of sub-block j (0..7) from
// the 12 packed bytes of a Q4_K super-block (ggml's get_scale_min_k4):
// sub-blocks 0..3 keep their six bits in the low bits of bytes j and j+4;
// sub-blocks 4..7 keep their low four bits in the nibbles of byte j+4 and
// their top two bits in the top two bits of bytes j-4 (scale) and j (min).
func q4KScaleMin(j int, s []byte) (sc, mn uint8) {
	if j < 4 {
		return s[j] & 63, s[j+4] & 63
	}
	sc = s[j+4]&0x0f | (s[j-4]>>6)<<4
	mn = s[j+4]>>4 | (s[j]>>6)<<4
	return sc, mn
}

// q4KPairs computes the eight sub-blocks' (d·scale, dmin·min) pairs of a
// Q4_K super-block into dm.
func q4KPairs(dm *[16]float32, blk []byte) {
	d := HalfToFloat32(binary.LittleEndian.Uint16(blk))
	dmin := HalfToFloat32(binary.LittleEndian.Uint16(blk[2:]))
	scales := blk[4:16]
	for j := 0; j < 8; j++ {
		sc, mn := q4KScaleMin(j, scales)
		dm[2*j], dm[2*j+1] = d*float32(sc), dmin*float32(mn)
	}
}

// decodeQ4K follows ggml's block_q4_K and dequantize_row_q4_K: a
// super-block of 256 holds 8 sub-blocks of 32; each 32 bytes of qs carry
// two sub-blocks (low nibbles, then high nibbles), and element x =
// d·scale·q − dmin·min.
func decodeQ4K(dst []float32, src []byte) {
	var dm [16]float32
	for b := 0; b < len(dst); b += 256 {
		blk := src[b/256*144:]
		q4KPairs(&dm, blk)
		qs := blk[16:144]
		out := dst[b : b+256]
		for c := 0; c < 4; c++ {
			d0, mm0, d1, mm1 := dm[4*c], dm[4*c+1], dm[4*c+2], dm[4*c+3]
			q := qs[32*c : 32*c+32]
			o := out[64*c : 64*c+64]
			for l := 0; l < 32; l++ {
				o[l] = d0*float32(q[l]&0x0f) - mm0
				o[l+32] = d1*float32(q[l]>>4) - mm1
			}
		}
	}
}

// HalfToFloat32 converts an IEEE binary16 bit pattern to float32 exactly,
// including subnormals, infinities and NaNs.
func HalfToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
	case man == 0:
		return math.Float32frombits(sign)
	}
	// Subnormal: value = man · 2^-24, exact in float32.
	f := float32(man) * (1.0 / (1 << 24))
	return math.Float32frombits(sign | math.Float32bits(f))
}

// f8Table builds the 256-entry decoding table of an 8-bit float with ebits
// exponent bits (bias 2^(ebits-1)-1). fn selects the "FN" convention of
// e4m3fn (no infinities; only S.1111.111 is NaN) instead of IEEE-style
// infinities and NaNs at the top exponent.
func f8Table(ebits int, fn bool) (t [256]float32) {
	mbits := 7 - ebits
	bias := 1<<(ebits-1) - 1
	emax := 1<<ebits - 1
	for v := 0; v < 256; v++ {
		e := (v >> mbits) & emax
		m := v & (1<<mbits - 1)
		var x float64
		switch {
		case fn && e == emax && m == 1<<mbits-1:
			x = math.NaN()
		case !fn && e == emax && m == 0:
			x = math.Inf(1)
		case !fn && e == emax:
			x = math.NaN()
		case e == 0:
			x = math.Ldexp(float64(m), 1-bias-mbits)
		default:
			x = math.Ldexp(float64(m|1<<mbits), e-bias-mbits)
		}
		if v&0x80 != 0 {
			x = -x
		}
		t[v] = float32(x)
	}
	return t
}

// Read-only decoding tables, built once at package initialisation.
var (
	f8e4m3fnTable = f8Table(4, true)
	f8e5m2Table   = f8Table(5, false)
)

package gemm

import (
	"encoding/binary"
	"fmt"

	"github.com/forgeflow/forgeflow/internal/dtype"
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
	IQ4_NL                // GGUF block of 32: f16 d, 16 bytes of nibbles indexing a 16-value codebook; x = d·kv[q]
	IQ4_XS                // GGUF super-block of 256: f16 d, 2+4 bytes of 6-bit sub-block scales, 128 bytes of codebook nibbles
	TQ1_0                 // GGUF super-block of 256: 48+4 bytes of base-3 packed trits, f16 d; x = d·t, t in {-1, 0, 1}
	TQ2_0                 // GGUF super-block of 256: 64 bytes of 2-bit values, f16 d; x = d·(q-1)
	MXFP4                 // GGUF block of 32: E8M0 shared exponent, 16 bytes of FP4 (e2m1) nibbles
	dtypeCount
)

var dtypeNames = [dtypeCount]string{"F32", "F16", "BF16", "F8_E4M3FN", "F8_E5M2", "Q8_0", "Q4_0", "Q4_K",
	"Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4"}

func (d DType) String() string {
	if m := d.Math(); m != MathF32 && d.Base() < dtypeCount {
		return dtypeNames[d.Base()] + "@" + m.String()
	}
	if d >= 0 && d < dtypeCount {
		return dtypeNames[d]
	}
	return fmt.Sprintf("DType(%d)", int(d))
}

// BlockSize is the number of elements one storage block of d holds (1 for
// the plain float types).
func (d DType) BlockSize() int {
	switch d.Base() {
	case Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, MXFP4:
		return 32
	case Q4_K, Q2_K, Q3_K, Q5_K, Q6_K, IQ4_XS, TQ1_0, TQ2_0:
		return 256
	}
	return 1
}

// BlockBytes is the byte size of one storage block of d.
func (d DType) BlockBytes() int {
	switch d.Base() {
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
	case IQ4_NL:
		return 2 + 16
	case IQ4_XS:
		return 2 + 2 + 4 + 128
	case TQ1_0:
		return 48 + 4 + 2
	case TQ2_0:
		return 64 + 2
	case MXFP4:
		return 1 + 16
	}
	return 0
}

// RowBytes is the byte size of a row of cols elements of d, or an error
// when cols is not a whole number of blocks.
func (d DType) RowBytes(cols int) (int, error) {
	if d < 0 || d.Base() >= dtypeCount || d.Math() > MathBF16 {
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
	// Packed, when set, is this weight laid out by Engine.Pack; an Engine
	// whose kernel reads that layout uses it instead of Data (bit-identical
	// results), others ignore it.
	Packed *Packed
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
		dtype.DecodeF32(dst, src[4*k0:4*(k0+n)])
	case F16:
		kr.cvtF16(dst, src[2*k0:2*(k0+n)])
	case BF16:
		kr.cvtBF16(dst, src[2*k0:2*(k0+n)])
	case F8E4M3FN:
		dtype.DecodeE4M3FN(dst, src[k0:k0+n])
	case F8E5M2:
		dtype.DecodeE5M2(dst, src[k0:k0+n])
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

// The portable converters and decoders are internal/dtype's (ggml's block layouts and
// float32 arithmetic, shared with weights/gguf); the vector forms in gemm_amd64.s must
// give the same values.

func cvtF16Generic(dst []float32, src []byte)  { dtype.DecodeF16(dst, src) }
func cvtBF16Generic(dst []float32, src []byte) { dtype.DecodeBF16(dst, src) }
func decodeQ8_0(dst []float32, src []byte)     { dtype.DecodeQ8_0(dst, src) }
func decodeQ4_0(dst []float32, src []byte)     { dtype.DecodeQ4_0(dst, src) }
func decodeQ4K(dst []float32, src []byte)      { dtype.DecodeQ4_K(dst, src) }

// q4KPairs computes the eight sub-blocks' (d·scale, dmin·min) pairs of a
// Q4_K super-block into dm, as dtype.DecodeQ4_K does.
func q4KPairs(dm *[16]float32, blk []byte) {
	d := dtype.F16ToF32(binary.LittleEndian.Uint16(blk))
	dmin := dtype.F16ToF32(binary.LittleEndian.Uint16(blk[2:]))
	scales := (*[12]byte)(blk[4:16])
	for j := 0; j < 8; j++ {
		sc, mn := dtype.ScaleMinK4(j, scales)
		dm[2*j], dm[2*j+1] = d*float32(sc), dmin*float32(mn)
	}
}

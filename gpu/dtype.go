package gpu

import "fmt"

// DType is the element type of a tensor's storage.
//
// F32 is what activations use on the CPU. F16, BF16 and the two float8 types are storage
// for weights (converted inside kernels). The GGUF block types hold BlockSize elements in
// BlockBytes bytes (ggml's layouts, ggml-common.h); the runtime treats them as opaque rows:
// their dequantisation belongs to weights/, and the matmul kernels consume them all
// (gpu/internal/gemm converts each while packing).
type DType uint8

const (
	F32      DType = iota // IEEE binary32
	F16                   // IEEE binary16
	BF16                  // bfloat16: the top half of a binary32
	F8E4M3FN              // float8 e4m3fn (bias 7, no infinities, S.1111.111 is NaN)
	F8E5M2                // float8 e5m2 (bias 15, IEEE-like with infinities)
	Q4_0
	Q4_1
	Q5_0
	Q5_1
	Q8_0
	Q2_K
	Q3_K
	Q4_K
	Q5_K
	Q6_K
	IQ4_NL
	IQ4_XS
	TQ1_0
	TQ2_0
	MXFP4
	dtypeCount
)

type dtypeInfo struct {
	name       string
	block      int // elements per block
	blockBytes int // bytes per block
}

var dtypeTable = [dtypeCount]dtypeInfo{
	F32:      {"F32", 1, 4},
	F16:      {"F16", 1, 2},
	BF16:     {"BF16", 1, 2},
	F8E4M3FN: {"F8_E4M3", 1, 1},
	F8E5M2:   {"F8_E5M2", 1, 1},
	Q4_0:     {"Q4_0", 32, 2 + 16},
	Q4_1:     {"Q4_1", 32, 2 + 2 + 16},
	Q5_0:     {"Q5_0", 32, 2 + 4 + 16},
	Q5_1:     {"Q5_1", 32, 2 + 2 + 4 + 16},
	Q8_0:     {"Q8_0", 32, 2 + 32},
	Q2_K:     {"Q2_K", 256, 16 + 64 + 2 + 2},
	Q3_K:     {"Q3_K", 256, 32 + 64 + 12 + 2},
	Q4_K:     {"Q4_K", 256, 2 + 2 + 12 + 128},
	Q5_K:     {"Q5_K", 256, 2 + 2 + 12 + 32 + 128},
	Q6_K:     {"Q6_K", 256, 128 + 64 + 16 + 2},
	IQ4_NL:   {"IQ4_NL", 32, 2 + 16},
	IQ4_XS:   {"IQ4_XS", 256, 2 + 2 + 4 + 128},
	TQ1_0:    {"TQ1_0", 256, 48 + 4 + 2},
	TQ2_0:    {"TQ2_0", 256, 64 + 2},
	MXFP4:    {"MXFP4", 32, 1 + 16},
}

// String returns the dtype's name as safetensors/GGUF spell it.
func (d DType) String() string {
	if d < dtypeCount {
		return dtypeTable[d].name
	}
	return fmt.Sprintf("DType(%d)", int(d))
}

// Valid reports whether d is one of the listed dtypes.
func (d DType) Valid() bool { return d < dtypeCount }

// IsFloat reports whether d is a plain (per-element) floating-point type.
func (d DType) IsFloat() bool { return d <= F8E5M2 }

// IsQuantized reports whether d is a GGUF block type.
func (d DType) IsQuantized() bool { return d > F8E5M2 && d < dtypeCount }

// BlockSize is the number of elements in one storage block (1 for plain floats).
func (d DType) BlockSize() int {
	if d < dtypeCount {
		return dtypeTable[d].block
	}
	return 0
}

// BlockBytes is the byte size of one storage block.
func (d DType) BlockBytes() int {
	if d < dtypeCount {
		return dtypeTable[d].blockBytes
	}
	return 0
}

// StorageBytes returns the bytes n elements of d occupy, or an error when n is not a
// whole number of blocks.
func (d DType) StorageBytes(n int) (int, error) {
	if !d.Valid() {
		return 0, fmt.Errorf("gpu: unknown dtype %d", int(d))
	}
	if n < 0 {
		return 0, fmt.Errorf("gpu: negative element count %d", n)
	}
	bs := d.BlockSize()
	if n%bs != 0 {
		return 0, fmt.Errorf("gpu: %d elements of %s are not a whole number of %d-element blocks", n, d, bs)
	}
	return n / bs * d.BlockBytes(), nil
}

package gguf

import (
	"fmt"

	"github.com/forgeflow/forgeflow/internal/dtype"

	"github.com/forgeflow/forgeflow/weights"
)

// Type is a ggml tensor type (enum ggml_type in ggml/include/ggml.h). The values are
// stored in files and never change; removed types keep their numbers unused.
type Type uint32

const (
	TypeF32     Type = 0
	TypeF16     Type = 1
	TypeQ4_0    Type = 2
	TypeQ4_1    Type = 3
	TypeQ5_0    Type = 6
	TypeQ5_1    Type = 7
	TypeQ8_0    Type = 8
	TypeQ8_1    Type = 9
	TypeQ2_K    Type = 10
	TypeQ3_K    Type = 11
	TypeQ4_K    Type = 12
	TypeQ5_K    Type = 13
	TypeQ6_K    Type = 14
	TypeQ8_K    Type = 15
	TypeIQ2_XXS Type = 16
	TypeIQ2_XS  Type = 17
	TypeIQ3_XXS Type = 18
	TypeIQ1_S   Type = 19
	TypeIQ4_NL  Type = 20
	TypeIQ3_S   Type = 21
	TypeIQ2_S   Type = 22
	TypeIQ4_XS  Type = 23
	TypeI8      Type = 24
	TypeI16     Type = 25
	TypeI32     Type = 26
	TypeI64     Type = 27
	TypeF64     Type = 28
	TypeIQ1_M   Type = 29
	TypeBF16    Type = 30
	TypeTQ1_0   Type = 34
	TypeTQ2_0   Type = 35
	TypeMXFP4   Type = 39
)

// QK_K is the super-block size of the k-quants and IQ4_XS.
const QK_K = dtype.QKK

type typeTraits struct {
	name       string
	blockSize  int // elements per block
	typeSize   int // bytes per block
	dequantize func(dst []float32, src []byte)
}

// traits is the read-only table of every type ggml defines (ggml.c, type_traits), with the
// dequantizer where this package implements one.
var traits = map[Type]typeTraits{
	TypeF32:     {"F32", 1, 4, dtype.DecodeF32},
	TypeF16:     {"F16", 1, 2, dtype.DecodeF16},
	TypeQ4_0:    {"Q4_0", 32, 18, dtype.DecodeQ4_0},
	TypeQ4_1:    {"Q4_1", 32, 20, dtype.DecodeQ4_1},
	TypeQ5_0:    {"Q5_0", 32, 22, dtype.DecodeQ5_0},
	TypeQ5_1:    {"Q5_1", 32, 24, dtype.DecodeQ5_1},
	TypeQ8_0:    {"Q8_0", 32, 34, dtype.DecodeQ8_0},
	TypeQ8_1:    {"Q8_1", 32, 36, nil},
	TypeQ2_K:    {"Q2_K", QK_K, 84, dtype.DecodeQ2_K},
	TypeQ3_K:    {"Q3_K", QK_K, 110, dtype.DecodeQ3_K},
	TypeQ4_K:    {"Q4_K", QK_K, 144, dtype.DecodeQ4_K},
	TypeQ5_K:    {"Q5_K", QK_K, 176, dtype.DecodeQ5_K},
	TypeQ6_K:    {"Q6_K", QK_K, 210, dtype.DecodeQ6_K},
	TypeQ8_K:    {"Q8_K", QK_K, 292, nil},
	TypeIQ2_XXS: {"IQ2_XXS", QK_K, 66, nil},
	TypeIQ2_XS:  {"IQ2_XS", QK_K, 74, nil},
	TypeIQ3_XXS: {"IQ3_XXS", QK_K, 98, nil},
	TypeIQ1_S:   {"IQ1_S", QK_K, 50, nil},
	TypeIQ4_NL:  {"IQ4_NL", 32, 18, dtype.DecodeIQ4_NL},
	TypeIQ3_S:   {"IQ3_S", QK_K, 110, nil},
	TypeIQ2_S:   {"IQ2_S", QK_K, 82, nil},
	TypeIQ4_XS:  {"IQ4_XS", QK_K, 136, dtype.DecodeIQ4_XS},
	TypeI8:      {"I8", 1, 1, dequantI8},
	TypeI16:     {"I16", 1, 2, dequantI16},
	TypeI32:     {"I32", 1, 4, dequantI32},
	TypeI64:     {"I64", 1, 8, dequantI64},
	TypeF64:     {"F64", 1, 8, dtype.DecodeF64},
	TypeIQ1_M:   {"IQ1_M", QK_K, 56, nil},
	TypeBF16:    {"BF16", 1, 2, dtype.DecodeBF16},
	TypeTQ1_0:   {"TQ1_0", QK_K, 54, dtype.DecodeTQ1_0},
	TypeTQ2_0:   {"TQ2_0", QK_K, 66, dtype.DecodeTQ2_0},
	TypeMXFP4:   {"MXFP4", 32, 17, dtype.DecodeMXFP4},
}

// Known reports whether t is a type ggml defines (whether or not it dequantizes here).
func (t Type) Known() bool { _, ok := traits[t]; return ok }

// String returns ggml's name for the type ("Q4_K"), or "type(N)" for an unknown one.
func (t Type) String() string {
	if tr, ok := traits[t]; ok {
		return tr.name
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// DType returns the type as a weights.DType, spelled as ggml spells it.
func (t Type) DType() weights.DType { return weights.DType(t.String()) }

// BlockSize returns the number of elements in one block (1 for plain types), or 0 for an
// unknown type.
func (t Type) BlockSize() int { return traits[t].blockSize }

// TypeSize returns the number of bytes of one block, or 0 for an unknown type.
func (t Type) TypeSize() int { return traits[t].typeSize }

// CanDequantize reports whether Dequantize implements t.
func (t Type) CanDequantize() bool { return traits[t].dequantize != nil }

// RowSize returns the bytes of n elements of type t; n must be a multiple of the block size.
func (t Type) RowSize(n int64) (int64, error) {
	tr, ok := traits[t]
	if !ok {
		return 0, fmt.Errorf("gguf: unknown type %d", uint32(t))
	}
	if n < 0 || n%int64(tr.blockSize) != 0 {
		return 0, fmt.Errorf("gguf: %d elements of %s are not whole blocks of %d", n, tr.name, tr.blockSize)
	}
	return n / int64(tr.blockSize) * int64(tr.typeSize), nil
}

// TypeByName returns the type ggml names name ("Q4_0"), for tools and tests.
func TypeByName(name string) (Type, bool) {
	for t, tr := range traits {
		if tr.name == name {
			return t, true
		}
	}
	return 0, false
}

// Dequantize converts whole blocks of type t in src to float32 in dst: len(src) must be a
// multiple of TypeSize and len(dst) the matching number of elements. The arithmetic is
// ggml's reference float32 math (dequantize_row_* in ggml-quants.c).
func Dequantize(dst []float32, t Type, src []byte) error {
	tr, ok := traits[t]
	if !ok {
		return &weights.UnsupportedError{Format: "gguf", Offset: -1, Msg: fmt.Sprintf("unknown tensor type %d", uint32(t))}
	}
	if tr.dequantize == nil {
		return &weights.UnsupportedError{Format: "gguf", Offset: -1, Msg: "dequantization of " + tr.name}
	}
	if len(src)%tr.typeSize != 0 {
		return fmt.Errorf("gguf: dequantize %s: %d bytes are not whole %d-byte blocks", tr.name, len(src), tr.typeSize)
	}
	if want := len(src) / tr.typeSize * tr.blockSize; len(dst) != want {
		return fmt.Errorf("gguf: dequantize %s: %d bytes make %d values, dst holds %d", tr.name, len(src), want, len(dst))
	}
	tr.dequantize(dst, src)
	return nil
}

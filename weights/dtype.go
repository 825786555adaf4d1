package weights

import "fmt"

// DType is a tensor element type, spelled as the file formats spell it: safetensors'
// dtype strings ("F32", "BF16", "F8_E4M3", ...) and ggml's type names for the quantized
// block types ("Q4_0", "Q6_K", ...). It is deliberately a string, independent of gpu/'s
// own dtype enum; the loader maps one to the other.
type DType string

// Element types stored one value per element. The sizes are in ElemSize.
const (
	F64     DType = "F64"
	F32     DType = "F32"
	F16     DType = "F16"
	BF16    DType = "BF16"
	F8_E4M3 DType = "F8_E4M3" // e4m3fn: bias 7, no infinities, S.1111.111 is NaN
	F8_E5M2 DType = "F8_E5M2" // IEEE-style: bias 15, infinities and NaNs
	I64     DType = "I64"
	I32     DType = "I32"
	I16     DType = "I16"
	I8      DType = "I8"
	U64     DType = "U64"
	U32     DType = "U32"
	U16     DType = "U16"
	U8      DType = "U8"
	BOOL    DType = "BOOL"
)

// ElemSize returns the size in bytes of one element of d, or 0 when d is not a
// one-value-per-element type (a quantized block type, or unknown).
func (d DType) ElemSize() int {
	switch d {
	case F64, I64, U64:
		return 8
	case F32, I32, U32:
		return 4
	case F16, BF16, I16, U16:
		return 2
	case F8_E4M3, F8_E5M2, I8, U8, BOOL:
		return 1
	}
	return 0
}

// IsFloat reports whether d is a floating-point element type that ToFloat32 converts.
func (d DType) IsFloat() bool {
	switch d {
	case F64, F32, F16, BF16, F8_E4M3, F8_E5M2:
		return true
	}
	return false
}

// TensorInfo describes one tensor of a file without reading its data.
//
// Shape is in PyTorch order (outermost dimension first) for every format; GGUF's ne[]
// order is reversed into it. Offset is the absolute byte offset of the data in the file
// and Size its length in bytes.
type TensorInfo struct {
	Name   string
	DType  DType
	Shape  []int64
	Offset int64
	Size   int64
}

// NumElements returns the product of the shape (1 for a scalar).
func (t TensorInfo) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

func (t TensorInfo) String() string {
	return fmt.Sprintf("%s %s%v", t.Name, t.DType, t.Shape)
}

// ShapeElements multiplies dims, reporting false when a dimension is negative or the
// product overflows max. A zero dimension gives 0 elements.
func ShapeElements(dims []int64, max int64) (int64, bool) {
	n := int64(1)
	for _, d := range dims {
		if d < 0 {
			return 0, false
		}
		if d == 0 {
			n = 0
			continue
		}
		if n != 0 && n > max/d {
			return 0, false
		}
		n *= d
	}
	return n, true
}

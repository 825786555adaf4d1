package gemm

import "fmt"

// DecodeRow converts the row src of a weight stored as d to len(dst) float32 values
// with the portable decoders the products use. An embedding lookup reads single rows of
// a table kept in its stored dtype (a GGUF text encoder's quantized token embedding),
// where a product would read them all.
func DecodeRow(d DType, dst []float32, src []byte) error {
	need, err := d.RowBytes(len(dst))
	if err != nil {
		return err
	}
	if len(src) < need {
		return fmt.Errorf("gemm: decode %s row of %d elements: %d bytes, need %d", d, len(dst), len(src), need)
	}
	kr := genericKernel()
	kr.decodeRow(d, dst, src[:need], 0)
	return nil
}

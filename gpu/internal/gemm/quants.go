package gemm

import "github.com/forgeflow/forgeflow/internal/dtype"

// The GGUF block types below have no vector decoder and are converted by
// internal/dtype (ggml's layouts and float32 arithmetic) on every path; the
// golden gguf family checks them bit for bit.

// decodeOther converts len(dst) elements (whole blocks) of d from src.
func decodeOther(d DType, dst []float32, src []byte) {
	switch d {
	case Q4_1:
		dtype.DecodeQ4_1(dst, src)
	case Q5_0:
		dtype.DecodeQ5_0(dst, src)
	case Q5_1:
		dtype.DecodeQ5_1(dst, src)
	case Q2_K:
		dtype.DecodeQ2_K(dst, src)
	case Q3_K:
		dtype.DecodeQ3_K(dst, src)
	case Q5_K:
		dtype.DecodeQ5_K(dst, src)
	case Q6_K:
		dtype.DecodeQ6_K(dst, src)
	default:
		// The IQ4, ternary and MXFP4 blocks and the rounded decodings (quants_more.go).
		decodeMore(d, dst, src)
	}
}

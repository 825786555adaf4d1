// Package dtype converts tensor element storage to float32 and back: the narrow floats
// (IEEE binary16, bfloat16, float8 e4m3fn and e5m2) and the GGUF/ggml quantized blocks
// (Q4_0 … Q6_K, IQ4_NL, IQ4_XS, TQ1_0, TQ2_0, MXFP4). It is the one copy of this
// arithmetic: gpu/ (kernels, casts), gpu/internal/gemm (its portable decoders) and
// weights/ (file readers, GGUF dequantization) all call it.
//
// It is a leaf: it imports only the standard library, and it knows no dtype enum —
// each caller maps its own (gpu.DType, gguf.Type, weights.DType) onto these functions.
//
// Bulk functions read and write little-endian bytes, as every supported file format
// stores them. They take whole values (or whole blocks) and panic on a source that is
// too short: callers check sizes against their own shape first.
//
// Upstream, re-derived (never copied): PyTorch's c10/util/Half.h, BFloat16.h,
// Float8_e4m3fn.h and Float8_e5m2.h for the rounding rules; ggml's ggml-common.h
// (block layouts) and ggml-quants.c (dequantize_row_*) for the blocks.
package dtype

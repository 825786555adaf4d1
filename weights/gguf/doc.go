// Package gguf reads and writes GGUF files (versions 2 and 3) and dequantizes ggml's block
// types: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL,
// IQ4_XS, TQ1_0, TQ2_0 and MXFP4.
//
// A file is a little-endian header (magic "GGUF", version, tensor count, key/value count),
// typed metadata key/value pairs (arrays, nested arrays included), tensor infos (name,
// dims in ggml's ne order, type, offset) and the tensor data, aligned to general.alignment
// (32 by default). Open memory-maps the file and validates every count, length, type and
// offset against the mapping; Tensor returns the stored bytes without a copy. The block
// layouts (Type.BlockSize, Type.TypeSize, Tensor.Row) are public so that gpu/ kernels can
// multiply with quantized weights block by block without dequantizing whole tensors.
//
// Dequantization follows ggml's reference C (ggml/src/ggml-quants.c, dequantize_row_*) in
// float32 arithmetic, which equals gguf-py's numpy port (gguf-py/gguf/quants.py) and
// ComfyUI-GGUF with dequant_dtype=float32; ComfyUI-GGUF's default float16 block math is
// not reproduced. Quantize encodes F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 byte
// for byte as gguf-py's reference quantizers do, for tools that write GGUF files.
// Format: ggml docs/gguf.md. It imports weights and weights/internal/mmap.
package gguf

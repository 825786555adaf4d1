// Package weights holds what the model file formats share: the tensor element types as the
// files spell them (F32, BF16, F8_E4M3, Q4_K, ...), tensor descriptions, ToFloat32 and the
// FormatError/UnsupportedError pair. It imports nothing heavy and never gpu/; the float
// and block arithmetic is internal/dtype's, which gpu/ shares.
//
// The readers live in sub-packages, one per container: weights/safetensors (mmapped
// .safetensors), weights/gguf (GGUF v2/v3 and its quantized block types) and weights/torch
// (legacy PyTorch .ckpt/.pt zip archives read with a restricted unpickler). Each offers the
// same few verbs: Open, ReadHeader (cheap, header only), Tensors (list) and Tensor (one by
// name). Memory mapping stays behind those verbs. Loaders open files through
// weights/tensorfile, which tells the format from the first bytes and returns one view
// for all three.
//
// Errors follow image/png: a *FormatError is a bad or hostile file, a *UnsupportedError a
// valid file using a feature that is not implemented. Both name the file, the tensor (when
// one is involved) and the byte offset where the problem was found.
package weights

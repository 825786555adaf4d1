// Package safetensors reads and writes .safetensors files: an 8-byte little-endian header
// length N, N bytes of JSON describing every tensor (dtype, shape, data_offsets relative to
// the data area) plus an optional "__metadata__" string map, then the tensor bytes.
//
// Open memory-maps the file (a plain read where mapping is unavailable) and validates the
// whole header the way the reference Rust implementation does (huggingface/safetensors,
// safetensors/src/tensor.rs, Metadata::validate): header length bound, JSON shape, known
// dtypes, size = product(shape) × dtype size, offsets that tile the data area exactly with
// no gap or overlap, and no duplicate keys. Tensor returns the bytes in place, without a
// copy; ReadHeader reads only the header. Write streams tensors to any io.Writer.
//
// Format: https://github.com/huggingface/safetensors (README "Format"). It imports weights
// and weights/internal/mmap only.
package safetensors

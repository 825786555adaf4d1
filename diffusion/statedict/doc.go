// Package statedict fills model structs from checkpoint tensors by key: a struct field
// carries its state-dict key in an `sd` tag, nested structs and slices of layers add
// their key as a prefix, so a network's Go type mirrors its checkpoint (STYLE.md §6).
//
// FileSource is the one Source of tensors: any file weights/tensorfile opens
// (safetensors, GGUF, torch), with aliases for keys a model asks for under other names
// or computes from stored tensors. Production loaders and the golden tests both bind
// through it.
//
// Matrices stay in their stored dtype (F16, BF16, F8, GGUF blocks), memory-mapped where
// the file allows; one-dimensional tensors (biases, norm scales) are converted to F32 at
// bind time because the kernels take them in F32 and they are small.
package statedict

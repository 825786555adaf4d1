// Package tensorfile opens a model file of any supported container — safetensors, GGUF
// or a PyTorch checkpoint (zip or legacy pickle) — as one view: its tensor list in
// PyTorch shape order, each tensor's stored bytes (memory-mapped where the format
// allows) and a float32 conversion. The format is told by the file's first bytes, here
// and nowhere else; loaders (diffusion/sd, detection, the GGUF and LoRA loaders) open
// files only through Open.
//
// It adds no validation of its own: errors are the readers' *weights.FormatError and
// *weights.UnsupportedError, which name the file, the tensor and the byte offset.
package tensorfile

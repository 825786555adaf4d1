// Package gpu is forgeflow's eager tensor runtime: tensors (shape, dtype, storage, free
// views), a closed list of ops (Op … OpCount) run as plain functions such as
// gpu.MatMul(rt, a, b), a small Backend interface, and the cpu backend (in this package)
// that every other backend is tested against.
//
// It imports nothing above itself (no diffusion, weights or nodes) and reads no
// environment: Options carries every setting (BF16 off/on/auto, the GEMM path). The
// narrow-float and GGUF block arithmetic is the leaf internal/dtype. Weights stay in their
// stored dtype (F16, BF16, F8, GGUF blocks) and are converted inside kernels; activations
// are F32. The matrix kernels live in gpu/internal/gemm; ComfyUI's resizing in gpu/resample.
// See codex/gpu.md for the design, the op list and measured figures.
package gpu

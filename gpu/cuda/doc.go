// Package cuda is forgeflow's CUDA backend: a gpu.Backend on an NVIDIA device, found at
// run time. The driver API (libcuda.so.1) and NVRTC are loaded with purego, so the
// package builds without cgo or CUDA headers and a machine without a GPU runs on the CPU
// as before (Open returns an error that says what was missing and where it looked).
//
// Kernels are CUDA C source embedded in the binary (kernels/*.cu), compiled by NVRTC for
// the device found and cached on disk by (source hash, compute capability, NVRTC
// version). Ops without a kernel for the operands' dtypes are declined through Supports
// and run on the CPU by the gpu.Runtime. It imports gpu and nothing above it.
// See codex/gpu.md, section CUDA.
package cuda

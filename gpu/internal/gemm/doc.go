// Package gemm implements the single-precision matrix multiplications that
// the CPU backend of gpu/ is built on: C (+)= A·B for float32 matrices, a
// batched form, and Linear (y = x·Wᵀ) with the weight W kept in its stored
// dtype (F32, F16, BF16, F8, GGUF Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/Q2_K…Q6_K) and converted to float32
// only while it is packed into cache-sized panels.
//
// It imports nothing from forgeflow but internal/dtype (the float and GGUF
// block conversions it shares with weights/) and gpu/internal/par (the worker
// pool it shares with the cpu backend): it sits at the bottom of gpu/.
//
// The structure is the classic Goto/BLIS one: the operands are copied
// ("packed") into contiguous panels sized for the caches, and a small
// register-blocked micro-kernel (Go assembly for AVX-512 and AVX2+FMA on
// amd64, plain Go elsewhere) computes MR×NR tiles of C. The path is chosen
// at run time with golang.org/x/sys/cpu and can be forced with
// Options.Path (generic, avx2, avx512) so that every path can be tested on
// one machine; cmd/forgeflow sets it from --gemm / FORGEFLOW_GEMM. See codex/gemm.md for the design and
// the measured figures.
package gemm

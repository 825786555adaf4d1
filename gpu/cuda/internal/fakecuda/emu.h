// CPU emulation of the CUDA C that kernels/*.cu use, for the fake driver (driver.cc):
// each kernel is compiled by the host C++ compiler, and a launch runs the grid's blocks
// one after another, each block's threads as coroutines that switch at __syncthreads
// and at warp shuffles. Shared memory is a function-static array (one block runs at a
// time). Only what the kernels use is here.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <algorithm>

struct emu_dim3 { unsigned x, y, z; };
extern thread_local emu_dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__ inline
#define __forceinline__
#define __shared__ static
#define __launch_bounds__(n)

// barrier: every thread of the block reaches it before any goes on
void emu_barrier();
// per-thread slots for shuffles
extern thread_local double* emu_slots;

inline void __syncthreads() { emu_barrier(); }

template <class T>
inline T __shfl_xor_sync(unsigned, T v, int laneMask) {
	unsigned tid = threadIdx.x;
	emu_barrier();
	emu_slots[tid] = (double)v;
	emu_barrier();
	unsigned partner = (tid & ~31u) | ((tid & 31u) ^ (unsigned)laneMask);
	T r = (T)emu_slots[partner];
	emu_barrier();
	return r;
}

inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned i; memcpy(&i, &f, 4); return i; }
inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }

using std::max;
using std::min;
using std::isinf;

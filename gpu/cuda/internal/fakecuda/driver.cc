// A fake libcuda.so.1 for tests on machines without a GPU: the driver API calls the
// backend makes, over host memory, with kernels/*.cu compiled for the CPU (emu.h).
// "Device" pointers are host pointers; copies are memcpy; a launch runs the kernel's
// blocks in order, each block's threads as coroutines (ucontext stacks, setjmp switches).
#include <setjmp.h>
#include <ucontext.h>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>
#include <type_traits>

#include "emu.h"

thread_local emu_dim3 threadIdx, blockIdx, blockDim, gridDim;
thread_local double* emu_slots;

namespace {

// A coroutine per thread of a block. Switches are _setjmp/_longjmp (no signal-mask
// system call, unlike swapcontext); each coroutine's stack is made once with makecontext
// and entered once with setcontext, and its body loops: run the kernel for this block,
// park, run it again for the next block.
struct Thread {
	ucontext_t ctx;
	jmp_buf jb;
	std::vector<char> stack;
	bool started, done;
	emu_dim3 idx;
};

jmp_buf sched_jb;
std::vector<Thread> threads;
int current = -1;
std::vector<double> slots;
void (*body)(void**);
void** body_params;

void trampoline() {
	for (;;) {
		body(body_params);
		threads[current].done = true;
		if (!_setjmp(threads[current].jb)) _longjmp(sched_jb, 1);
	}
}

} // namespace

void emu_barrier() {
	if (!_setjmp(threads[current].jb)) _longjmp(sched_jb, 1);
}

// run_block runs every thread of the current block to completion, round-robin from
// barrier to barrier.
static void run_block(unsigned nthreads) {
	if (threads.size() < nthreads) {
		size_t old = threads.size();
		threads.resize(nthreads);
		for (size_t t = old; t < nthreads; ++t) {
			Thread& th = threads[t];
			th.stack.resize(256 << 10);
			th.started = false;
			getcontext(&th.ctx);
			th.ctx.uc_stack.ss_sp = th.stack.data();
			th.ctx.uc_stack.ss_size = th.stack.size();
			th.ctx.uc_link = nullptr;
			makecontext(&th.ctx, trampoline, 0);
		}
	}
	slots.assign(nthreads, 0);
	emu_slots = slots.data();
	for (unsigned t = 0; t < nthreads; ++t) {
		threads[t].done = false;
		threads[t].idx = {t, 0, 0};
	}
	for (;;) {
		bool live = false;
		for (unsigned t = 0; t < nthreads; ++t) {
			Thread& th = threads[t];
			if (th.done) continue;
			current = (int)t;
			threadIdx = th.idx;
			if (!_setjmp(sched_jb)) {
				if (!th.started) {
					th.started = true;
					setcontext(&th.ctx);
				}
				_longjmp(th.jb, 1);
			}
			live = live || !th.done;
		}
		if (!live) break;
	}
}

// Kernel adapters: unpack cuLaunchKernel's parameter array into the kernel's arguments.
template <class... A, std::size_t... I>
static void call_with(void (*f)(A...), void** p, std::index_sequence<I...>) {
	f(*static_cast<typename std::remove_cv<typename std::remove_reference<A>::type>::type*>(p[I])...);
}

struct Kernel {
	void (*invoke)(void* fn, void** params);
	void* fn;
};

template <class... A>
static Kernel adapt(void (*f)(A...)) {
	return Kernel{[](void* fn, void** p) { call_with(reinterpret_cast<void (*)(A...)>(fn), p, std::index_sequence_for<A...>{}); },
	              reinterpret_cast<void*>(f)};
}

#include "kernels.inc" // generated: common.cuh, kernels/*.cu and kernel_table() (fakecuda_test.go)

static Kernel* current_kernel;
static void run_current(void** p) { current_kernel->invoke(current_kernel->fn, p); }

typedef int CUresult;
static size_t used_bytes;
static std::map<void*, size_t> live;
static const size_t total_bytes = size_t(8) << 30;

extern "C" {
CUresult cuInit(unsigned) { return 0; }
CUresult cuDriverGetVersion(int* v) { *v = 12040; return 0; }
CUresult cuDeviceGetCount(int* n) { *n = 1; return 0; }
CUresult cuDeviceGet(int* d, int ordinal) { if (ordinal != 0) return 101; *d = 0; return 0; }
CUresult cuDeviceGetName(char* name, int len, int) { snprintf(name, len, "forgeflow fake CUDA device (CPU emulation)"); return 0; }
CUresult cuDeviceTotalMem_v2(size_t* b, int) { *b = total_bytes; return 0; }
CUresult cuDeviceGetAttribute(int* v, int attr, int) {
	switch (attr) {
	case 75: *v = 8; break;  // compute capability major
	case 76: *v = 0; break;  // minor
	case 16: *v = 2; break;  // multiprocessors
	default: *v = 0;
	}
	return 0;
}
CUresult cuDevicePrimaryCtxRetain(void** c, int) { *c = (void*)0x1; return 0; }
CUresult cuDevicePrimaryCtxRelease_v2(int) { return 0; }
CUresult cuCtxSetCurrent(void*) { return 0; }
CUresult cuMemGetInfo_v2(size_t* free, size_t* total) { *free = total_bytes - used_bytes; *total = total_bytes; return 0; }
CUresult cuMemAlloc_v2(unsigned long long* p, size_t n) {
	if (used_bytes + n > total_bytes) return 2;
	void* m = malloc(n ? n : 1);
	// poison fresh memory with NaN bytes, as a real device leaves garbage
	memset(m, 0xff, n);
	live[m] = n;
	used_bytes += n;
	*p = (unsigned long long)m;
	return 0;
}
CUresult cuMemFree_v2(unsigned long long p) {
	auto it = live.find((void*)p);
	if (it == live.end()) return 1;
	used_bytes -= it->second;
	live.erase(it);
	free((void*)p);
	return 0;
}
CUresult cuMemHostAlloc(void** p, size_t n, unsigned) { *p = malloc(n); return *p ? 0 : 2; }
CUresult cuMemFreeHost(void* p) { free(p); return 0; }
CUresult cuMemcpyHtoDAsync_v2(unsigned long long d, const void* s, size_t n, void*) { memcpy((void*)d, s, n); return 0; }
CUresult cuMemcpyDtoHAsync_v2(void* d, unsigned long long s, size_t n, void*) { memcpy(d, (void*)s, n); return 0; }
CUresult cuMemcpyDtoDAsync_v2(unsigned long long d, unsigned long long s, size_t n, void*) { memmove((void*)d, (void*)s, n); return 0; }
CUresult cuMemsetD8Async(unsigned long long d, unsigned char v, size_t n, void*) { memset((void*)d, v, n); return 0; }
CUresult cuStreamCreate(void** s, unsigned) { *s = (void*)0x2; return 0; }
CUresult cuStreamSynchronize(void*) { return 0; }
CUresult cuEventCreate(void** e, unsigned) { *e = (void*)0x3; return 0; }
CUresult cuEventRecord(void*, void*) { return 0; }
CUresult cuEventSynchronize(void*) { return 0; }
CUresult cuEventElapsedTime(float* ms, void*, void*) { *ms = 0; return 0; }
CUresult cuModuleLoadData(void** m, const void*) { *m = (void*)0x4; return 0; }
CUresult cuModuleGetFunction(void** f, void*, const char* name) {
	auto& t = kernel_table();
	auto it = t.find(name);
	if (it == t.end()) return 500; // CUDA_ERROR_NOT_FOUND
	*f = &it->second;
	return 0;
}
CUresult cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned, void*, void** params, void**) {
	if (by != 1 || bz != 1) return 1;
	current_kernel = static_cast<Kernel*>(f);
	body = run_current;
	body_params = params;
	gridDim = {gx, gy, gz};
	blockDim = {bx, by, bz};
	for (unsigned z = 0; z < gz; ++z)
		for (unsigned y = 0; y < gy; ++y)
			for (unsigned x = 0; x < gx; ++x) {
				blockIdx = {x, y, z};
				run_block(bx);
			}
	return 0;
}
CUresult cuGetErrorName(CUresult, const char** s) { *s = "CUDA_ERROR_FAKE"; return 0; }
}

#!/usr/bin/env bash
# make test-cuda-emu: the CUDA backend's op table and GPU-vs-CPU image check on a machine
# without a GPU, against a fake libcuda.so.1 that runs the kernels on the CPU
# (gpu/cuda/internal/fakecuda; needs g++). It checks the bindings, the argument passing,
# the dispatch and the kernels' logic; not NVRTC's code generation, timing or memory
# limits, which only `make test-cuda` on a device checks. Takes ~5-15 minutes on 2 cores.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
lib=${FORGEFLOW_FAKECUDA_DIR:-$root/bin/fakecuda}
mkdir -p "$lib"
go test ./gpu/cuda -run TestFakeDriver -fakecuda "$lib" -count=1
export LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} FORGEFLOW_REQUIRE_CUDA=1
go test ./gpu -run 'TestCUDADevice|TestOps$|TestGoldenGGUFLinear' -count=1 -v | grep -E '^(--- |ok|FAIL|PASS)|cuda device|falls back|--- FAIL'
go test ./tools/cuda -run TestGPUMatchesCPU -count=1 -v | grep -E '^(--- |ok|FAIL|PASS)|PSNR|--- FAIL'

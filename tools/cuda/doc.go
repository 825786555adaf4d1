// Package cudacheck holds the end-to-end check of the CUDA backend: SD1.5 and SDXL
// images sampled and decoded on the GPU against the same on the CPU (same seed, same
// CPU noise), which must agree to ≥ 40 dB PSNR. It skips without a CUDA device; `make
// test-cuda` runs it (with FORGEFLOW_REQUIRE_CUDA=1, so an absent device fails) beside
// the cross-backend op table and the benchmarks. See codex/gpu.md, section CUDA.
package cudacheck

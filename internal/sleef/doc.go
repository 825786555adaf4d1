// Package sleef reproduces, bit for bit, the float32 elementary functions PyTorch's CPU
// kernels use on AVX2/AVX-512 machines: the SLEEF library's 1.0-ulp variants (torch
// evaluates torch.exp on float32 tensors with Sleef_expf16_u10, and so on). Correctly
// rounded results differ from them by an ulp now and then, and some of ComfyUI's
// computations amplify an ulp (a 1024-pixel size times a frequency in SDXL's size
// embedding, a time rounded to 6 decimals in the Brownian tree), so forgeflow uses these
// where it reproduces torch's float32 maths.
//
// The algorithms follow the SLEEF paper (Shibata & Petrogalli, "SLEEF: A Portable
// Vectorized Library of C Standard Mathematical Functions", 2020): Cody–Waite range
// reduction and a minimax polynomial evaluated with fused multiply-adds, as the AVX-512
// build compiles them. Bit-exactness needs SLEEF's published split and coefficient
// values (the library is under the Boost Software License); they are the only thing
// taken from it, and the tests pin results torch is known to produce.
package sleef

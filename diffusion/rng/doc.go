// Package rng reproduces PyTorch's CPU random number generator as ComfyUI uses it, so a
// seed gives the same noise here as in ComfyUI: mt19937 seeded with the low 32 bits of
// the seed, torch.rand's float32 uniforms and torch.randn's two normal paths.
//
// Upstream, re-derived from the algorithms (never copied): PyTorch
// aten/src/ATen/core/MT19937RNGEngine.h (the engine and its seeding),
// aten/src/ATen/core/TransformationHelper.h (uniform_real: masked mantissa bits),
// aten/src/ATen/core/DistributionsHelper.h (normal_distribution<double>: Box-Muller with a
// cached second value) and aten/src/ATen/native/cpu/DistributionTemplates.h (normal_fill:
// float32 Box-Muller over blocks of 16, the tail re-drawn), and ComfyUI
// comfy/sample.py prepare_noise.
package rng

// Package resample reproduces ComfyUI's comfy.utils.common_upscale on float32 NCHW data:
// PyTorch's interpolate modes (nearest, nearest-exact, bilinear, bicubic, area), ComfyUI's
// bislerp, PIL's LANCZOS (through 8-bit images, as ComfyUI does) and the "center" crop.
//
// It depends only on the standard library; nodes (ImageScale, LatentUpscale) call Upscale.
// Upstream references: ComfyUI comfy/utils.py (common_upscale, bislerp, lanczos), PyTorch
// aten/src/ATen/native/UpSample.h and cpu/UpSampleKernel.cpp (source-index rules),
// aten/src/ATen/native/AdaptiveAveragePooling.cpp (area), Pillow src/libImaging/Resample.c.
package resample

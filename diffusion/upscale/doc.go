// Package upscale runs single-image super-resolution models as ComfyUI's
// UpscaleModelLoader and ImageUpscaleWithModel do through spandrel: ESRGAN / Real-ESRGAN
// (RRDBNet: the original, BasicSR and BSRGAN key layouts, ESRGAN+, 1×–8×, pixel-unshuffle
// inputs), Real-ESRGAN Compact (SRVGGNetCompact) and SPAN, one file per network with
// names from the checkpoint keys.
//
// Load reads a .pth (through weights/tensorfile's restricted unpickler) or .safetensors
// file, finds the architecture from its keys as spandrel's detectors do, reads the
// hyper-parameters (scale, channels, block counts) from the tensor shapes, and keeps the
// weights in their stored dtype. A file of another architecture spandrel knows (DAT,
// HAT, SwinIR, …) is refused with an *UnsupportedError naming it. Model.Upscale is
// ImageUpscaleWithModel's tiled run (diffusion/tiling). See codex/upscale.md.
package upscale

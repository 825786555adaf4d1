// Package webpmux reads and writes WebP files above the codec: the RIFF container with
// its VP8X, ANIM and ANMF chunks (Google's "WebP Container Specification"), still and
// animated, with EXIF metadata. Frames are compressed by libwebp itself, run as
// WebAssembly under wazero by github.com/gen2brain/webp (no cgo; codex/decisions.md),
// and decompressed by golang.org/x/image/webp; animated files are composited frame by
// frame as libwebp's WebPAnimDecoder does (src/demux/anim_decode.c), which is what
// Pillow, and so ComfyUI, reads them with.
package webpmux

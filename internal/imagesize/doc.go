// Package imagesize refuses images whose declared size is over a pixel limit before
// they are decoded, as Pillow's decompression-bomb check does: a 700 KB PNG can declare
// 16000×16000 pixels and cost gigabytes once decoded. The header is read first
// (image.DecodeConfig), so a refused image costs nothing.
//
// It decodes with the formats the caller has registered with package image (import
// image/png, golang.org/x/image/webp, … for their side effects).
package imagesize

package webpmux

import (
	"image"
	"image/color"
)

// Lossy WebP's colour conversion as libwebp performs it when decoding to RGB(A), which
// is what Pillow (and so ComfyUI) gets: the 4:2:0 chroma planes are "fancy" upsampled
// (src/dsp/upsampling.c UPSAMPLE_FUNC, driven row pair by row pair as
// src/dec/io_dec.c EmitFancyRGB does) and each sample converted with the fixed-point
// BT.601 limited-range formulas of src/dsp/yuv.h (VP8YUVToR/G/B). x/image/webp decodes
// the planes exactly but leaves them to Go's JFIF (full-range) conversion, which is
// about ten levels off.

// ToNRGBA converts an image decoded by x/image/webp to 8-bit non-premultiplied RGBA as
// libwebp would output it; an *image.NRGBA (lossless) is returned as it is.
func ToNRGBA(img image.Image) *image.NRGBA {
	switch m := img.(type) {
	case *image.NRGBA:
		return m
	case *image.YCbCr:
		if m.SubsampleRatio == image.YCbCrSubsampleRatio420 {
			return fancy(m, nil, 0)
		}
	case *image.NYCbCrA:
		if m.SubsampleRatio == image.YCbCrSubsampleRatio420 {
			return fancy(&m.YCbCr, m.A, m.AStride)
		}
	}
	b := img.Bounds()
	out := image.NewNRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			out.SetNRGBA(x-b.Min.X, y-b.Min.Y, color.NRGBAModel.Convert(img.At(x, y)).(color.NRGBA))
		}
	}
	return out
}

// fancy converts a 4:2:0 image (with its alpha plane, if any).
func fancy(m *image.YCbCr, alpha []byte, aStride int) *image.NRGBA {
	b := m.Rect
	w, h := b.Dx(), b.Dy()
	out := image.NewNRGBA(image.Rect(0, 0, w, h))
	if w == 0 || h == 0 {
		return out // a frame with no pixels (a damaged file can declare one)
	}
	yRow := func(y int) []byte { return m.Y[y*m.YStride : y*m.YStride+w] }
	cw := (w + 1) / 2
	uRow := func(y int) []byte { return m.Cb[y*m.CStride : y*m.CStride+cw] }
	vRow := func(y int) []byte { return m.Cr[y*m.CStride : y*m.CStride+cw] }
	dst := func(y int) []byte { return out.Pix[y*out.Stride : y*out.Stride+4*w] }
	// The first row mirrors its chroma row; then each pair of rows (2k+1, 2k+2) lies
	// between chroma rows k and k+1; an even height ends on a row of the last chroma row.
	upsamplePair(yRow(0), nil, uRow(0), vRow(0), uRow(0), vRow(0), dst(0), nil, w)
	y := 0
	for ; y+2 < h; y += 2 {
		k := y / 2
		upsamplePair(yRow(y+1), yRow(y+2), uRow(k), vRow(k), uRow(k+1), vRow(k+1), dst(y+1), dst(y+2), w)
	}
	if h%2 == 0 {
		k := (h - 1) / 2
		upsamplePair(yRow(h-1), nil, uRow(k), vRow(k), uRow(k), vRow(k), dst(h-1), nil, w)
	}
	for y := 0; y < h; y++ {
		row := dst(y)
		for x := 0; x < w; x++ {
			a := byte(255)
			if alpha != nil {
				a = alpha[y*aStride+x]
			}
			row[4*x+3] = a
		}
	}
	return out
}

// upsamplePair is UPSAMPLE_FUNC: it converts the top row (and the bottom one, when
// given) of len pixels, whose chroma lies between the rows tu/tv (above) and cu/cv. It
// computes u and v apart, which gives the same values as libwebp's packed arithmetic
// (no carry crosses the 16-bit halves there).
func upsamplePair(topY, botY, tu, tv, cu, cv, topDst, botDst []byte, n int) {
	put := func(dst []byte, x int, y byte, u, v uint32) {
		yuvToRGB(int(y), int(u), int(v), dst[4*x:4*x+3])
	}
	last := (n - 1) >> 1
	tlU, tlV := uint32(tu[0]), uint32(tv[0])
	lU, lV := uint32(cu[0]), uint32(cv[0])
	put(topDst, 0, topY[0], (3*tlU+lU+2)>>2, (3*tlV+lV+2)>>2)
	if botY != nil {
		put(botDst, 0, botY[0], (3*lU+tlU+2)>>2, (3*lV+tlV+2)>>2)
	}
	for x := 1; x <= last; x++ {
		tU, tV := uint32(tu[x]), uint32(tv[x])
		U, V := uint32(cu[x]), uint32(cv[x])
		avgU, avgV := tlU+tU+lU+U+8, tlV+tV+lV+V+8
		d12U, d12V := (avgU+2*(tU+lU))>>3, (avgV+2*(tV+lV))>>3
		d03U, d03V := (avgU+2*(tlU+U))>>3, (avgV+2*(tlV+V))>>3
		put(topDst, 2*x-1, topY[2*x-1], (d12U+tlU)>>1, (d12V+tlV)>>1)
		put(topDst, 2*x, topY[2*x], (d03U+tU)>>1, (d03V+tV)>>1)
		if botY != nil {
			put(botDst, 2*x-1, botY[2*x-1], (d03U+lU)>>1, (d03V+lV)>>1)
			put(botDst, 2*x, botY[2*x], (d12U+U)>>1, (d12V+V)>>1)
		}
		tlU, tlV, lU, lV = tU, tV, U, V
	}
	if n%2 == 0 {
		put(topDst, n-1, topY[n-1], (3*tlU+lU+2)>>2, (3*tlV+lV+2)>>2)
		if botY != nil {
			put(botDst, n-1, botY[n-1], (3*lU+tlU+2)>>2, (3*lV+tlV+2)>>2)
		}
	}
}

// yuvToRGB is VP8YuvToRgb (src/dsp/yuv.h): 14-bit fixed point, 6 fractional bits.
func yuvToRGB(y, u, v int, rgb []byte) {
	mulHi := func(a, c int) int { return (a * c) >> 8 }
	clip := func(x int) byte {
		if x&^(256<<6-1) == 0 {
			return byte(x >> 6)
		}
		if x < 0 {
			return 0
		}
		return 255
	}
	rgb[0] = clip(mulHi(y, 19077) + mulHi(v, 26149) - 14234)
	rgb[1] = clip(mulHi(y, 19077) - mulHi(u, 6419) - mulHi(v, 13320) + 8708)
	rgb[2] = clip(mulHi(y, 19077) + mulHi(u, 33050) - 17685)
}

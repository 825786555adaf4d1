package builtin

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/gif"
	_ "image/jpeg" // registers JPEG with image.Decode
	_ "image/png"  // registers PNG with image.Decode

	_ "golang.org/x/image/bmp"  // registers BMP
	_ "golang.org/x/image/tiff" // registers TIFF
	_ "golang.org/x/image/webp" // registers WebP (DecodeConfig; frames come from webpmux)

	"github.com/forgeflow/forgeflow/internal/imagesize"
	"github.com/forgeflow/forgeflow/internal/webpmux"
)

// Decoding input images the way LoadImage sees them through PIL.
//
// ComfyUI opens a file with PIL, iterates its frames (ImageSequence), applies
// ImageOps.exif_transpose to each, converts it to 8-bit RGB and takes the mask from an
// alpha band ('A' in getbands(), or a palette image with a transparency entry). Go's
// decoders give the same 8-bit samples for PNG, GIF and BMP; for JPEG the inverse DCT
// and colour conversion may differ from libjpeg by one level in a few pixels. WebP goes
// through internal/webpmux, which gives libwebp's own pixels (animations composited,
// lossy colour upsampled and converted as libwebp does). Which images "have alpha" is
// read from the file itself (PNG colour type and tRNS, WebP feature flags, GIF
// transparency), because Go's decoders return NRGBA for some files PIL opens without an
// alpha band (RGB + tRNS).

// frame is one decoded picture: 8-bit RGB and alpha.
type frame struct {
	W, H int
	RGB  []uint8 // 3 bytes per pixel
	// Alpha is 1 byte per pixel, as PIL's convert("RGBA") gives it (255 for opaque
	// formats, the tRNS colour key applied).
	Alpha []uint8
	// Band reports whether PIL opens the frame with an alpha band (getbands() holds 'A'),
	// or as a palette image with transparency: LoadImage's test for a real mask.
	Band bool
}

// maxDecodePixels bounds the pixels of one decoded frame (the header is read first), so a
// small file declaring a huge canvas is refused before any allocation.
const maxDecodePixels = 1 << 28

// decodeImage decodes every frame of an image file, EXIF orientation applied. format is
// the registered format name ("png", "jpeg", "gif", "webp", "bmp", "tiff"). An image of
// more than maxPixels (imagesize.Limit) is refused from its header.
func decodeImage(data []byte, maxPixels int64) (frames []frame, format string, err error) {
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, "", fmt.Errorf("cannot identify image file: %w", err)
	}
	if err := imagesize.Check(cfg.Width, cfg.Height, maxPixels); err != nil {
		return nil, format, err
	}
	if format == "png" {
		if frames, err = decodeAPNG(data); err != nil {
			return nil, format, err
		}
	}
	switch {
	case format == "gif":
		frames, err = decodeGIF(data)
		if err != nil {
			return nil, format, err
		}
	case format == "webp":
		// Every frame of an animation, and libwebp's colour conversion (webpmux), as
		// PIL's WebPAnimDecoder gives them.
		imgs, _, err := webpmux.Decode(data, maxDecodePixels)
		if err != nil {
			return nil, format, fmt.Errorf("decode webp: %w", err)
		}
		band := webpHasAlpha(data)
		for _, img := range imgs {
			frames = append(frames, toFrame(img, band))
		}
	case frames == nil:
		img, _, err := image.Decode(bytes.NewReader(data))
		if err != nil {
			return nil, format, fmt.Errorf("decode %s: %w", format, err)
		}
		frames = []frame{toFrame(img, hasAlphaBand(data, format, img))}
	}
	if o := exifOrientation(data, format); o > 1 {
		for i := range frames {
			frames[i] = orient(frames[i], o)
		}
	}
	return frames, format, nil
}

// hasAlphaBand reports whether PIL would open the file with an alpha band (or as a palette
// image with transparency).
func hasAlphaBand(data []byte, format string, img image.Image) bool {
	switch format {
	case "jpeg":
		return false
	case "png":
		// IHDR colour type: 4 grey+alpha, 6 RGBA; 3 palette counts with a tRNS chunk.
		if len(data) < 26 {
			return false
		}
		switch data[25] {
		case 4, 6:
			return true
		case 3:
			return pngHasChunk(data, "tRNS")
		}
		return false
	case "webp":
		return webpHasAlpha(data)
	}
	// BMP, TIFF: the decoder's type tells, as long as some pixel is not opaque.
	if o, ok := img.(interface{ Opaque() bool }); ok {
		switch img.ColorModel() {
		case color.NRGBAModel, color.RGBAModel, color.NRGBA64Model, color.RGBA64Model:
			return !o.Opaque()
		}
	}
	return false
}

// pngHasChunk reports whether a chunk of type typ comes before the first IDAT.
func pngHasChunk(data []byte, typ string) bool {
	for p := 8; p+8 <= len(data); {
		n := int(binary.BigEndian.Uint32(data[p:]))
		t := string(data[p+4 : p+8])
		if t == typ {
			return true
		}
		if t == "IDAT" || n < 0 || p+12+n > len(data) {
			return false
		}
		p += 12 + n
	}
	return false
}

// webpHasAlpha reads WebP's feature flags as libwebp's WebPGetFeatures does: the VP8X
// alpha flag, or the alpha_is_used bit of a simple lossless (VP8L) header.
func webpHasAlpha(data []byte) bool {
	if len(data) < 30 || string(data[0:4]) != "RIFF" || string(data[8:12]) != "WEBP" {
		return false
	}
	switch string(data[12:16]) {
	case "VP8X":
		return data[20]&0x10 != 0
	case "VP8L":
		// 1-byte signature 0x2f, then 14+14 bits of size and the alpha bit (bit 28).
		if data[20] != 0x2f {
			return false
		}
		bits := binary.LittleEndian.Uint32(data[21:25])
		return bits>>28&1 != 0
	}
	return false
}

// toFrame converts a decoded image to 8-bit RGB (+ alpha). 16-bit samples keep their high
// byte, as PIL's ";16B" raw modes do; a 16-bit grey image follows ComfyUI's mode-"I" path
// (value / 255, clipped to 255).
func toFrame(img image.Image, band bool) frame {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	f := frame{W: w, H: h, RGB: make([]uint8, 3*w*h), Alpha: make([]uint8, w*h), Band: band}
	set := func(i int, r, g, bl, a uint8) {
		f.RGB[3*i], f.RGB[3*i+1], f.RGB[3*i+2] = r, g, bl
		f.Alpha[i] = a
	}
	switch m := img.(type) {
	case *image.NRGBA:
		for y := 0; y < h; y++ {
			row := m.Pix[y*m.Stride:]
			for x := 0; x < w; x++ {
				p := row[4*x : 4*x+4]
				set(y*w+x, p[0], p[1], p[2], p[3])
			}
		}
	case *image.Gray:
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				v := m.Pix[y*m.Stride+x]
				set(y*w+x, v, v, v, 255)
			}
		}
	case *image.Gray16:
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				v := m.Gray16At(b.Min.X+x, b.Min.Y+y).Y / 255
				g := uint8(min(v, 255))
				set(y*w+x, g, g, g, 255)
			}
		}
	case *image.Paletted:
		// PIL converts a palette image by looking each index up; keep the palette's own
		// (non-premultiplied) values rather than round-tripping them through RGBA().
		pal := make([]color.NRGBA, len(m.Palette))
		for i, c := range m.Palette {
			pal[i] = nrgba8(c)
		}
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				var c color.NRGBA
				if k := int(m.Pix[y*m.Stride+x]); k < len(pal) {
					c = pal[k]
				} else {
					c = color.NRGBA{A: 255} // out-of-range index: black, as PIL
				}
				set(y*w+x, c.R, c.G, c.B, c.A)
			}
		}
	case *image.YCbCr:
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				yi, ci := m.YOffset(b.Min.X+x, b.Min.Y+y), m.COffset(b.Min.X+x, b.Min.Y+y)
				r, g, bl := color.YCbCrToRGB(m.Y[yi], m.Cb[ci], m.Cr[ci])
				set(y*w+x, r, g, bl, 255)
			}
		}
	case *image.NYCbCrA:
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				yi, ci := m.YOffset(b.Min.X+x, b.Min.Y+y), m.COffset(b.Min.X+x, b.Min.Y+y)
				r, g, bl := color.YCbCrToRGB(m.Y[yi], m.Cb[ci], m.Cr[ci])
				set(y*w+x, r, g, bl, m.A[m.AOffset(b.Min.X+x, b.Min.Y+y)])
			}
		}
	default:
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				c := color.NRGBA64Model.Convert(img.At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA64)
				set(y*w+x, uint8(c.R>>8), uint8(c.G>>8), uint8(c.B>>8), uint8(c.A>>8))
			}
		}
	}
	return f
}

// decodeGIF decodes every frame of a GIF composited on the logical screen, as PIL's
// GifImagePlugin presents them: each frame drawn over the previous picture (transparent
// pixels let it show through) after the previous frame's disposal. The file has an alpha
// band when any frame declares a transparent index.
func decodeGIF(data []byte) ([]frame, error) {
	g, err := gif.DecodeAll(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("decode gif: %w", err)
	}
	if len(g.Image) == 0 {
		return nil, errors.New("decode gif: no frames")
	}
	alpha := false
	for _, p := range g.Image {
		for _, c := range p.Palette {
			if _, _, _, a := c.RGBA(); a == 0 {
				alpha = true
			}
		}
	}
	w, h := g.Config.Width, g.Config.Height
	if w <= 0 || h <= 0 {
		r := g.Image[0].Bounds()
		w, h = r.Max.X, r.Max.Y
	}
	if int64(len(g.Image))*int64(w)*int64(h) > MaxValues/3 {
		return nil, fmt.Errorf("decode gif: %d frames of %dx%d are too many pixels", len(g.Image), w, h)
	}
	screen := image.Rect(0, 0, w, h)
	canvas := image.NewNRGBA(screen)
	var bg color.Color = color.NRGBA{}
	if !alpha {
		if pal, ok := g.Config.ColorModel.(color.Palette); ok && int(g.BackgroundIndex) < len(pal) {
			bg = pal[g.BackgroundIndex]
		}
		draw.Draw(canvas, screen, image.NewUniform(bg), image.Point{}, draw.Src)
	}
	frames := make([]frame, 0, len(g.Image))
	for i, p := range g.Image {
		var saved *image.NRGBA
		disposal := byte(0)
		if i < len(g.Disposal) {
			disposal = g.Disposal[i]
		}
		if disposal == gif.DisposalPrevious {
			saved = image.NewNRGBA(screen)
			copy(saved.Pix, canvas.Pix)
		}
		draw.Draw(canvas, p.Bounds().Intersect(screen), p, p.Bounds().Min, draw.Over)
		frames = append(frames, toFrame(canvas, alpha))
		switch disposal {
		case gif.DisposalBackground:
			draw.Draw(canvas, p.Bounds().Intersect(screen), image.NewUniform(bg), image.Point{}, draw.Src)
		case gif.DisposalPrevious:
			copy(canvas.Pix, saved.Pix)
		}
	}
	return frames, nil
}

// exifOrientation returns the EXIF Orientation tag (1..8), or 0 when absent. It reads the
// EXIF block of JPEG (APP1 "Exif"), PNG (eXIf) and WebP (EXIF chunk) files.
func exifOrientation(data []byte, format string) int {
	var tiff []byte
	switch format {
	case "jpeg":
		tiff = jpegExif(data)
	case "png":
		tiff = pngChunk(data, "eXIf")
	case "webp":
		tiff = riffChunk(data, "EXIF")
		tiff = bytes.TrimPrefix(tiff, []byte("Exif\x00\x00"))
	}
	return tiffOrientation(tiff)
}

func jpegExif(data []byte) []byte {
	for p := 2; p+4 <= len(data); {
		if data[p] != 0xFF {
			return nil
		}
		marker := data[p+1]
		if marker == 0xD8 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7) {
			p += 2
			continue
		}
		if marker == 0xDA || marker == 0xD9 { // start of scan: no more metadata
			return nil
		}
		n := int(binary.BigEndian.Uint16(data[p+2:]))
		if n < 2 || p+2+n > len(data) {
			return nil
		}
		seg := data[p+4 : p+2+n]
		if marker == 0xE1 && bytes.HasPrefix(seg, []byte("Exif\x00\x00")) {
			return seg[6:]
		}
		p += 2 + n
	}
	return nil
}

func pngChunk(data []byte, typ string) []byte {
	for p := 8; p+12 <= len(data); {
		n := int(binary.BigEndian.Uint32(data[p:]))
		if n < 0 || p+12+n > len(data) {
			return nil
		}
		if string(data[p+4:p+8]) == typ {
			return data[p+8 : p+8+n]
		}
		p += 12 + n
	}
	return nil
}

func riffChunk(data []byte, typ string) []byte {
	for p := 12; p+8 <= len(data); {
		n := int(binary.LittleEndian.Uint32(data[p+4:]))
		if n < 0 || p+8+n > len(data) {
			return nil
		}
		if string(data[p:p+4]) == typ {
			return data[p+8 : p+8+n]
		}
		p += 8 + n + n&1
	}
	return nil
}

// tiffOrientation finds tag 0x0112 in IFD0 of a TIFF-structured EXIF block.
func tiffOrientation(t []byte) int {
	if len(t) < 8 {
		return 0
	}
	var bo binary.ByteOrder
	switch string(t[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return 0
	}
	off := int(bo.Uint32(t[4:]))
	if off < 8 || off+2 > len(t) {
		return 0
	}
	n := int(bo.Uint16(t[off:]))
	for i := 0; i < n; i++ {
		e := off + 2 + 12*i
		if e+12 > len(t) {
			return 0
		}
		if bo.Uint16(t[e:]) == 0x0112 && bo.Uint16(t[e+2:]) == 3 { // SHORT
			v := int(bo.Uint16(t[e+8:]))
			if v >= 1 && v <= 8 {
				return v
			}
			return 0
		}
	}
	return 0
}

// orient applies ImageOps.exif_transpose's transpose for orientation o: 2 mirror, 3 rotate
// 180°, 4 flip, 5 transpose, 6 rotate 90° clockwise, 7 transverse, 8 rotate 90°
// counter-clockwise. src(X, Y) gives the source pixel of output pixel (X, Y).
func orient(f frame, o int) frame {
	W, H := f.W, f.H
	ow, oh := W, H
	if o >= 5 {
		ow, oh = H, W
	}
	src := func(X, Y int) (int, int) {
		switch o {
		case 2:
			return W - 1 - X, Y
		case 3:
			return W - 1 - X, H - 1 - Y
		case 4:
			return X, H - 1 - Y
		case 5:
			return Y, X
		case 6:
			return Y, H - 1 - X
		case 7:
			return W - 1 - Y, H - 1 - X
		case 8:
			return W - 1 - Y, X
		}
		return X, Y
	}
	out := frame{W: ow, H: oh, RGB: make([]uint8, len(f.RGB)), Alpha: make([]uint8, len(f.Alpha)), Band: f.Band}
	for Y := 0; Y < oh; Y++ {
		for X := 0; X < ow; X++ {
			x, y := src(X, Y)
			d, s := Y*ow+X, y*W+x
			copy(out.RGB[3*d:3*d+3], f.RGB[3*s:3*s+3])
			out.Alpha[d] = f.Alpha[s]
		}
	}
	return out
}

// nrgba8 returns c as 8-bit non-premultiplied colour, exactly where c already is one.
func nrgba8(c color.Color) color.NRGBA {
	switch v := c.(type) {
	case color.NRGBA:
		return v
	case color.RGBA:
		if v.A == 255 {
			return color.NRGBA{v.R, v.G, v.B, 255}
		}
	}
	n := color.NRGBA64Model.Convert(c).(color.NRGBA64)
	return color.NRGBA{uint8(n.R >> 8), uint8(n.G >> 8), uint8(n.B >> 8), uint8(n.A >> 8)}
}

package webpmux

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"image"
	"image/draw"

	xwebp "golang.org/x/image/webp"
)

// rawChunk is one chunk of a RIFF body; data aliases the file.
type rawChunk struct {
	id   string
	data []byte
}

// FormatError reports a file that is not a valid WebP container.
type FormatError string

func (e FormatError) Error() string { return "webpmux: invalid format: " + string(e) }

// parse splits a RIFF WEBP file into its top-level chunks.
func parse(data []byte) ([]rawChunk, error) {
	if len(data) < 12 || string(data[0:4]) != "RIFF" || string(data[8:12]) != "WEBP" {
		return nil, FormatError("no RIFF WEBP header")
	}
	size := int(binary.LittleEndian.Uint32(data[4:8]))
	if size < 4 || size > len(data)-8 {
		return nil, FormatError(fmt.Sprintf("RIFF size %d for a %d-byte file", size, len(data)))
	}
	return chunks(data[12 : 8+size])
}

// chunks splits a run of chunks (a RIFF body or an ANMF payload).
func chunks(b []byte) ([]rawChunk, error) {
	var out []rawChunk
	for len(b) > 0 {
		if len(b) < 8 {
			return nil, FormatError("truncated chunk header")
		}
		n := int(binary.LittleEndian.Uint32(b[4:8]))
		if n < 0 || n > len(b)-8 {
			return nil, FormatError(fmt.Sprintf("chunk %q of %d bytes overruns the file", b[:4], n))
		}
		out = append(out, rawChunk{id: string(b[:4]), data: b[8 : 8+n]})
		b = b[8+n:]
		if n%2 == 1 && len(b) > 0 {
			b = b[1:]
		}
	}
	return out, nil
}

// vp8lAlpha reads the alpha_is_used bit of a VP8L bitstream header (signature 0x2f,
// 14 + 14 bits of size, then the bit).
func vp8lAlpha(d []byte) bool {
	return len(d) >= 5 && d[0] == 0x2f && binary.LittleEndian.Uint32(d[1:5])>>28&1 == 1
}

// Animated reports whether data is an animated WebP (the VP8X animation flag).
func Animated(data []byte) bool {
	return len(data) >= 21 && string(data[0:4]) == "RIFF" && string(data[8:12]) == "WEBP" &&
		string(data[12:16]) == "VP8X" && data[20]&flagAnimation != 0
}

// anmf is one ANMF frame's header and image chunks.
type anmf struct {
	x, y, w, h int
	durationMS int
	noBlend    bool
	disposeBG  bool
	alpha      bool
	image      []byte // a still WebP file of the frame's chunks, for x/image/webp
}

// Decode decodes every frame of a WebP file to 8-bit non-premultiplied RGBA with
// libwebp's colour conversion (ToNRGBA): a still image as one frame, an animation as
// the canvas after each frame, with the frames' durations. maxPixels bounds the pixels
// of all frames together (canvas size × frames), checked before any is decoded.
func Decode(data []byte, maxPixels int64) ([]*image.NRGBA, []int, error) {
	if !Animated(data) {
		img, err := xwebp.Decode(bytes.NewReader(data))
		if err != nil {
			return nil, nil, err
		}
		if b := img.Bounds(); int64(b.Dx())*int64(b.Dy()) > maxPixels {
			return nil, nil, fmt.Errorf("webpmux: a %dx%d image is more than %d pixels", b.Dx(), b.Dy(), maxPixels)
		}
		return []*image.NRGBA{ToNRGBA(img)}, []int{0}, nil
	}
	cs, err := parse(data)
	if err != nil {
		return nil, nil, err
	}
	if len(cs[0].data) < 10 {
		return nil, nil, FormatError("short VP8X chunk")
	}
	cw, ch := get24(cs[0].data[4:])+1, get24(cs[0].data[7:])+1
	var frames []anmf
	for _, c := range cs[1:] {
		if c.id != "ANMF" {
			continue
		}
		if int64(len(frames)+1)*int64(cw)*int64(ch) > maxPixels {
			return nil, nil, fmt.Errorf("webpmux: %d frames of %dx%d are more than %d pixels", len(frames)+1, cw, ch, maxPixels)
		}
		f, err := parseANMF(c.data, cw, ch)
		if err != nil {
			return nil, nil, fmt.Errorf("webpmux: frame %d: %w", len(frames), err)
		}
		frames = append(frames, f)
	}
	if len(frames) == 0 {
		return nil, nil, FormatError("an animation without frames")
	}
	return composite(frames, cw, ch)
}

func parseANMF(d []byte, cw, ch int) (anmf, error) {
	if len(d) < 16 {
		return anmf{}, FormatError("short ANMF chunk")
	}
	f := anmf{x: 2 * get24(d[0:]), y: 2 * get24(d[3:]), w: get24(d[6:]) + 1, h: get24(d[9:]) + 1,
		durationMS: get24(d[12:]), noBlend: d[15]&anmfNoBlend != 0, disposeBG: d[15]&1 != 0}
	if f.x+f.w > cw || f.y+f.h > ch {
		return anmf{}, FormatError(fmt.Sprintf("a %dx%d frame at (%d, %d) leaves the %dx%d canvas", f.w, f.h, f.x, f.y, cw, ch))
	}
	cs, err := chunks(d[16:])
	if err != nil {
		return anmf{}, err
	}
	var body []byte
	alph := false
	for _, c := range cs {
		switch c.id {
		case "ALPH":
			f.alpha, alph = true, true
		case "VP8L":
			f.alpha = vp8lAlpha(c.data)
		case "VP8 ":
		default:
			continue
		}
		body = append(body, chunk(c.id, c.data)...)
	}
	if body == nil {
		return anmf{}, FormatError("a frame without image data")
	}
	if alph {
		// x/image/webp takes an alpha plane only after a VP8X that announces it.
		body = append(vp8x(flagAlpha, f.w, f.h), body...)
	}
	f.image = riff(body)
	return f, nil
}

// composite draws the frames as WebPAnimDecoderGetNext does: a key frame starts from a
// transparent canvas, any other from the previous canvas after its frame's disposal;
// the frame's pixels replace the canvas in its rectangle, then, when it blends, its
// non-opaque pixels are alpha-blended over the previous canvas (integer arithmetic of
// BlendPixelNonPremult).
func composite(frames []anmf, cw, ch int) ([]*image.NRGBA, []int, error) {
	canvas := image.NewNRGBA(image.Rect(0, 0, cw, ch))
	prev := image.NewNRGBA(canvas.Rect) // the previous canvas, disposed
	var out []*image.NRGBA
	var durations []int
	prevKey := false
	for i, f := range frames {
		key := i == 0 || ((!f.alpha || f.noBlend) && f.w == cw && f.h == ch) ||
			(frames[i-1].disposeBG && ((frames[i-1].w == cw && frames[i-1].h == ch) || prevKey))
		if key {
			clear(canvas.Pix)
		} else {
			copy(canvas.Pix, prev.Pix)
		}
		img, err := xwebp.Decode(bytes.NewReader(f.image))
		if err != nil {
			return nil, nil, fmt.Errorf("webpmux: frame %d: %w", i, err)
		}
		if b := img.Bounds(); b.Dx() != f.w || b.Dy() != f.h {
			return nil, nil, FormatError(fmt.Sprintf("frame %d holds a %dx%d image in a %dx%d rectangle", i, b.Dx(), b.Dy(), f.w, f.h))
		}
		rect := image.Rect(f.x, f.y, f.x+f.w, f.y+f.h)
		draw.Draw(canvas, rect, ToNRGBA(img), image.Point{}, draw.Src)
		if i > 0 && !f.noBlend && !key {
			p := frames[i-1]
			for y := f.y; y < f.y+f.h; y++ {
				for x := f.x; x < f.x+f.w; x++ {
					// After a disposal to background, the pixels of the previous
					// rectangle are transparent: nothing to blend with there.
					if p.disposeBG && x >= p.x && x < p.x+p.w && y >= p.y && y < p.y+p.h {
						continue
					}
					o := canvas.PixOffset(x, y)
					blend(canvas.Pix[o:o+4], prev.Pix[o:o+4])
				}
			}
		}
		out = append(out, cloneNRGBA(canvas))
		durations = append(durations, f.durationMS)
		copy(prev.Pix, canvas.Pix)
		if f.disposeBG {
			draw.Draw(prev, rect, image.Transparent, image.Point{}, draw.Src)
		}
		prevKey = key
	}
	return out, durations, nil
}

// blend is libwebp's BlendPixelRowNonPremult for one pixel: an opaque src stays, any
// other is blended over dst by BlendPixelNonPremult (neither premultiplied), in place.
func blend(src, dst []byte) {
	sa := uint32(src[3])
	switch sa {
	case 255:
		return
	case 0:
		copy(src, dst)
		return
	}
	da := (uint32(dst[3]) * (256 - sa)) >> 8
	ba := sa + da
	scale := (uint32(1) << 24) / ba
	for c := 0; c < 3; c++ {
		src[c] = byte(((uint32(src[c])*sa + uint32(dst[c])*da) * scale) >> 24)
	}
	src[3] = byte(ba)
}

func cloneNRGBA(m *image.NRGBA) *image.NRGBA {
	c := image.NewNRGBA(m.Rect)
	copy(c.Pix, m.Pix)
	return c
}

package webpmux

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/draw"

	"github.com/gen2brain/webp"
)

// Options are libwebp's encoding parameters as Pillow passes them.
type Options struct {
	// Lossless selects VP8L; otherwise VP8 (lossy) with the alpha plane, if any,
	// compressed losslessly (alpha_quality 100).
	Lossless bool
	// Quality is 0..100: the visual quality of lossy frames, the compression effort of
	// lossless ones. libwebp's 0 is not reachable through gen2brain/webp (it reads 0
	// as "default"), so 0 is encoded as 1.
	Quality int
	// Method is the speed/size trade-off, 0 (fastest) .. 6 (slowest).
	Method int
}

// Frame is one image of an animation and how long it shows.
type Frame struct {
	Image      image.Image
	DurationMS int
}

// maxDuration is the largest ANMF frame duration (24 bits of milliseconds).
const maxDuration = 1<<24 - 1

// Encode writes img as a still WebP: libwebp's simple format, or the extended one
// (VP8X, the image chunks, then EXIF) for a lossy image with alpha or with exif set, as
// libwebp's WebPMux assembles Pillow's exif= argument.
func Encode(img image.Image, o Options, exif []byte) ([]byte, error) {
	f, err := encodeFrame(img, o)
	if err != nil {
		return nil, err
	}
	// The simple format holds one VP8 or VP8L chunk; a separate alpha plane (ALPH) or
	// metadata needs the extended one.
	if len(exif) == 0 && !bytes.HasPrefix(f.chunks, []byte("ALPH")) {
		return riff(f.chunks), nil
	}
	b := img.Bounds()
	var flags byte
	if f.alpha {
		flags |= flagAlpha
	}
	if len(exif) > 0 {
		flags |= flagEXIF
	}
	body := append(vp8x(flags, b.Dx(), b.Dy()), f.chunks...)
	if len(exif) > 0 {
		body = append(body, chunk("EXIF", exif)...)
	}
	return riff(body), nil
}

// EncodeAnimation writes the frames, all of one size, as an animated WebP that loops
// forever: VP8X, ANIM (transparent background, loop count 0), one ANMF per frame
// covering the whole canvas and replacing it (no blending, no disposal), then EXIF when
// given. Each frame is compressed on its own.
func EncodeAnimation(frames []Frame, o Options, exif []byte) ([]byte, error) {
	if len(frames) == 0 {
		return nil, errors.New("webpmux: an animation needs a frame")
	}
	b := frames[0].Image.Bounds()
	w, h := b.Dx(), b.Dy()
	var anmf []byte
	alpha := false
	for i, fr := range frames {
		if fb := fr.Image.Bounds(); fb.Dx() != w || fb.Dy() != h {
			return nil, fmt.Errorf("webpmux: frame %d is %dx%d, the first %dx%d", i, fb.Dx(), fb.Dy(), w, h)
		}
		if fr.DurationMS < 0 || fr.DurationMS > maxDuration {
			return nil, fmt.Errorf("webpmux: frame %d lasts %d ms (0 … %d)", i, fr.DurationMS, maxDuration)
		}
		f, err := encodeFrame(fr.Image, o)
		if err != nil {
			return nil, fmt.Errorf("webpmux: frame %d: %w", i, err)
		}
		alpha = alpha || f.alpha
		hdr := make([]byte, 16)
		put24(hdr[6:], w-1)
		put24(hdr[9:], h-1)
		put24(hdr[12:], fr.DurationMS)
		hdr[15] = anmfNoBlend
		anmf = append(anmf, chunk("ANMF", append(hdr, f.chunks...))...)
	}
	var flags byte = flagAnimation
	if alpha {
		flags |= flagAlpha
	}
	if len(exif) > 0 {
		flags |= flagEXIF
	}
	body := vp8x(flags, w, h)
	body = append(body, chunk("ANIM", make([]byte, 6))...) // background 0 (BGRA), loop 0
	body = append(body, anmf...)
	if len(exif) > 0 {
		body = append(body, chunk("EXIF", exif)...)
	}
	return riff(body), nil
}

// VP8X flags (container specification, "Extended File Format").
const (
	flagAnimation = 1 << 1
	flagEXIF      = 1 << 3
	flagAlpha     = 1 << 4
	// anmfNoBlend is the ANMF flag byte's blending bit: draw the frame over the canvas
	// without alpha blending. Disposal (bit 0) stays "none".
	anmfNoBlend = 1 << 1
)

// encoded is one frame compressed: its image chunks (ALPH + VP8, or VP8L) and whether
// it uses alpha.
type encoded struct {
	chunks []byte
	alpha  bool
}

// encodeFrame compresses img with libwebp and keeps the image chunks of the still file
// it makes.
func encodeFrame(img image.Image, o Options) (encoded, error) {
	if o.Quality < 0 || o.Quality > 100 || o.Method < 0 || o.Method > 6 {
		return encoded{}, fmt.Errorf("webpmux: quality %d (0 … 100), method %d (0 … 6)", o.Quality, o.Method)
	}
	if _, ok := img.(*image.NRGBA); !ok {
		// gen2brain/webp passes an *image.RGBA's premultiplied bytes on as they are:
		// give it straight alpha.
		b := img.Bounds()
		n := image.NewNRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
		draw.Draw(n, n.Rect, img, b.Min, draw.Src)
		img = n
	}
	var buf bytes.Buffer
	if err := webp.Encode(&buf, img, webp.Options{Lossless: o.Lossless, Quality: max(o.Quality, 1), Method: o.Method}); err != nil {
		return encoded{}, fmt.Errorf("webpmux: libwebp: %w", err)
	}
	chunks, err := parse(buf.Bytes())
	if err != nil {
		return encoded{}, fmt.Errorf("webpmux: libwebp's output: %w", err)
	}
	var e encoded
	for _, c := range chunks {
		switch c.id {
		case "ALPH":
			e.alpha = true
		case "VP8L":
			e.alpha = vp8lAlpha(c.data)
		case "VP8 ":
		default:
			continue
		}
		e.chunks = append(e.chunks, chunk(c.id, c.data)...)
	}
	if len(e.chunks) == 0 {
		return encoded{}, errors.New("webpmux: libwebp wrote no image chunk")
	}
	return e, nil
}

// chunk serialises one RIFF chunk, padded to an even size.
func chunk(id string, data []byte) []byte {
	out := make([]byte, 8, 8+len(data)+1)
	copy(out, id)
	binary.LittleEndian.PutUint32(out[4:], uint32(len(data)))
	out = append(out, data...)
	if len(data)%2 == 1 {
		out = append(out, 0)
	}
	return out
}

// riff wraps chunks in the RIFF WEBP header.
func riff(body []byte) []byte {
	out := make([]byte, 12, 12+len(body))
	copy(out, "RIFF")
	binary.LittleEndian.PutUint32(out[4:], uint32(4+len(body)))
	copy(out[8:], "WEBP")
	return append(out, body...)
}

func vp8x(flags byte, w, h int) []byte {
	d := make([]byte, 10)
	d[0] = flags
	put24(d[4:], w-1)
	put24(d[7:], h-1)
	return chunk("VP8X", d)
}

func put24(b []byte, v int) { b[0], b[1], b[2] = byte(v), byte(v>>8), byte(v>>16) }

func get24(b []byte) int { return int(b[0]) | int(b[1])<<8 | int(b[2])<<16 }

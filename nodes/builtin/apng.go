package builtin

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"image/png"
)

// Animated PNG (APNG 1.0: acTL, fcTL, fdAT chunks), read as Pillow's PngImagePlugin
// presents it to LoadImage's ImageSequence loop: when the default image (IDAT) is not
// part of the animation it is frame 0, then every animation frame composited on the
// canvas (full size) after the previous frame's dispose_op, with its blend_op. Go's
// image/png reads only the default image, so each frame's data is wrapped into a small
// PNG (the file's IHDR with the frame's size, PLTE and tRNS, the frame's IDAT data) and
// decoded with it.

// apngFrame is one fcTL and the image data that follows it.
type apngFrame struct {
	w, h, x, y     int
	dispose, blend byte
	data           []byte
}

// maxAPNGFrames bounds the frame count a file may declare.
const maxAPNGFrames = 4096

// decodeAPNG returns the frames of an animated PNG, or nil (and no error) for a still one.
func decodeAPNG(data []byte) ([]frame, error) {
	if !bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")) {
		return nil, nil
	}
	var (
		ihdr      []byte
		keep      [][2][]byte // PLTE, tRNS: copied into every frame's PNG
		animated  bool
		frames    []*apngFrame
		defData   []byte
		seenIDAT  bool
		defIsAnim bool
	)
	for p := 8; p+12 <= len(data); {
		n := int(binary.BigEndian.Uint32(data[p:]))
		if n < 0 || p+12+n > len(data) {
			return nil, errors.New("apng: truncated chunk")
		}
		typ, body := string(data[p+4:p+8]), data[p+8:p+8+n]
		p += 12 + n
		switch typ {
		case "IHDR":
			if n != 13 {
				return nil, errors.New("apng: bad IHDR")
			}
			ihdr = body
		case "PLTE", "tRNS":
			keep = append(keep, [2][]byte{[]byte(typ), body})
		case "acTL":
			animated = true
		case "fcTL":
			if n != 26 {
				return nil, errors.New("apng: bad fcTL")
			}
			if len(frames) >= maxAPNGFrames {
				return nil, fmt.Errorf("apng: more than %d frames", maxAPNGFrames)
			}
			be := binary.BigEndian
			f := &apngFrame{w: int(be.Uint32(body[4:])), h: int(be.Uint32(body[8:])),
				x: int(be.Uint32(body[12:])), y: int(be.Uint32(body[16:])),
				dispose: body[24], blend: body[25]}
			if !seenIDAT {
				defIsAnim = true
			}
			frames = append(frames, f)
		case "IDAT":
			seenIDAT = true
			defData = append(defData, body...)
			if defIsAnim && len(frames) == 1 {
				frames[0].data = append(frames[0].data, body...)
			}
		case "fdAT":
			if n < 4 || len(frames) == 0 {
				return nil, errors.New("apng: fdAT without fcTL")
			}
			last := frames[len(frames)-1]
			last.data = append(last.data, body[4:]...)
		case "IEND":
			p = len(data)
		}
	}
	if !animated || len(frames) == 0 || ihdr == nil {
		return nil, nil
	}
	W, H := int(binary.BigEndian.Uint32(ihdr[0:])), int(binary.BigEndian.Uint32(ihdr[4:]))
	if int64(len(frames)+1)*int64(W)*int64(H) > MaxValues/3 {
		return nil, fmt.Errorf("apng: %d frames of %dx%d are too many pixels", len(frames), W, H)
	}
	band := hasAlphaBand(data, "png", nil)
	decode := func(w, h int, idat []byte) (frame, error) {
		small, err := wrapPNG(ihdr, w, h, keep, idat)
		if err != nil {
			return frame{}, err
		}
		img, err := png.Decode(bytes.NewReader(small))
		if err != nil {
			return frame{}, fmt.Errorf("apng frame: %w", err)
		}
		return toFrame(img, band), nil
	}
	var out []frame
	if !defIsAnim {
		f, err := decode(W, H, defData)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	canvas := frame{W: W, H: H, RGB: make([]uint8, 3*W*H), Alpha: make([]uint8, W*H), Band: band}
	for i, fc := range frames {
		if fc.w <= 0 || fc.h <= 0 || fc.x < 0 || fc.y < 0 || fc.x+fc.w > W || fc.y+fc.h > H {
			return nil, fmt.Errorf("apng: frame %d region %dx%d+%d+%d outside the %dx%d canvas", i, fc.w, fc.h, fc.x, fc.y, W, H)
		}
		f, err := decode(fc.w, fc.h, fc.data)
		if err != nil {
			return nil, err
		}
		dispose := fc.dispose
		if i == 0 && dispose == 2 { // APNG: PREVIOUS on the first frame means BACKGROUND
			dispose = 1
		}
		var saved frame
		if dispose == 2 {
			saved = frame{RGB: append([]uint8(nil), canvas.RGB...), Alpha: append([]uint8(nil), canvas.Alpha...)}
		}
		for y := 0; y < fc.h; y++ {
			for x := 0; x < fc.w; x++ {
				s, d := y*fc.w+x, (fc.y+y)*W+fc.x+x
				if fc.blend == 0 { // SOURCE: replace, alpha included
					copy(canvas.RGB[3*d:3*d+3], f.RGB[3*s:3*s+3])
					canvas.Alpha[d] = f.Alpha[s]
					continue
				}
				overPixel(canvas.RGB[3*d:3*d+3], &canvas.Alpha[d], f.RGB[3*s:3*s+3], f.Alpha[s])
			}
		}
		out = append(out, frame{W: W, H: H, RGB: append([]uint8(nil), canvas.RGB...),
			Alpha: append([]uint8(nil), canvas.Alpha...), Band: band})
		switch dispose {
		case 1: // BACKGROUND: the region becomes transparent black
			for y := fc.y; y < fc.y+fc.h; y++ {
				clear(canvas.RGB[3*(y*W+fc.x) : 3*(y*W+fc.x+fc.w)])
				clear(canvas.Alpha[y*W+fc.x : y*W+fc.x+fc.w])
			}
		case 2:
			copy(canvas.RGB, saved.RGB)
			copy(canvas.Alpha, saved.Alpha)
		}
	}
	return out, nil
}

// overPixel composites a non-premultiplied source pixel over the destination (Porter-Duff
// "over" on 8-bit values, rounded).
func overPixel(dst []uint8, da *uint8, src []uint8, sa uint8) {
	if sa == 255 {
		copy(dst, src)
		*da = 255
		return
	}
	if sa == 0 {
		return
	}
	as, ad := float64(sa)/255, float64(*da)/255
	ao := as + ad*(1-as)
	for c := 0; c < 3; c++ {
		v := (float64(src[c])*as + float64(dst[c])*ad*(1-as)) / ao
		dst[c] = uint8(v + 0.5)
	}
	*da = uint8(ao*255 + 0.5)
}

// wrapPNG builds a standalone PNG of size w×h from the file's IHDR (depth, colour type,
// interlace), its PLTE/tRNS chunks and one frame's image data.
func wrapPNG(ihdr []byte, w, h int, keep [][2][]byte, idat []byte) ([]byte, error) {
	if int64(w)*int64(h) > maxDecodePixels {
		return nil, fmt.Errorf("apng: frame %dx%d is too large", w, h)
	}
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	hdr := append([]byte(nil), ihdr...)
	binary.BigEndian.PutUint32(hdr[0:], uint32(w))
	binary.BigEndian.PutUint32(hdr[4:], uint32(h))
	writePNGChunk(&b, "IHDR", hdr)
	for _, k := range keep {
		writePNGChunk(&b, string(k[0]), k[1])
	}
	writePNGChunk(&b, "IDAT", idat)
	writePNGChunk(&b, "IEND", nil)
	return b.Bytes(), nil
}

func writePNGChunk(b *bytes.Buffer, typ string, body []byte) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(body)))
	b.Write(n[:])
	b.WriteString(typ)
	b.Write(body)
	crc := crc32.NewIEEE()
	crc.Write([]byte(typ))
	crc.Write(body)
	binary.BigEndian.PutUint32(n[:], crc.Sum32())
	b.Write(n[:])
}

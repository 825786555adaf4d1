package builtin

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// An APNG writer for SaveAnimatedPNG, following Pillow's PngImagePlugin
// (_write_multiple_frames, as of Pillow 11.1 which ComfyUI 0.3.64 runs with): frames
// equal to the previous one are merged into it (their durations add up), a single
// remaining frame is written as a plain PNG, otherwise acTL (loop forever), then per
// frame an fcTL (whole canvas, dispose none, blend source) and the data, the first
// frame's in IDAT and the others' in fdAT. Custom chunks ("comf") go after the image
// data. References: the APNG specification (wiki.mozilla.org/APNG_Specification) and
// PNG (ISO/IEC 15948) for chunks, filters and zlib.

// pngColorTypes maps an IMAGE's channel count to the PNG colour type PIL's fromarray
// mode gives: L, LA, RGB, RGBA.
var pngColorTypes = map[int]byte{1: 0, 2: 4, 3: 2, 4: 6}

// encodeAPNG encodes every image of the batch, durationMS each, with zlib at level.
func encodeAPNG(ctx context.Context, im *Image, durationMS, level int, custom [][]byte) ([]byte, error) {
	ct, ok := pngColorTypes[im.Channels]
	if !ok {
		return nil, fmt.Errorf("cannot save an image with %d channels", im.Channels)
	}
	if level < 0 || level > 9 {
		return nil, fmt.Errorf("compress_level %d (0 … 9)", level)
	}
	type apngFrame struct {
		raw        []byte // 8-bit samples, row after row
		durationMS int
	}
	var frames []apngFrame
	for b := 0; b < im.Batch; b++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		src := im.Frame(b)
		raw := make([]byte, len(src))
		for i, v := range src {
			raw[i] = to8(v)
		}
		if n := len(frames); n > 0 && bytes.Equal(frames[n-1].raw, raw) {
			frames[n-1].durationMS += durationMS
			continue
		}
		frames = append(frames, apngFrame{raw: raw, durationMS: durationMS})
	}
	var out bytes.Buffer
	out.WriteString("\x89PNG\r\n\x1a\n")
	be := binary.BigEndian
	ihdr := be.AppendUint32(nil, uint32(im.Width))
	ihdr = be.AppendUint32(ihdr, uint32(im.Height))
	ihdr = append(ihdr, 8, ct, 0, 0, 0)
	writeChunk(&out, "IHDR", ihdr)
	animated := len(frames) > 1
	if animated {
		writeChunk(&out, "acTL", be.AppendUint32(be.AppendUint32(nil, uint32(len(frames))), 0))
	}
	seq := uint32(0)
	for i, f := range frames {
		data, err := zlibRows(f.raw, im.Width*im.Channels, im.Channels, level)
		if err != nil {
			return nil, err
		}
		if animated {
			num, den, err := apngDelay(f.durationMS)
			if err != nil {
				return nil, err
			}
			fc := be.AppendUint32(nil, seq)
			fc = be.AppendUint32(fc, uint32(im.Width))
			fc = be.AppendUint32(fc, uint32(im.Height))
			fc = be.AppendUint32(fc, 0)
			fc = be.AppendUint32(fc, 0)
			fc = be.AppendUint16(fc, num)
			fc = be.AppendUint16(fc, den)
			fc = append(fc, 0, 0) // APNG_DISPOSE_OP_NONE, APNG_BLEND_OP_SOURCE
			writeChunk(&out, "fcTL", fc)
			seq++
		}
		const part = 1 << 20
		for len(data) > 0 {
			n := min(part, len(data))
			if i == 0 {
				writeChunk(&out, "IDAT", data[:n])
			} else {
				writeChunk(&out, "fdAT", append(be.AppendUint32(nil, seq), data[:n]...))
				seq++
			}
			data = data[n:]
		}
	}
	for _, c := range custom {
		writeChunk(&out, "comf", c)
	}
	writeChunk(&out, "IEND", nil)
	return out.Bytes(), nil
}

// apngDelay is a frame's delay as fcTL's numerator/denominator: Pillow 11.1 writes
// (ms, 1000), which cannot hold more than 65535 ms; longer delays (fps below 0.0153)
// are reduced to lowest terms instead of failing as Pillow does.
func apngDelay(ms int) (num, den uint16, err error) {
	if ms <= 0xffff {
		return uint16(ms), 1000, nil
	}
	a, b := ms, 1000
	for b != 0 {
		a, b = b, a%b
	}
	if ms/a > 0xffff {
		return 0, 0, errors.New("frame duration too long for APNG")
	}
	return uint16(ms / a), uint16(1000 / a), nil
}

// writeChunk appends a PNG chunk: length, type, data, CRC of type and data.
func writeChunk(w *bytes.Buffer, typ string, data []byte) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(data)))
	w.Write(n[:])
	crc := crc32.NewIEEE()
	crc.Write([]byte(typ))
	crc.Write(data)
	w.WriteString(typ)
	w.Write(data)
	binary.BigEndian.PutUint32(n[:], crc.Sum32())
	w.Write(n[:])
}

// zlibRows filters each row of raw (stride bytes, bpp bytes per pixel) with the filter
// whose output has the least sum of absolute values (libpng's heuristic; level 0 keeps
// filter None as zlib stores anyway) and compresses the result with zlib at level.
func zlibRows(raw []byte, stride, bpp, level int) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := zlib.NewWriterLevel(&buf, level)
	if err != nil {
		return nil, err
	}
	prev := make([]byte, stride)
	cand := make([][]byte, 5)
	for i := range cand {
		cand[i] = make([]byte, stride+1)
		cand[i][0] = byte(i)
	}
	for off := 0; off < len(raw); off += stride {
		row := raw[off : off+stride]
		best := 0
		if level > 0 {
			bestSum := -1
			for f := 0; f < 5; f++ {
				filterRow(cand[f][1:], row, prev, bpp, f)
				sum := 0
				for _, v := range cand[f][1:] {
					sum += abs8(v)
				}
				if bestSum < 0 || sum < bestSum {
					best, bestSum = f, sum
				}
			}
		} else {
			copy(cand[0][1:], row)
		}
		if _, err := zw.Write(cand[best]); err != nil {
			return nil, err
		}
		prev = row
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// abs8 is the magnitude of a filtered byte read as signed.
func abs8(v byte) int {
	if v < 128 {
		return int(v)
	}
	return 256 - int(v)
}

// filterRow writes row filtered with PNG filter f (None, Sub, Up, Average, Paeth) into
// dst, given the previous row.
func filterRow(dst, row, prev []byte, bpp, f int) {
	for i, x := range row {
		var a, c byte
		if i >= bpp {
			a, c = row[i-bpp], prev[i-bpp]
		}
		b := prev[i]
		switch f {
		case 0:
			dst[i] = x
		case 1:
			dst[i] = x - a
		case 2:
			dst[i] = x - b
		case 3:
			dst[i] = x - byte((int(a)+int(b))/2)
		case 4:
			dst[i] = x - paeth(a, b, c)
		}
	}
}

func paeth(a, b, c byte) byte {
	p := int(a) + int(b) - int(c)
	pa, pb, pc := p-int(a), p-int(b), p-int(c)
	if pa < 0 {
		pa = -pa
	}
	if pb < 0 {
		pb = -pb
	}
	if pc < 0 {
		pc = -pc
	}
	if pa <= pb && pa <= pc {
		return a
	}
	if pb <= pc {
		return b
	}
	return c
}

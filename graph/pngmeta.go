package graph

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"unicode/utf8"
)

// PNG text metadata, as ComfyUI stores a graph inside the images it saves.
//
// ComfyUI's SaveImage (nodes.py, SaveImage.save_images) builds a PIL PngInfo and calls
// add_text("prompt", json.dumps(prompt)) and add_text(key, json.dumps(value)) for each
// extra_pnginfo entry ("workflow"). PIL's PngInfo.add_text (PIL/PngImagePlugin.py) writes
// a tEXt chunk when the value encodes as Latin-1 and falls back to an uncompressed iTXt
// chunk (empty language tag and translated keyword) when it does not. json.dumps escapes
// non-ASCII by default, so ComfyUI's own files always carry tEXt; InsertPNGText applies
// PIL's rule so that text from any source is stored losslessly. PIL writes these chunks
// right after IHDR (and the colour-profile chunks), before PLTE and IDAT; so do we.
//
// Chunk layouts follow the PNG specification (ISO/IEC 15948, W3C PNG 3rd edition),
// sections 11.3.3.2 tEXt, 11.3.3.3 zTXt and 11.3.3.4 iTXt.

// TextChunk is one textual PNG chunk: a keyword and its text (UTF-8 in Go; stored as
// Latin-1 in tEXt/zTXt and as UTF-8 in iTXt).
type TextChunk struct {
	Keyword, Text string
}

// Limits on what ReadPNGText accepts, so that a hostile file cannot make it allocate
// without bound. A ComfyUI workflow is rarely over a few megabytes.
const (
	// MaxPNGTextChunk bounds the stored size of one text chunk.
	MaxPNGTextChunk = 64 << 20
	// MaxPNGTextTotal bounds the sum of all decoded text (after decompression).
	MaxPNGTextTotal = 128 << 20
	// pngMaxChunkLen is the spec's limit on a chunk length (2^31-1).
	pngMaxChunkLen = 1<<31 - 1
)

var pngSignature = []byte("\x89PNG\r\n\x1a\n")

// errPNGNotPNG reports input that lacks the PNG signature.
var errPNGNotPNG = errors.New("graph: png text: not a PNG file (bad signature)")

// IsPNG reports whether data starts with the PNG signature.
func IsPNG(data []byte) bool { return bytes.HasPrefix(data, pngSignature) }

// InsertPNGText returns a copy of the encoded PNG png with one textual chunk per entry of
// chunks inserted right after IHDR, in the given order. A text that is Latin-1 (every
// rune below U+0100) is written as tEXt, any other as uncompressed iTXt, as PIL does.
// The input must be a well-formed PNG (signature, IHDR first); its chunks are copied
// unchanged.
func InsertPNGText(png []byte, chunks []TextChunk) ([]byte, error) {
	if !IsPNG(png) {
		return nil, errPNGNotPNG
	}
	rest := png[len(pngSignature):]
	if len(rest) < 12 {
		return nil, errors.New("graph: png text: truncated before IHDR")
	}
	ihdrLen := binary.BigEndian.Uint32(rest[:4])
	if string(rest[4:8]) != "IHDR" {
		return nil, fmt.Errorf("graph: png text: first chunk is %q, want IHDR", rest[4:8])
	}
	end := 12 + uint64(ihdrLen)
	if uint64(len(rest)) < end {
		return nil, errors.New("graph: png text: truncated IHDR chunk")
	}
	var buf bytes.Buffer
	buf.Grow(len(png) + 64*len(chunks))
	buf.Write(pngSignature)
	buf.Write(rest[:end])
	for _, c := range chunks {
		typ, data, err := encodeTextChunk(c)
		if err != nil {
			return nil, err
		}
		writeChunk(&buf, typ, data)
	}
	buf.Write(rest[end:])
	return buf.Bytes(), nil
}

// encodeTextChunk returns the chunk type and data for c, choosing tEXt or iTXt.
func encodeTextChunk(c TextChunk) (string, []byte, error) {
	if err := checkKeyword(c.Keyword); err != nil {
		return "", nil, err
	}
	if !utf8.ValidString(c.Text) {
		return "", nil, fmt.Errorf("graph: png text: keyword %q: text is not valid UTF-8", c.Keyword)
	}
	if latin, ok := toLatin1(c.Text); ok {
		data := make([]byte, 0, len(c.Keyword)+1+len(latin))
		data = append(data, c.Keyword...)
		data = append(data, 0)
		data = append(data, latin...)
		return "tEXt", data, nil
	}
	// iTXt: keyword NUL, compression flag 0, method 0, language tag "" NUL,
	// translated keyword "" NUL, UTF-8 text.
	data := make([]byte, 0, len(c.Keyword)+5+len(c.Text))
	data = append(data, c.Keyword...)
	data = append(data, 0, 0, 0, 0, 0)
	data = append(data, c.Text...)
	return "iTXt", data, nil
}

// checkKeyword applies the spec's keyword rules (section 11.3.3.1): 1 to 79 Latin-1
// printable characters, no leading, trailing or doubled spaces.
func checkKeyword(k string) error {
	if len(k) == 0 || len(k) > 79 {
		return fmt.Errorf("graph: png text: keyword %q: length must be 1 to 79 bytes", k)
	}
	for i := 0; i < len(k); i++ {
		b := k[i]
		if b < 32 || b > 126 {
			// Latin-1 allows 161-255 too, but a Go string holds UTF-8; ComfyUI's keys
			// are ASCII, so we keep keywords ASCII and unambiguous.
			return fmt.Errorf("graph: png text: keyword %q: byte %d is not printable ASCII", k, i)
		}
	}
	if k[0] == ' ' || k[len(k)-1] == ' ' || strings.Contains(k, "  ") {
		return fmt.Errorf("graph: png text: keyword %q: leading, trailing or double space", k)
	}
	return nil
}

// toLatin1 encodes s as Latin-1, reporting false when a rune is above U+00FF.
func toLatin1(s string) ([]byte, bool) {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		if r > 0xFF {
			return nil, false
		}
		out = append(out, byte(r))
	}
	return out, true
}

// fromLatin1 decodes Latin-1 bytes to a UTF-8 string.
func fromLatin1(b []byte) string {
	ascii := true
	for _, c := range b {
		if c >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		return string(b)
	}
	var sb strings.Builder
	sb.Grow(len(b) + len(b)/4)
	for _, c := range b {
		sb.WriteRune(rune(c))
	}
	return sb.String()
}

func writeChunk(w *bytes.Buffer, typ string, data []byte) {
	var hdr [8]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(len(data)))
	copy(hdr[4:], typ)
	w.Write(hdr[:])
	w.Write(data)
	crc := crc32.NewIEEE()
	crc.Write(hdr[4:])
	crc.Write(data)
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc.Sum32())
	w.Write(sum[:])
}

// ReadPNGText reads a PNG stream up to IEND and returns its tEXt, zTXt and iTXt chunks
// in file order, decoded to UTF-8. It checks the signature, every chunk's length and
// CRC (text or not), and bounds chunk and decompressed sizes (MaxPNGTextChunk,
// MaxPNGTextTotal). Pixel data is skipped, not decoded. Bad input yields an error that
// names the chunk and its byte offset.
func ReadPNGText(r io.Reader) ([]TextChunk, error) {
	var sig [8]byte
	if _, err := io.ReadFull(r, sig[:]); err != nil {
		return nil, errPNGNotPNG
	}
	if !bytes.Equal(sig[:], pngSignature) {
		return nil, errPNGNotPNG
	}
	var (
		out    []TextChunk
		total  int64
		offset int64 = 8
		first        = true
		hdr    [8]byte
		sum    [4]byte
	)
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return nil, fmt.Errorf("graph: png text: truncated chunk header at byte %d: %w", offset, unexpected(err))
		}
		n := binary.BigEndian.Uint32(hdr[:4])
		typ := string(hdr[4:8])
		if n > pngMaxChunkLen {
			return nil, fmt.Errorf("graph: png text: chunk %q at byte %d: length %d over the 2^31-1 limit", typ, offset, n)
		}
		if !validChunkType(hdr[4:8]) {
			return nil, fmt.Errorf("graph: png text: bad chunk type %q at byte %d", typ, offset)
		}
		if first && typ != "IHDR" {
			return nil, fmt.Errorf("graph: png text: first chunk is %q, want IHDR", typ)
		}
		first = false
		crc := crc32.NewIEEE()
		crc.Write(hdr[4:8])
		isText := typ == "tEXt" || typ == "zTXt" || typ == "iTXt"
		var data []byte
		if isText {
			if n > MaxPNGTextChunk {
				return nil, fmt.Errorf("graph: png text: chunk %q at byte %d: %d bytes exceeds the %d byte limit", typ, offset, n, MaxPNGTextChunk)
			}
			data = make([]byte, n)
			if _, err := io.ReadFull(r, data); err != nil {
				return nil, fmt.Errorf("graph: png text: chunk %q at byte %d: truncated data: %w", typ, offset, unexpected(err))
			}
			crc.Write(data)
		} else if _, err := io.CopyN(crc, r, int64(n)); err != nil {
			return nil, fmt.Errorf("graph: png text: chunk %q at byte %d: truncated data: %w", typ, offset, unexpected(err))
		}
		if _, err := io.ReadFull(r, sum[:]); err != nil {
			return nil, fmt.Errorf("graph: png text: chunk %q at byte %d: truncated CRC: %w", typ, offset, unexpected(err))
		}
		if got, want := binary.BigEndian.Uint32(sum[:]), crc.Sum32(); got != want {
			return nil, fmt.Errorf("graph: png text: chunk %q at byte %d: CRC mismatch (stored %08x, computed %08x)", typ, offset, got, want)
		}
		if isText {
			c, err := decodeTextChunk(typ, data, MaxPNGTextTotal-total)
			if err != nil {
				return nil, fmt.Errorf("graph: png text: chunk %q at byte %d: %w", typ, offset, err)
			}
			total += int64(len(c.Text))
			out = append(out, c)
		}
		offset += 12 + int64(n)
		if typ == "IEND" {
			return out, nil
		}
	}
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// validChunkType reports whether the four bytes are ASCII letters (spec section 5.3).
func validChunkType(t []byte) bool {
	for _, c := range t {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}

// decodeTextChunk parses the data of a tEXt, zTXt or iTXt chunk; budget bounds the
// decoded text size.
func decodeTextChunk(typ string, data []byte, budget int64) (TextChunk, error) {
	nul := bytes.IndexByte(data, 0)
	if nul < 0 {
		return TextChunk{}, errors.New("keyword has no NUL terminator")
	}
	if nul == 0 || nul > 79 {
		return TextChunk{}, fmt.Errorf("keyword length %d outside 1 to 79", nul)
	}
	key := fromLatin1(data[:nul])
	rest := data[nul+1:]
	var text string
	switch typ {
	case "tEXt":
		if int64(len(rest)) > budget {
			return TextChunk{}, errTextBudget
		}
		text = fromLatin1(rest)
	case "zTXt":
		if len(rest) < 1 {
			return TextChunk{}, errors.New("missing compression method")
		}
		if rest[0] != 0 {
			return TextChunk{}, fmt.Errorf("unknown compression method %d", rest[0])
		}
		b, err := inflate(rest[1:], budget)
		if err != nil {
			return TextChunk{}, err
		}
		text = fromLatin1(b)
	case "iTXt":
		if len(rest) < 2 {
			return TextChunk{}, errors.New("missing compression flag and method")
		}
		flag, method := rest[0], rest[1]
		rest = rest[2:]
		lang := bytes.IndexByte(rest, 0)
		if lang < 0 {
			return TextChunk{}, errors.New("language tag has no NUL terminator")
		}
		rest = rest[lang+1:]
		tk := bytes.IndexByte(rest, 0)
		if tk < 0 {
			return TextChunk{}, errors.New("translated keyword has no NUL terminator")
		}
		rest = rest[tk+1:]
		var b []byte
		switch flag {
		case 0:
			if int64(len(rest)) > budget {
				return TextChunk{}, errTextBudget
			}
			b = rest
		case 1:
			if method != 0 {
				return TextChunk{}, fmt.Errorf("unknown compression method %d", method)
			}
			var err error
			if b, err = inflate(rest, budget); err != nil {
				return TextChunk{}, err
			}
		default:
			return TextChunk{}, fmt.Errorf("bad compression flag %d", flag)
		}
		if !utf8.Valid(b) {
			return TextChunk{}, errors.New("iTXt text is not valid UTF-8")
		}
		text = string(b)
	}
	return TextChunk{Keyword: key, Text: text}, nil
}

var errTextBudget = fmt.Errorf("decoded text exceeds the %d byte total limit", MaxPNGTextTotal)

// inflate decompresses a zlib stream, failing once the output passes budget bytes.
func inflate(data []byte, budget int64) ([]byte, error) {
	zr, err := zlib.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("zlib: %w", err)
	}
	defer zr.Close()
	if budget < 0 {
		budget = 0
	}
	b, err := io.ReadAll(io.LimitReader(zr, budget+1))
	if err != nil {
		return nil, fmt.Errorf("zlib: %w", err)
	}
	if int64(len(b)) > budget {
		return nil, errTextBudget
	}
	return b, nil
}

// PNGText returns the text of the first chunk with the given keyword, and whether one
// was found.
func PNGText(chunks []TextChunk, keyword string) (string, bool) {
	for _, c := range chunks {
		if c.Keyword == keyword {
			return c.Text, true
		}
	}
	return "", false
}

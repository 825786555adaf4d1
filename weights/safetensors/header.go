package safetensors

import (
	"slices"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/forgeflow/forgeflow/weights"
)

// The header is decoded by a small strict JSON scanner written for its one shape (an
// object of tensor objects and an optional "__metadata__" string map), not by
// encoding/json's token API: it is about ten times faster on headers of thousands of
// tensors, sees duplicate keys, and reports the exact byte offset of every error. It
// accepts exactly RFC 8259 JSON (FuzzHeaderJSON checks it against encoding/json).

// parseHeader decodes the JSON header buf of a file of fileSize bytes and validates it.
func parseHeader(name string, buf []byte, fileSize int64) (*Header, error) {
	if !utf8.Valid(buf) {
		return nil, formatErr(name, "", 8, "header is not valid UTF-8")
	}
	h := &Header{DataOffset: 8 + int64(len(buf)), FileSize: fileSize}
	p := &scanner{name: name, b: buf}
	type span struct {
		begin, end int64
		idx        int
	}
	var spans []span
	seen := map[string]bool{}
	err := p.object("", func(key string) error {
		if seen[key] {
			return p.errorf(key, "duplicate key")
		}
		seen[key] = true
		if key == metadataKey {
			var err error
			h.Metadata, err = p.metadata()
			return err
		}
		info, begin, end, err := p.tensor(key)
		if err != nil {
			return err
		}
		spans = append(spans, span{begin, end, len(h.Tensors)})
		h.Tensors = append(h.Tensors, info)
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Only whitespace may follow the object: writers pad the header with spaces.
	if p.ws(); p.i < len(p.b) {
		return nil, p.errorf("", "data after the header object")
	}

	// The tensors must tile [0, dataLen) exactly: sorted by offset, each starting where the
	// previous one ended (Metadata::validate in the reference implementation).
	dataLen := fileSize - h.DataOffset
	slices.SortStableFunc(spans, func(a, b span) int {
		if a.begin != b.begin {
			return cmpInt(a.begin, b.begin)
		}
		if a.end != b.end {
			return cmpInt(a.end, b.end)
		}
		return cmpStr(h.Tensors[a.idx].Name, h.Tensors[b.idx].Name)
	})
	pos := int64(0)
	sorted := make([]weights.TensorInfo, 0, len(spans))
	for _, s := range spans {
		t := h.Tensors[s.idx]
		switch {
		case s.begin < pos:
			return nil, formatErr(name, t.Name, h.DataOffset+s.begin, "data_offsets [%d, %d] overlap the previous tensor, which ends at %d", s.begin, s.end, pos)
		case s.begin > pos:
			return nil, formatErr(name, t.Name, h.DataOffset+pos, "gap of %d bytes before data_offsets [%d, %d]", s.begin-pos, s.begin, s.end)
		case s.end > dataLen:
			return nil, formatErr(name, t.Name, h.DataOffset+s.begin, "data_offsets [%d, %d] run past the %d-byte data area (file truncated?)", s.begin, s.end, dataLen)
		}
		pos = s.end
		t.Offset = h.DataOffset + s.begin
		sorted = append(sorted, t)
	}
	if pos != dataLen {
		return nil, formatErr(name, "", h.DataOffset+pos, "tensors cover %d bytes of the %d-byte data area", pos, dataLen)
	}
	h.Tensors = sorted
	return h, nil
}

// scanner reads the header JSON in b; offsets in errors are absolute (8 + index).
type scanner struct {
	name string
	b    []byte
	i    int
}

func (p *scanner) errorf(tensor, format string, args ...any) error {
	return formatErr(p.name, tensor, 8+int64(p.i), "header: "+format, args...)
}

// ws skips JSON whitespace.
func (p *scanner) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// describe names the value starting at the current position, for errors.
func (p *scanner) describe() string {
	if p.i >= len(p.b) {
		return "end of JSON"
	}
	switch c := p.b[p.i]; {
	case c == '"':
		return "a string"
	case c == '-' || c >= '0' && c <= '9':
		return "number " + string(p.b[p.i:p.numberEnd()])
	case c == 't' || c == 'f' || c == 'n':
		end := p.i
		for end < len(p.b) && end-p.i < 5 && p.b[end] >= 'a' && p.b[end] <= 'z' {
			end++
		}
		return string(p.b[p.i:end])
	default:
		return strconv.Quote(string(c))
	}
}

// expect consumes c after optional whitespace.
func (p *scanner) expect(c byte, tensor string) error {
	p.ws()
	if p.i >= len(p.b) {
		return p.errorf(tensor, "unexpected end of JSON, want %q", string(c))
	}
	if p.b[p.i] != c {
		return p.errorf(tensor, "want %q, got %s", string(c), p.describe())
	}
	p.i++
	return nil
}

// object reads {"key": value, ...}, calling each with the scanner at the value.
func (p *scanner) object(tensor string, each func(key string) error) error {
	if err := p.expect('{', tensor); err != nil {
		return err
	}
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return nil
	}
	for {
		key, err := p.str(tensor, "object key")
		if err != nil {
			return err
		}
		if err := p.expect(':', tensor); err != nil {
			return err
		}
		if err := each(key); err != nil {
			return err
		}
		p.ws()
		if p.i >= len(p.b) {
			return p.errorf(tensor, "unexpected end of JSON in an object")
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			return nil
		default:
			return p.errorf(tensor, `want "," or "}", got %s`, p.describe())
		}
	}
}

// str reads a JSON string, decoding escapes. A lone UTF-16 surrogate is an error, as
// in serde_json.
func (p *scanner) str(tensor, what string) (string, error) {
	p.ws()
	if p.i >= len(p.b) {
		return "", p.errorf(tensor, "unexpected end of JSON, want %s", what)
	}
	if p.b[p.i] != '"' {
		return "", p.errorf(tensor, "%s: want a string, got %s", what, p.describe())
	}
	p.i++
	start := p.i
	// Fast path: no escapes.
	for p.i < len(p.b) {
		c := p.b[p.i]
		if c == '"' {
			s := string(p.b[start:p.i])
			p.i++
			return s, nil
		}
		if c == '\\' {
			break
		}
		if c < 0x20 {
			return "", p.errorf(tensor, "control character %#02x in a string", c)
		}
		p.i++
	}
	buf := append([]byte(nil), p.b[start:p.i]...)
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return string(buf), nil
		case c < 0x20:
			return "", p.errorf(tensor, "control character %#02x in a string", c)
		case c != '\\':
			buf = append(buf, c)
			p.i++
			continue
		}
		if p.i+1 >= len(p.b) {
			break
		}
		esc := p.b[p.i+1]
		p.i += 2
		switch esc {
		case '"', '\\', '/':
			buf = append(buf, esc)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, ok := p.hex4()
			if !ok {
				return "", p.errorf(tensor, `bad \u escape`)
			}
			if utf16.IsSurrogate(r) {
				if r >= 0xdc00 || p.i+1 >= len(p.b) || p.b[p.i] != '\\' || p.b[p.i+1] != 'u' {
					return "", p.errorf(tensor, `lone surrogate \u%04x`, r)
				}
				p.i += 2
				r2, ok := p.hex4()
				if !ok || r2 < 0xdc00 || r2 > 0xdfff {
					return "", p.errorf(tensor, `lone surrogate \u%04x`, r)
				}
				r = utf16.DecodeRune(r, r2)
			}
			buf = utf8.AppendRune(buf, r)
		default:
			p.i--
			return "", p.errorf(tensor, "bad escape %q", "\\"+string(esc))
		}
	}
	return "", p.errorf(tensor, "unexpected end of JSON in a string")
}

func (p *scanner) hex4() (rune, bool) {
	if p.i+4 > len(p.b) {
		return 0, false
	}
	var r rune
	for _, c := range p.b[p.i : p.i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	p.i += 4
	return r, true
}

// numberEnd returns the end of the JSON-number-like run at the current position.
func (p *scanner) numberEnd() int {
	end := p.i
	for end < len(p.b) {
		switch c := p.b[end]; {
		case c >= '0' && c <= '9', c == '-', c == '+', c == '.', c == 'e', c == 'E':
			end++
		default:
			return end
		}
	}
	return end
}

// uint reads a non-negative integer: JSON's 0 | [1-9][0-9]*, nothing else (no sign,
// fraction or exponent), fitting an int64.
func (p *scanner) uint(tensor, what string) (int64, error) {
	p.ws()
	start, end := p.i, p.numberEnd()
	lit := p.b[start:end]
	if len(lit) == 0 {
		return 0, p.errorf(tensor, "%s: want an integer, got %s", what, p.describe())
	}
	ok := lit[0] != '0' || len(lit) == 1
	for _, c := range lit {
		ok = ok && c >= '0' && c <= '9'
	}
	v, err := strconv.ParseInt(string(lit), 10, 64)
	if !ok || err != nil {
		return 0, p.errorf(tensor, "%s: %s is not a non-negative 64-bit integer", what, lit)
	}
	p.i = end
	return v, nil
}

// uints reads an array of non-negative integers.
func (p *scanner) uints(tensor, what string) ([]int64, error) {
	if err := p.expect('[', tensor); err != nil {
		return nil, err
	}
	out := []int64{}
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		return out, nil
	}
	for {
		v, err := p.uint(tensor, what)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		p.ws()
		if p.i >= len(p.b) {
			return nil, p.errorf(tensor, "unexpected end of JSON in %s", what)
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			return out, nil
		default:
			return nil, p.errorf(tensor, `%s: want "," or "]", got %s`, what, p.describe())
		}
	}
}

// metadata decodes the "__metadata__" value: null, or an object of string values.
func (p *scanner) metadata() (map[string]string, error) {
	p.ws()
	if p.i+4 <= len(p.b) && string(p.b[p.i:p.i+4]) == "null" {
		p.i += 4 // "__metadata__": null is accepted, as by the reference reader
		return nil, nil
	}
	if p.i < len(p.b) && p.b[p.i] != '{' {
		return nil, p.errorf(metadataKey, "want an object of strings, got %s", p.describe())
	}
	m := map[string]string{}
	err := p.object(metadataKey, func(k string) error {
		if _, dup := m[k]; dup {
			return p.errorf(metadataKey, "duplicate metadata key %q", k)
		}
		v, err := p.str(metadataKey, "value of "+strconv.Quote(k))
		m[k] = v
		return err
	})
	return m, err
}

// tensor decodes one tensor entry {"dtype", "shape", "data_offsets"} and checks its size.
func (p *scanner) tensor(name string) (info weights.TensorInfo, begin, end int64, err error) {
	info.Name = name
	var haveDType, haveShape, haveOffsets bool
	var offsets []int64
	err = p.object(name, func(k string) error {
		var err error
		switch k {
		case "dtype":
			if haveDType {
				return p.errorf(name, "duplicate field %q", k)
			}
			haveDType = true
			var s string
			if s, err = p.str(name, "dtype"); err != nil {
				return err
			}
			info.DType = weights.DType(s)
			if info.DType.ElemSize() == 0 {
				if knownUnsupported[s] {
					return &weights.UnsupportedError{Format: "safetensors", File: p.name, Tensor: name, Offset: 8 + int64(p.i), Msg: "dtype " + s}
				}
				return p.errorf(name, "unknown dtype %q", s)
			}
		case "shape":
			if haveShape {
				return p.errorf(name, "duplicate field %q", k)
			}
			haveShape = true
			info.Shape, err = p.uints(name, "shape")
		case "data_offsets":
			if haveOffsets {
				return p.errorf(name, "duplicate field %q", k)
			}
			haveOffsets = true
			if offsets, err = p.uints(name, "data_offsets"); err == nil && len(offsets) != 2 {
				err = p.errorf(name, "data_offsets has %d values, want 2", len(offsets))
			}
		default:
			return p.errorf(name, "unknown field %q", k)
		}
		return err
	})
	if err != nil {
		return
	}
	switch {
	case !haveDType:
		err = p.errorf(name, "missing dtype")
	case !haveShape:
		err = p.errorf(name, "missing shape")
	case !haveOffsets:
		err = p.errorf(name, "missing data_offsets")
	}
	if err != nil {
		return
	}
	begin, end = offsets[0], offsets[1]
	if end < begin {
		err = p.errorf(name, "data_offsets [%d, %d] end before they begin", begin, end)
		return
	}
	size := int64(info.DType.ElemSize())
	n, ok := weights.ShapeElements(info.Shape, (1<<62)/size)
	if !ok {
		err = p.errorf(name, "shape %v overflows", info.Shape)
		return
	}
	if n*size != end-begin {
		err = p.errorf(name, "shape %v of %s needs %d bytes, data_offsets [%d, %d] hold %d", info.Shape, info.DType, n*size, begin, end, end-begin)
		return
	}
	info.Size = end - begin
	return
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

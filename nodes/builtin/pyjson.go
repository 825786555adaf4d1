package builtin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// pyJSONDumps encodes v the way Python's json.dumps does with its defaults, which is how
// ComfyUI writes the prompt and workflow into PNG text chunks (nodes.py
// SaveImage.save_images): separators ", " and ": ", and ensure_ascii, so every character
// above U+007F is written as \uXXXX (a surrogate pair above U+FFFF) and the text always
// fits a Latin-1 tEXt chunk. Object keys come out sorted (Go maps keep no order), and
// numbers keep their decoded text when they are json.Number.
func pyJSONDumps(v any) (string, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", fmt.Errorf("builtin: encode metadata: %w", err)
	}
	return pyReformat(bytes.TrimRight(buf.Bytes(), "\n")), nil
}

// pyReformat rewrites compact JSON from encoding/json into Python's default layout.
func pyReformat(src []byte) string {
	var b bytes.Buffer
	b.Grow(len(src) + len(src)/8)
	inString := false
	for i := 0; i < len(src); {
		c := src[i]
		if inString {
			switch {
			case c == '\\':
				b.Write(src[i : i+2]) // an escape pair is copied whole
				i += 2
				continue
			case c == '"':
				inString = false
			case c == 0x7f: // Python escapes DEL too: only ' '..'~' stay literal
				b.WriteString(`\u007f`)
				i++
				continue
			case c >= utf8.RuneSelf:
				r, n := utf8.DecodeRune(src[i:])
				writeUEscape(&b, r)
				i += n
				continue
			}
			b.WriteByte(c)
			i++
			continue
		}
		switch c {
		case '"':
			inString = true
			b.WriteByte(c)
		case ',':
			b.WriteString(", ")
		case ':':
			b.WriteString(": ")
		default:
			b.WriteByte(c)
		}
		i++
	}
	return b.String()
}

func writeUEscape(b *bytes.Buffer, r rune) {
	if r > 0xFFFF {
		r -= 0x10000
		fmt.Fprintf(b, `\u%04x\u%04x`, 0xD800+(r>>10), 0xDC00+(r&0x3FF))
		return
	}
	fmt.Fprintf(b, `\u%04x`, r)
}

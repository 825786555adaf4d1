package graph

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"image"
	"image/color"
	"image/png"
	"strings"
	"testing"
)

// tinyPNG encodes a 2×2 RGBA image with the standard library.
func tinyPNG(t testing.TB) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 2, 2))
	img.Set(1, 1, color.RGBA{R: 200, A: 255})
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// chunkTypes lists the chunk types of a PNG in order.
func chunkTypes(t *testing.T, b []byte) []string {
	t.Helper()
	var out []string
	for p := 8; p+8 <= len(b); {
		n := int(binary.BigEndian.Uint32(b[p:]))
		out = append(out, string(b[p+4:p+8]))
		p += 12 + n
	}
	return out
}

func rawChunk(typ string, data []byte) []byte {
	var buf bytes.Buffer
	writeChunk(&buf, typ, data)
	return buf.Bytes()
}

func zlibBytes(s string) []byte {
	var buf bytes.Buffer
	w := zlib.NewWriter(&buf)
	w.Write([]byte(s))
	w.Close()
	return buf.Bytes()
}

// withChunks builds a PNG from tinyPNG with extra raw chunks after IHDR.
func withChunks(t testing.TB, raw ...[]byte) []byte {
	t.Helper()
	p := tinyPNG(t)
	ihdrEnd := 8 + 12 + int(binary.BigEndian.Uint32(p[8:]))
	out := append([]byte{}, p[:ihdrEnd]...)
	for _, r := range raw {
		out = append(out, r...)
	}
	return append(out, p[ihdrEnd:]...)
}

func TestInsertPNGTextRoundTrip(t *testing.T) {
	chunks := []TextChunk{
		{"prompt", `{"3":{"class_type":"KSampler","inputs":{"seed":18446744073709551615}}}`},
		{"workflow", `{"nodes":[],"title":"café"}`}, // Latin-1 → tEXt
		{"comment", "日本語 prompt ✓"},                 // beyond Latin-1 → iTXt
		{"empty", ""},
	}
	out, err := InsertPNGText(tinyPNG(t), chunks)
	if err != nil {
		t.Fatal(err)
	}
	got := chunkTypes(t, out)
	want := []string{"IHDR", "tEXt", "tEXt", "iTXt", "tEXt", "IDAT", "IEND"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("chunk order = %v, want %v", got, want)
	}
	// The standard decoder checks every CRC: the result must still be a valid image.
	if _, err := png.Decode(bytes.NewReader(out)); err != nil {
		t.Fatalf("png.Decode after insert: %v", err)
	}
	// The Latin-1 text is stored as one byte per rune, as PIL does.
	if !bytes.Contains(out, []byte("caf\xe9")) {
		t.Errorf("Latin-1 text not stored as Latin-1 bytes")
	}
	read, err := ReadPNGText(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(read) != len(chunks) {
		t.Fatalf("read %d chunks, want %d", len(read), len(chunks))
	}
	for i := range chunks {
		if read[i] != chunks[i] {
			t.Errorf("chunk %d = %+v, want %+v", i, read[i], chunks[i])
		}
	}
	if s, ok := PNGText(read, "workflow"); !ok || s != chunks[1].Text {
		t.Errorf("PNGText(workflow) = %q, %v", s, ok)
	}
}

func TestInsertPNGTextErrors(t *testing.T) {
	good := tinyPNG(t)
	tests := []struct {
		name   string
		png    []byte
		chunks []TextChunk
		want   string
	}{
		{"not png", []byte("GIF89a"), nil, "not a PNG"},
		{"truncated", good[:12], nil, "truncated"},
		{"empty keyword", good, []TextChunk{{"", "x"}}, "length must be 1 to 79"},
		{"long keyword", good, []TextChunk{{strings.Repeat("k", 80), "x"}}, "length must be 1 to 79"},
		{"nul in keyword", good, []TextChunk{{"a\x00b", "x"}}, "not printable"},
		{"leading space", good, []TextChunk{{" a", "x"}}, "space"},
		{"invalid utf8", good, []TextChunk{{"a", "\xff\xfe"}}, "not valid UTF-8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := InsertPNGText(tc.png, tc.chunks)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want substring %q", err, tc.want)
			}
		})
	}
}

func TestReadPNGTextChunkKinds(t *testing.T) {
	itxtZ := append([]byte("workflow\x00\x01\x00en\x00Workflow\x00"), zlibBytes(`{"ü":"✓"}`)...)
	p := withChunks(t,
		rawChunk("tEXt", []byte("prompt\x00{}")),
		rawChunk("zTXt", append([]byte("note\x00\x00"), zlibBytes("gr\xfc\xdf")...)),
		rawChunk("iTXt", itxtZ),
		rawChunk("iTXt", []byte("plain\x00\x00\x00\x00\x00text")),
	)
	got, err := ReadPNGText(bytes.NewReader(p))
	if err != nil {
		t.Fatal(err)
	}
	want := []TextChunk{{"prompt", "{}"}, {"note", "grüß"}, {"workflow", `{"ü":"✓"}`}, {"plain", "text"}}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("chunk %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestReadPNGTextErrors(t *testing.T) {
	good := withChunks(t, rawChunk("tEXt", []byte("prompt\x00{}")))
	badCRC := append([]byte{}, good...)
	badCRC[33+8+3] ^= 0xff // a byte of the tEXt data
	huge := withChunks(t)
	hugeHdr := make([]byte, 8)
	binary.BigEndian.PutUint32(hugeHdr, MaxPNGTextChunk+1)
	copy(hugeHdr[4:], "tEXt")
	huge = append(huge[:33], append(hugeHdr, huge[33:]...)...)
	overLimit := make([]byte, 8)
	binary.BigEndian.PutUint32(overLimit, 0x80000000)
	copy(overLimit[4:], "IDAT")
	over := append(append([]byte{}, good[:33]...), overLimit...)

	ihdr := tinyPNG(t)[8:33]
	notIHDR := append(append([]byte{}, pngSignature...), rawChunk("tEXt", []byte("a\x00b"))...)
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "not a PNG"},
		{"bad signature", []byte("\x89PNG\r\n\x1a\x00rest"), "not a PNG"},
		{"crc", badCRC, "CRC mismatch"},
		{"truncated header", good[:40], "truncated chunk header"},
		{"truncated data", good[:33+8+3], "truncated data"},
		{"no IEND", append(append([]byte{}, pngSignature...), ihdr...), "truncated chunk header"},
		{"first not IHDR", notIHDR, "want IHDR"},
		{"text chunk too big", huge, "exceeds"},
		{"length over 2^31-1", over, "2^31-1"},
		{"bad chunk type", withChunks(t, rawChunk("t3Xt", nil)), "bad chunk type"},
		{"no keyword nul", withChunks(t, rawChunk("tEXt", []byte("abc"))), "no NUL"},
		{"empty keyword", withChunks(t, rawChunk("tEXt", []byte("\x00abc"))), "keyword length 0"},
		{"ztxt method", withChunks(t, rawChunk("zTXt", []byte("k\x00\x05xx"))), "compression method 5"},
		{"ztxt garbage", withChunks(t, rawChunk("zTXt", []byte("k\x00\x00notzlib"))), "zlib"},
		{"itxt flag", withChunks(t, rawChunk("iTXt", []byte("k\x00\x07\x00\x00\x00x"))), "compression flag 7"},
		{"itxt short", withChunks(t, rawChunk("iTXt", []byte("k\x00\x00"))), "missing compression"},
		{"itxt no lang nul", withChunks(t, rawChunk("iTXt", []byte("k\x00\x00\x00en"))), "language tag"},
		{"itxt bad utf8", withChunks(t, rawChunk("iTXt", []byte("k\x00\x00\x00\x00\x00\xff"))), "UTF-8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadPNGText(bytes.NewReader(tc.data))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want substring %q", err, tc.want)
			}
		})
	}
	// A zTXt or iTXt "bomb" (small on disk, huge once inflated) stops at the budget,
	// which ReadPNGText sets to what is left of MaxPNGTextTotal.
	var bomb bytes.Buffer
	zw, _ := zlib.NewWriterLevel(&bomb, zlib.BestCompression)
	zw.Write(make([]byte, 1<<20))
	zw.Close()
	for _, chunk := range []struct{ typ, head string }{{"zTXt", "k\x00\x00"}, {"iTXt", "k\x00\x01\x00\x00\x00"}} {
		_, err := decodeTextChunk(chunk.typ, append([]byte(chunk.head), bomb.Bytes()...), 4096)
		if err == nil || !strings.Contains(err.Error(), "total limit") {
			t.Errorf("%s bomb: err = %v", chunk.typ, err)
		}
		if _, err := decodeTextChunk(chunk.typ, append([]byte(chunk.head), bomb.Bytes()...), 1<<20); err != nil {
			t.Errorf("%s at exactly the budget: %v", chunk.typ, err)
		}
	}
	// The CRC check covers every chunk, not only text ones.
	p := tinyPNG(t)
	p[len(p)-1] ^= 1 // IEND's CRC
	if _, err := ReadPNGText(bytes.NewReader(p)); err == nil || !strings.Contains(err.Error(), `"IEND"`) {
		t.Errorf("corrupt IEND CRC: err = %v", err)
	}
}

func FuzzReadPNGText(f *testing.F) {
	f.Add(tinyPNG(f))
	p, _ := InsertPNGText(tinyPNG(f), []TextChunk{{"prompt", "{}"}, {"workflow", "日本"}})
	f.Add(p)
	f.Add(withChunks(f, rawChunk("zTXt", append([]byte("k\x00\x00"), zlibBytes("abc")...))))
	f.Fuzz(func(t *testing.T, data []byte) {
		chunks, err := ReadPNGText(bytes.NewReader(data))
		if err != nil {
			return
		}
		// Whatever was read must survive a write and a second read.
		var ok []TextChunk
		for _, c := range chunks {
			if checkKeyword(c.Keyword) == nil {
				ok = append(ok, c)
			}
		}
		out, err := InsertPNGText(tinyPNG(t), ok)
		if err != nil {
			t.Fatalf("re-insert: %v", err)
		}
		again, err := ReadPNGText(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("re-read: %v", err)
		}
		if len(again) != len(ok) {
			t.Fatalf("re-read %d chunks, want %d", len(again), len(ok))
		}
		for i := range ok {
			if again[i] != ok[i] {
				t.Fatalf("chunk %d = %+v, want %+v", i, again[i], ok[i])
			}
		}
	})
}

package imagesize

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/png"
	"runtime"
	"testing"
)

// bombPNG is a valid PNG header declaring w×h pixels followed by a tiny IDAT: a few
// hundred bytes that would decode to w*h*4 bytes.
func bombPNG(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		binary.Write(&b, binary.BigEndian, uint32(len(data)))
		b.WriteString(typ)
		b.Write(data)
		crc := crc32.NewIEEE()
		crc.Write([]byte(typ))
		crc.Write(data)
		binary.Write(&b, binary.BigEndian, crc.Sum32())
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr, w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 6 // 8-bit RGBA
	chunk("IHDR", ihdr)
	chunk("IDAT", []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01})
	chunk("IEND", nil)
	return b.Bytes()
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		w, h    int
		max     int64
		tooMany bool
		invalid bool
	}{
		{100, 100, 0, false, false},
		{16000, 16000, 0, true, false},
		{13377, 13377, 0, false, false}, // 178,944,129 pixels: just under Pillow's bomb threshold
		{13378, 13378, 0, true, false},
		{10, 10, 100, false, false},
		{10, 11, 100, true, false},
		{1 << 40 >> 20, 1 << 40 >> 20, 0, true, false},
		{0, 5, 0, false, true},
		{5, -1, 0, false, true},
	} {
		err := Check(tc.w, tc.h, tc.max)
		var tl *TooLargeError
		if got := errors.As(err, &tl); got != tc.tooMany {
			t.Errorf("Check(%d, %d, %d) = %v", tc.w, tc.h, tc.max, err)
		}
		if tc.invalid != (err != nil && tl == nil) {
			t.Errorf("Check(%d, %d, %d) = %v, want an invalid-size error: %v", tc.w, tc.h, tc.max, err, tc.invalid)
		}
	}
}

// TestDecodeRefusesBombBeforeDecoding: a 16000×16000 PNG of a few dozen bytes is
// refused by its header, without the 1 GB allocation decoding would make.
func TestDecodeRefusesBombBeforeDecoding(t *testing.T) {
	bomb := bombPNG(16000, 16000)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err := Decode(bomb, 0)
	runtime.ReadMemStats(&after)
	var tl *TooLargeError
	if !errors.As(err, &tl) || tl.Width != 16000 || tl.Max != DefaultMaxPixels {
		t.Fatalf("Decode of a bomb: %v", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Errorf("refusing the bomb allocated %d bytes", n)
	}

	var good bytes.Buffer
	if err := png.Encode(&good, image.NewNRGBA(image.Rect(0, 0, 3, 2))); err != nil {
		t.Fatal(err)
	}
	img, format, err := Decode(good.Bytes(), 6)
	if err != nil || format != "png" || img.Bounds().Dx() != 3 {
		t.Fatalf("Decode of a 3x2 PNG with a limit of 6: %v %q", err, format)
	}
	if _, _, err := Decode(good.Bytes(), 5); err == nil {
		t.Error("a 3x2 PNG passed a limit of 5 pixels")
	}
}

package builtin

import (
	"bytes"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzDecodeImage feeds arbitrary bytes to LoadImage's decoder: it must return frames or
// an error, never panic, and frames must hold as many samples as their size says.
func FuzzDecodeImage(f *testing.F) {
	m := image.NewNRGBA(image.Rect(0, 0, 3, 2))
	for i := range m.Pix {
		m.Pix[i] = uint8(i * 11)
	}
	var pngBuf, jpgBuf, gifBuf bytes.Buffer
	_ = png.Encode(&pngBuf, m)
	_ = jpeg.Encode(&jpgBuf, m, nil)
	pal := image.NewPaletted(image.Rect(0, 0, 2, 2), color.Palette{color.Black, color.White})
	_ = gif.EncodeAll(&gifBuf, &gif.GIF{Image: []*image.Paletted{pal, pal}, Delay: []int{0, 0}})
	f.Add(pngBuf.Bytes())
	f.Add(withPNGChunk(pngBuf.Bytes(), "eXIf", exifOrientationBlock(6)))
	f.Add(jpgBuf.Bytes())
	f.Add(gifBuf.Bytes())
	f.Add([]byte("RIFF\x20\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Add(buildAPNG(f, 2, 1, nil, []apngTestFrame{{img: rgbaImage(2, 1, 1, 2, 3, 4)}, {img: rgbaImage(1, 1, 5, 6, 7, 8), x: 1, dispose: 2, blend: 1}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		frames, _, err := decodeImage(data, 0)
		if err != nil {
			return
		}
		for _, fr := range frames {
			if len(fr.RGB) != 3*fr.W*fr.H || len(fr.Alpha) != fr.W*fr.H {
				t.Fatalf("frame %dx%d holds %d RGB and %d alpha bytes", fr.W, fr.H, len(fr.RGB), len(fr.Alpha))
			}
		}
	})
}

// FuzzSplitPrefix checks that no filename_prefix resolves to a subfolder outside the
// output folder.
func FuzzSplitPrefix(f *testing.F) {
	for _, s := range []string{"ComfyUI", "a/b/c", "../x", "/abs", "a/../../b", "%year%/../x", "..", "a//b/./c/", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, prefix string) {
		sub, name, _, err := splitPrefix(prefix, 8, 8, fixedNow)
		if err != nil {
			return
		}
		if sub != "" && (!filepath.IsLocal(sub) || strings.HasPrefix(sub, "/")) {
			t.Fatalf("prefix %q gave subfolder %q", prefix, sub)
		}
		if strings.Contains(name, "/") {
			t.Fatalf("prefix %q gave file stem %q with a separator", prefix, name)
		}
	})
}

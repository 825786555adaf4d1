package builtin

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/nodes"
)

// quantImage is the reference script's test image: byte i of the (b, h, w, 3) batch is
// (7i² + 31i + base) mod 251, divided by 255 in float32 as torch does.
func quantImage(b, h, w, base int) *Image {
	im := &Image{Batch: b, Height: h, Width: w, Channels: 3, Pix: make([]float32, b*h*w*3)}
	for i := range im.Pix {
		im.Pix[i] = float32((i*i*7+i*31+base)%251) / 255
	}
	return im
}

// wideImage has 90 000 distinct colours in 300×300 pixels (more than Quant.c's 65 536
// histogram entries, so the histogram drops a bit of every channel): pixel p is
// (p mod 256, p/256 mod 256, 7p + p/97 mod 256).
func wideImage() *Image {
	im := &Image{Batch: 1, Height: 300, Width: 300, Channels: 3, Pix: make([]float32, 300*300*3)}
	for p := 0; p < 300*300; p++ {
		for c, v := range [3]int{p % 256, (p / 256) % 256, (p*7 + p/97) % 256} {
			im.Pix[3*p+c] = float32(v) / 255
		}
	}
	return im
}

// refQuantizeWide are the SHA-256s of ComfyUI's ImageQuantize output on wideImage, made
// like refQuantize.
var refQuantizeWide = map[string][]string{
	"wide256/none":            {"ef3dc938e9b0a486c26c1dba9b57cecca0fe8aa4bbfb889fe411f17ad296705d"},
	"wide256/floyd-steinberg": {"c24d17218c1c6aeb9bc29517f944a4321514b95ad834fe45816ef2c54c7d2e69"},
	"wide256/bayer-4":         {"48023270976d7b16b568669dc694ec4479e59eef5d141359b9faf66bbe5907ad"},
	"wide13/none":             {"2a6d430aad73a259a2dfb51f2ee057053f14f7981ec768352c745c4c26176c85"},
	"wide13/floyd-steinberg":  {"27f1809057bd858a185acefef6606015a4e9e8fb433a874f83b02d263880acc2"},
}

func TestImageQuantizeMatchesComfyUI(t *testing.T) {
	images := map[string]struct {
		im     *Image
		colors int
	}{
		"small4": {quantImage(1, 5, 7, 0), 4}, "b2x16": {quantImage(2, 16, 16, 5), 16},
		"c1": {quantImage(1, 4, 4, 3), 1}, "c256": {quantImage(1, 6, 6, 9), 256},
		"big": {quantImage(1, 300, 300, 1), 256}, "big7": {quantImage(1, 300, 300, 2), 7},
		"wide256": {wideImage(), 256}, "wide13": {wideImage(), 13},
	}
	refs := maps.Clone(refQuantize)
	maps.Copy(refs, refQuantizeWide)
	if testing.Short() {
		delete(images, "big")
		delete(images, "big7")
		delete(images, "wide256")
		delete(images, "wide13")
	}
	for name, want := range refs {
		img, dither, _ := strings.Cut(name, "/")
		c, ok := images[img]
		if !ok {
			continue
		}
		t.Run(name, func(t *testing.T) {
			out := out0(t, "ImageQuantize", nodes.Inputs{"image": c.im, "colors": int64(c.colors), "dither": dither}).(*Image)
			if out.Batch != c.im.Batch || out.Height != c.im.Height || out.Width != c.im.Width || out.Channels != 3 {
				t.Fatalf("shape %v", out.Shape())
			}
			var got []string
			for b := 0; b < out.Batch; b++ {
				f := out.Frame(b)
				u8 := make([]uint8, len(f))
				for i, v := range f {
					u8[i] = uint8(math.Round(float64(v) * 255))
				}
				if small, ok := refQuantizeSmall[name]; ok && !slices.Equal(u8, small) {
					t.Errorf("bytes %v\nComfyUI %v", u8, small)
				}
				h := sha256.Sum256(u8)
				got = append(got, hex.EncodeToString(h[:]))
			}
			if !slices.Equal(got, want) {
				t.Errorf("output hashes differ from ComfyUI's")
			}
		})
	}
	rgba := &Image{Batch: 1, Height: 1, Width: 1, Channels: 4, Pix: make([]float32, 4)}
	if _, err := run(t, Options{}, nil, "ImageQuantize", nodes.Inputs{"image": rgba, "colors": int64(4), "dither": "none"}); err == nil {
		t.Fatal("an RGBA image was quantized (ComfyUI fails on it)")
	}
}

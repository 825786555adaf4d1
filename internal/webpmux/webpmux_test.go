package webpmux

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"image"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	xwebp "golang.org/x/image/webp"
)

// picture is a w×h test image: smooth colour fields with mild noise (what generated
// images look like to a codec), with alpha when asked.
func picture(seed uint64, w, h int, alpha bool) *image.NRGBA {
	r := rand.New(rand.NewPCG(seed, 3))
	m := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			fx, fy := float64(x)/float64(w), float64(y)/float64(h)
			v := [4]float64{
				128 + 100*math.Sin(6*fx+3*fy+float64(seed)),
				128 + 100*math.Cos(5*fy-2*fx),
				128 + 90*math.Sin(9*math.Hypot(fx-0.5, fy-0.4)),
				255,
			}
			if alpha {
				v[3] = 255 * fx
			}
			for c := 0; c < 4; c++ {
				n := 0.0
				if c < 3 {
					n = r.NormFloat64() * 3
				}
				m.Pix[m.PixOffset(x, y)+c] = uint8(max(0, min(255, v[c]+n)))
			}
		}
	}
	return m
}

// sameVisible reports whether a and b hold the same alpha everywhere and the same colour
// wherever b is visible.
func sameVisible(a, b *image.NRGBA) bool {
	for i := 0; i < len(a.Pix); i += 4 {
		if a.Pix[i+3] != b.Pix[i+3] || (b.Pix[i+3] != 0 && !bytes.Equal(a.Pix[i:i+3], b.Pix[i:i+3])) {
			return false
		}
	}
	return true
}

// nrgba returns any decoded image as non-premultiplied 8-bit RGBA.
func nrgba(img image.Image) *image.NRGBA { return ToNRGBA(img) }

// psnr compares the pixels b shows (alpha > 0): libwebp, with Pillow's exact=0, does
// not keep the colour under alpha 0.
func psnr(a, b *image.NRGBA, channels int) float64 {
	var se float64
	n := 0
	for i := 0; i < len(a.Pix); i += 4 {
		if b.Pix[i+3] == 0 {
			continue
		}
		for c := 0; c < channels; c++ {
			d := float64(a.Pix[i+c]) - float64(b.Pix[i+c])
			se += d * d
			n++
		}
	}
	if se == 0 {
		return math.Inf(1)
	}
	return 10 * math.Log10(255*255/(se/float64(n)))
}

// riffChunks lists a file's top-level chunk ids.
func riffChunks(t *testing.T, data []byte) []rawChunk {
	t.Helper()
	cs, err := parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func TestEncodeStill(t *testing.T) {
	exif := []byte("MM\x00*\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00")
	for _, tc := range []struct {
		name     string
		alpha    bool
		o        Options
		exif     []byte
		ids      string
		minPSNR  float64 // 0: lossless, exact
		vp8xFlag byte
	}{
		{"lossless", false, Options{Lossless: true, Quality: 80, Method: 4}, nil, "VP8L", 0, 0},
		{"lossless-alpha-exif", true, Options{Lossless: true, Quality: 0, Method: 0}, exif, "VP8X VP8L EXIF", 0, flagEXIF | flagAlpha},
		{"lossy-q90", false, Options{Quality: 90, Method: 4}, nil, "VP8 ", 35, 0},
		{"lossy-alpha", true, Options{Quality: 90, Method: 4}, nil, "VP8X ALPH VP8 ", 33, flagAlpha},
		{"lossy-alpha-q80-exif", true, Options{Quality: 80, Method: 6}, exif, "VP8X ALPH VP8  EXIF", 32, flagEXIF | flagAlpha},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := picture(1, 61, 47, tc.alpha)
			data, err := Encode(src, tc.o, tc.exif)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			cs := riffChunks(t, data)
			for _, c := range cs {
				ids = append(ids, c.id)
			}
			if got := strings.Join(ids, " "); got != tc.ids {
				t.Fatalf("chunks %q, want %q", got, tc.ids)
			}
			if tc.vp8xFlag != 0 && cs[0].data[0] != tc.vp8xFlag {
				t.Errorf("VP8X flags %#x, want %#x", cs[0].data[0], tc.vp8xFlag)
			}
			if tc.exif != nil && !bytes.Equal(cs[len(cs)-1].data, tc.exif) {
				t.Errorf("EXIF chunk %q", cs[len(cs)-1].data)
			}
			img, err := xwebp.Decode(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			got := nrgba(img)
			if tc.minPSNR == 0 {
				if !sameVisible(got, src) {
					t.Fatal("lossless round trip changed pixels")
				}
				return
			}
			if p := psnr(got, src, 3); p < tc.minPSNR {
				t.Errorf("PSNR %.1f dB < %.0f", p, tc.minPSNR)
			}
			if tc.alpha {
				for i := 3; i < len(src.Pix); i += 4 {
					if got.Pix[i] != src.Pix[i] {
						t.Fatalf("alpha %d, want %d (alpha is lossless at alpha_quality 100)", got.Pix[i], src.Pix[i])
					}
				}
			}
		})
	}
	if _, err := Encode(picture(1, 8, 8, false), Options{Quality: 101}, nil); err == nil {
		t.Error("quality 101 was accepted")
	}
}

// TestEncodeAnimation checks the container chunk by chunk (VP8X flags and canvas, ANIM,
// each ANMF's rectangle, duration and flags, EXIF) and decodes it back frame by frame.
func TestEncodeAnimation(t *testing.T) {
	exif := []byte("Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00")
	for _, tc := range []struct {
		name    string
		alpha   bool
		o       Options
		minPSNR float64
	}{
		{"lossless", false, Options{Lossless: true, Quality: 80, Method: 4}, 0},
		{"lossless-alpha", true, Options{Lossless: true, Quality: 100, Method: 0}, 0},
		{"lossy-alpha", true, Options{Quality: 85, Method: 4}, 33},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var frames []Frame
			for i := 0; i < 3; i++ {
				frames = append(frames, Frame{Image: picture(uint64(10+i), 33, 20, tc.alpha), DurationMS: 166 + i})
			}
			data, err := EncodeAnimation(frames, tc.o, exif)
			if err != nil {
				t.Fatal(err)
			}
			if binary.LittleEndian.Uint32(data[4:8]) != uint32(len(data)-8) {
				t.Error("RIFF size is not the file's")
			}
			cs := riffChunks(t, data)
			if len(cs) != 6 || cs[0].id != "VP8X" || cs[1].id != "ANIM" || cs[5].id != "EXIF" {
				t.Fatalf("chunks %v", cs)
			}
			want := byte(flagAnimation | flagEXIF)
			if tc.alpha {
				want |= flagAlpha
			}
			if v := cs[0].data; v[0] != want || get24(v[4:]) != 32 || get24(v[7:]) != 19 {
				t.Errorf("VP8X %x", v)
			}
			if !bytes.Equal(cs[1].data, make([]byte, 6)) || !bytes.Equal(cs[5].data, exif) {
				t.Errorf("ANIM %x, EXIF %q", cs[1].data, cs[5].data)
			}
			for i, c := range cs[2:5] {
				d := c.data
				if c.id != "ANMF" || get24(d) != 0 || get24(d[3:]) != 0 || get24(d[6:]) != 32 || get24(d[9:]) != 19 ||
					get24(d[12:]) != 166+i || d[15] != anmfNoBlend {
					t.Errorf("ANMF %d header %x", i, d[:16])
				}
			}
			if !Animated(data) {
				t.Error("Animated is false")
			}
			imgs, durations, err := Decode(data, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if len(imgs) != 3 {
				t.Fatalf("%d frames", len(imgs))
			}
			for i, img := range imgs {
				got, src := nrgba(img), frames[i].Image.(*image.NRGBA)
				if durations[i] != 166+i {
					t.Errorf("frame %d lasts %d ms", i, durations[i])
				}
				if tc.minPSNR == 0 {
					if !sameVisible(got, src) {
						t.Fatalf("frame %d changed in a lossless round trip", i)
					}
				} else if p := psnr(got, src, 4); p < tc.minPSNR {
					t.Errorf("frame %d: PSNR %.1f dB < %.0f", i, p, tc.minPSNR)
				}
			}
			// The pixel bound counts every frame.
			if _, _, err := Decode(data, 3*33*20-1); err == nil {
				t.Error("an animation over the pixel bound was decoded")
			}
		})
	}
	if _, err := EncodeAnimation([]Frame{{Image: picture(1, 4, 4, false)}, {Image: picture(1, 5, 4, false)}}, Options{Lossless: true}, nil); err == nil {
		t.Error("frames of different sizes were accepted")
	}
	if _, err := EncodeAnimation([]Frame{{Image: picture(1, 4, 4, false), DurationMS: 1 << 24}}, Options{Lossless: true}, nil); err == nil {
		t.Error("a 2^24 ms frame was accepted")
	}
}

// TestDecodeMatchesLibwebp composites animations written by libwebp's own
// WebPAnimEncoder (through Pillow; tools/refpeer/webp_ref.py) — sub-frame
// rectangles, frames that replace and frames that blend — and compares every frame with
// what Pillow decodes through libwebp's WebPAnimDecoder, byte for byte: the lossy
// file's colour too (ToNRGBA's fancy upsampling and fixed-point conversion).
func TestDecodeMatchesLibwebp(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "webp_ref.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Files map[string]struct {
			Width, Height int
			Durations     []int
			Frames        []string
		}
	}
	if err := json.Unmarshal(raw, &ref); err != nil {
		t.Fatal(err)
	}
	if len(ref.Files) != 5 {
		t.Fatalf("%d reference files", len(ref.Files))
	}
	for name, want := range ref.Files {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", name+".webp"))
			if err != nil {
				t.Fatal(err)
			}
			imgs, durations, err := Decode(data, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if len(imgs) != len(want.Frames) {
				t.Fatalf("%d frames, want %d", len(imgs), len(want.Frames))
			}
			for i, img := range imgs {
				got := nrgba(img)
				if durations[i] != want.Durations[i] {
					t.Errorf("frame %d: %d ms, want %d", i, durations[i], want.Durations[i])
				}
				sum := sha256.Sum256(got.Pix)
				if hex.EncodeToString(sum[:]) != want.Frames[i] {
					t.Errorf("frame %d differs from libwebp's", i)
				}
			}
		})
	}
}

// TestBlend checks BlendPixelNonPremult's integer arithmetic on hand-worked values.
func TestBlend(t *testing.T) {
	for _, tc := range []struct{ src, dst, want [4]byte }{
		{[4]byte{10, 20, 30, 0}, [4]byte{1, 2, 3, 4}, [4]byte{1, 2, 3, 4}},            // transparent: dst
		{[4]byte{10, 20, 30, 255}, [4]byte{1, 2, 3, 200}, [4]byte{10, 20, 30, 255}},   // opaque: kept, not blended
		{[4]byte{200, 0, 0, 3}, [4]byte{0, 0, 0, 0}, [4]byte{199, 0, 0, 3}},           // 2^24/3 truncates
		{[4]byte{255, 0, 0, 128}, [4]byte{0, 0, 255, 255}, [4]byte{127, 0, 126, 255}}, // 255·127·65793 >> 24 = 126
	} {
		got := tc.src
		blend(got[:], tc.dst[:])
		if got != tc.want {
			t.Errorf("blend(%v over %v) = %v, want %v", tc.src, tc.dst, got, tc.want)
		}
	}
}

// TestDecodeRefusesBadFiles: damaged containers give errors, never panics.
func TestDecodeRefusesBadFiles(t *testing.T) {
	frames := []Frame{{Image: picture(1, 8, 6, false), DurationMS: 10}, {Image: picture(2, 8, 6, false), DurationMS: 10}}
	good, err := EncodeAnimation(frames, Options{Lossless: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	outside := bytes.Clone(good)
	anmf := bytes.Index(outside, []byte("ANMF")) + 8
	put24(outside[anmf:], 4) // x = 8: past the 8-pixel canvas
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"truncated", good[:len(good)/2]},
		{"frame outside the canvas", outside},
		{"no frames", riff(append(vp8x(flagAnimation, 8, 6), chunk("ANIM", make([]byte, 6))...))},
		{"empty ANMF", riff(append(vp8x(flagAnimation, 8, 6), chunk("ANMF", make([]byte, 16))...))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := Decode(tc.data, 1<<20); err == nil {
				t.Fatal("decoded")
			}
		})
	}
}

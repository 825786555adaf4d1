package builtin

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"image"
	"testing"

	"github.com/forgeflow/forgeflow/nodes"
)

// rgbaImage is a w×h NRGBA image with every pixel (r, g, b, a).
func rgbaImage(w, h int, r, g, b, a uint8) *image.NRGBA {
	m := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < len(m.Pix); i += 4 {
		m.Pix[i], m.Pix[i+1], m.Pix[i+2], m.Pix[i+3] = r, g, b, a
	}
	return m
}

// pngParts returns the IHDR body and the zlib image data of m as an 8-bit RGBA PNG
// (colour type 6, filter 0 on every row), which every frame of a test APNG shares; Go's
// encoder would pick RGB for opaque frames.
func pngParts(t testing.TB, m *image.NRGBA) (ihdr, idat []byte) {
	t.Helper()
	w, h := m.Rect.Dx(), m.Rect.Dy()
	ihdr = make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], uint32(w))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(h))
	ihdr[8], ihdr[9] = 8, 6
	var raw bytes.Buffer
	for y := 0; y < h; y++ {
		raw.WriteByte(0)
		raw.Write(m.Pix[y*m.Stride : y*m.Stride+4*w])
	}
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return ihdr, z.Bytes()
}

type apngTestFrame struct {
	img            *image.NRGBA
	x, y           int
	dispose, blend byte
}

// buildAPNG writes an APNG of the given canvas size; when def is nil the first frame is
// also the default image, else def is a default image outside the animation.
func buildAPNG(t testing.TB, w, h int, def *image.NRGBA, frames []apngTestFrame) []byte {
	t.Helper()
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	hdr, _ := pngParts(t, rgbaImage(w, h, 0, 0, 0, 1))
	writePNGChunk(&b, "IHDR", hdr)
	actl := make([]byte, 8)
	binary.BigEndian.PutUint32(actl, uint32(len(frames)))
	writePNGChunk(&b, "acTL", actl)
	seq := uint32(0)
	fctl := func(f apngTestFrame) {
		body := make([]byte, 26)
		be := binary.BigEndian
		be.PutUint32(body[0:], seq)
		be.PutUint32(body[4:], uint32(f.img.Rect.Dx()))
		be.PutUint32(body[8:], uint32(f.img.Rect.Dy()))
		be.PutUint32(body[12:], uint32(f.x))
		be.PutUint32(body[16:], uint32(f.y))
		body[24], body[25] = f.dispose, f.blend
		writePNGChunk(&b, "fcTL", body)
		seq++
	}
	if def != nil {
		_, idat := pngParts(t, def)
		writePNGChunk(&b, "IDAT", idat)
	}
	for i, f := range frames {
		fctl(f)
		_, data := pngParts(t, f.img)
		if i == 0 && def == nil {
			writePNGChunk(&b, "IDAT", data)
			continue
		}
		body := make([]byte, 4, 4+len(data))
		binary.BigEndian.PutUint32(body, seq)
		seq++
		writePNGChunk(&b, "fdAT", append(body, data...))
	}
	writePNGChunk(&b, "IEND", nil)
	return b.Bytes()
}

func TestLoadImageAPNG(t *testing.T) {
	opts, d := loadOpts(t)
	red := rgbaImage(3, 2, 255, 0, 0, 254)
	green := rgbaImage(1, 1, 0, 255, 0, 255)
	blue := rgbaImage(1, 1, 0, 0, 255, 255)
	// pixel helper: RGB of pixel i of batch item b, and its mask value
	px := func(im *Image, b, i int) [3]float32 {
		f := im.Frame(b)
		return [3]float32{f[3*i], f[3*i+1], f[3*i+2]}
	}
	R, G, B, K := [3]float32{1, 0, 0}, [3]float32{0, 1, 0}, [3]float32{0, 0, 1}, [3]float32{}

	t.Run("default image is the first frame", func(t *testing.T) {
		writeInput(t, d.Input, "anim1.png", buildAPNG(t, 3, 2, nil, []apngTestFrame{
			{img: red}, {img: green, x: 2, y: 1},
		}))
		im, mask := loadImage(t, opts, "anim1.png")
		checkShape(t, im.Shape(), []int{2, 2, 3, 3})
		checkShape(t, mask.Shape(), []int{2, 2, 3})
		if px(im, 0, 5) != R || px(im, 1, 5) != G || px(im, 1, 0) != R {
			t.Errorf("frames: %v %v %v", px(im, 0, 5), px(im, 1, 5), px(im, 1, 0))
		}
		if got := mask.Plane(1)[5]; got != 0 {
			t.Errorf("opaque green pixel mask = %v", got)
		}
		if got, want := mask.Plane(0)[0], 1-float32(254)/255; got != want {
			t.Errorf("red pixel mask = %v, want %v", got, want)
		}
	})
	t.Run("separate default image, disposal", func(t *testing.T) {
		writeInput(t, d.Input, "anim2.png", buildAPNG(t, 3, 2, red, []apngTestFrame{
			{img: green, x: 0, y: 0, dispose: 1}, // cleared to transparent black afterwards
			{img: blue, x: 1, y: 0, dispose: 2},  // restored afterwards
			{img: blue, x: 2, y: 1},
		}))
		im, mask := loadImage(t, opts, "anim2.png")
		checkShape(t, im.Shape(), []int{4, 2, 3, 3})
		want := [][6][3]float32{
			{R, R, R, R, R, R}, // the default image
			{G, K, K, K, K, K}, // green on the empty canvas
			{K, B, K, K, K, K}, // green disposed; blue at (1,0)
			{K, K, K, K, K, B}, // blue at (1,0) restored away; blue at (2,1)
		}
		for b, frame := range want {
			for i, w := range frame {
				if got := px(im, b, i); got != w {
					t.Errorf("frame %d pixel %d = %v, want %v", b, i, got, w)
				}
			}
		}
		if mask.Plane(1)[1] != 1 || mask.Plane(1)[0] != 0 {
			t.Errorf("frame 1 mask %v, want 0 under green and 1 on the empty canvas", mask.Plane(1))
		}
	})
	t.Run("blend over", func(t *testing.T) {
		half := rgbaImage(1, 1, 0, 0, 255, 128)
		writeInput(t, d.Input, "anim3.png", buildAPNG(t, 1, 1, nil, []apngTestFrame{
			{img: rgbaImage(1, 1, 255, 0, 0, 255)}, {img: half, blend: 1},
		}))
		im, _ := loadImage(t, opts, "anim3.png")
		got := px(im, 1, 0)
		// 50% blue over opaque red: about (127, 0, 128)/255.
		if !near(float64(got[0]), 127.0/255, 1.5/255) || got[1] != 0 || !near(float64(got[2]), 128.0/255, 1.5/255) {
			t.Errorf("blended pixel %v", got)
		}
	})
	t.Run("frame outside the canvas", func(t *testing.T) {
		writeInput(t, d.Input, "bad.png", buildAPNG(t, 2, 2, nil, []apngTestFrame{
			{img: rgbaImage(2, 2, 0, 0, 0, 1)}, {img: green, x: 2, y: 0},
		}))
		_, err := run(t, opts, nil, "LoadImage", nodes.Inputs{"image": "bad.png"})
		wantErr(t, err, "outside")
	})
}

package builtin

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/nodes"
)

// Test images are built here with Go's encoders (fixed pixel values), never copied in.

func encodePNGImage(t *testing.T, m image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, m); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// withPNGChunk inserts a chunk right after IHDR.
func withPNGChunk(data []byte, typ string, body []byte) []byte {
	var c bytes.Buffer
	binary.Write(&c, binary.BigEndian, uint32(len(body)))
	c.WriteString(typ)
	c.Write(body)
	crc := crc32.NewIEEE()
	crc.Write([]byte(typ))
	crc.Write(body)
	binary.Write(&c, binary.BigEndian, crc.Sum32())
	at := 8 + 25 // signature + IHDR (4 length + 4 type + 13 data + 4 crc)
	out := append([]byte{}, data[:at]...)
	out = append(out, c.Bytes()...)
	return append(out, data[at:]...)
}

// exifOrientationBlock is a minimal big-endian TIFF/EXIF block holding Orientation = o.
func exifOrientationBlock(o uint16) []byte {
	var b bytes.Buffer
	b.WriteString("MM\x00\x2a")
	binary.Write(&b, binary.BigEndian, uint32(8))       // IFD0 offset
	binary.Write(&b, binary.BigEndian, uint16(1))       // one entry
	binary.Write(&b, binary.BigEndian, uint16(0x0112))  // Orientation
	binary.Write(&b, binary.BigEndian, uint16(3))       // SHORT
	binary.Write(&b, binary.BigEndian, uint32(1))       // count
	binary.Write(&b, binary.BigEndian, [2]uint16{o, 0}) // value, padded
	binary.Write(&b, binary.BigEndian, uint32(0))       // no next IFD
	return b.Bytes()
}

func writeInput(t *testing.T, dir, name string, data []byte) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func loadOpts(t *testing.T) (Options, nodes.Dirs) {
	t.Helper()
	opts, d := saveOpts(t)
	for _, dir := range []string{d.Input, d.Output, d.Temp} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return opts, d
}

func loadImage(t *testing.T, opts Options, name string) (*Image, *Mask) {
	t.Helper()
	res, err := run(t, opts, nil, "LoadImage", nodes.Inputs{"image": name})
	if err != nil {
		t.Fatal(err)
	}
	return res.Outputs[0].(*Image), res.Outputs[1].(*Mask)
}

func TestLoadImageRGBA(t *testing.T) {
	opts, dirs := loadOpts(t)
	m := image.NewNRGBA(image.Rect(0, 0, 2, 1))
	copy(m.Pix, []uint8{10, 20, 30, 255, 200, 100, 50, 0})
	writeInput(t, dirs.Input, "rgba.png", encodePNGImage(t, m))
	im, mask := loadImage(t, opts, "rgba.png")
	checkShape(t, im.Shape(), []int{1, 1, 2, 3})
	checkPix(t, im.Pix, []float32{10. / 255, 20. / 255, 30. / 255, 200. / 255, 100. / 255, 50. / 255}, 0)
	checkShape(t, mask.Shape(), []int{1, 1, 2})
	checkPix(t, mask.Pix, []float32{0, 1}, 0)
}

func TestLoadImageWithoutAlpha(t *testing.T) {
	opts, dirs := loadOpts(t)
	m := image.NewRGBA(image.Rect(0, 0, 3, 2))
	for i := range m.Pix {
		m.Pix[i] = 255
	}
	m.Pix[0] = 51
	writeInput(t, dirs.Input, "sub/rgb.png", encodePNGImage(t, m))
	im, mask := loadImage(t, opts, "sub/rgb.png")
	checkShape(t, im.Shape(), []int{1, 2, 3, 3})
	if im.Pix[0] != 0.2 || im.Pix[1] != 1 {
		t.Errorf("first pixel %v", im.Pix[:3])
	}
	// ComfyUI returns a 64x64 zero mask for images without alpha.
	checkShape(t, mask.Shape(), []int{1, 64, 64})
	checkPix(t, mask.Pix, make([]float32, 64*64), 0)
}

func TestLoadImagePaletteTransparency(t *testing.T) {
	opts, dirs := loadOpts(t)
	pal := color.Palette{color.NRGBA{255, 0, 0, 255}, color.NRGBA{0, 0, 255, 0}}
	m := image.NewPaletted(image.Rect(0, 0, 2, 1), pal)
	m.Pix[1] = 1
	writeInput(t, dirs.Input, "pal.png", encodePNGImage(t, m))
	im, mask := loadImage(t, opts, "pal.png")
	checkPix(t, im.Pix, []float32{1, 0, 0, 0, 0, 1}, 0) // palette RGB kept under alpha 0
	checkPix(t, mask.Pix, []float32{0, 1}, 0)
}

func TestLoadImage16BitGrey(t *testing.T) {
	opts, dirs := loadOpts(t)
	m := image.NewGray16(image.Rect(0, 0, 2, 1))
	m.SetGray16(0, 0, color.Gray16{Y: 0x8000})
	m.SetGray16(1, 0, color.Gray16{Y: 0xFFFF})
	writeInput(t, dirs.Input, "g16.png", encodePNGImage(t, m))
	im, _ := loadImage(t, opts, "g16.png")
	// ComfyUI's mode-"I" path: value / 255 (truncated), clipped to 255.
	checkPix(t, im.Pix, []float32{128. / 255, 128. / 255, 128. / 255, 1, 1, 1}, 0)
}

// The 3x2 source used for the orientation table: pixel values A..F in the red channel.
//
//	A B C
//	D E F
func TestLoadImageEXIFOrientation(t *testing.T) {
	const A, B, C, D, E, F = 10, 20, 30, 40, 50, 60
	opts, d := loadOpts(t)
	src := image.NewNRGBA(image.Rect(0, 0, 3, 2))
	for i, v := range []uint8{A, B, C, D, E, F} {
		src.Pix[4*i], src.Pix[4*i+3] = v, 255
	}
	src.Pix[4*5+3] = 0 // F transparent: an RGBA file, so the mask follows the rotation too
	base := encodePNGImage(t, src)
	tests := []struct {
		orientation uint16
		w, h        int
		want        []uint8 // red channel, row by row
	}{
		{1, 3, 2, []uint8{A, B, C, D, E, F}},
		{2, 3, 2, []uint8{C, B, A, F, E, D}}, // mirrored
		{3, 3, 2, []uint8{F, E, D, C, B, A}}, // rotated 180
		{4, 3, 2, []uint8{D, E, F, A, B, C}}, // flipped
		{5, 2, 3, []uint8{A, D, B, E, C, F}}, // transposed
		{6, 2, 3, []uint8{D, A, E, B, F, C}}, // rotated 90 clockwise
		{7, 2, 3, []uint8{F, C, E, B, D, A}}, // transversed
		{8, 2, 3, []uint8{C, F, B, E, A, D}}, // rotated 90 counter-clockwise
	}
	for _, tc := range tests {
		t.Run(string(rune('0'+tc.orientation)), func(t *testing.T) {
			name := "o" + string(rune('0'+tc.orientation)) + ".png"
			writeInput(t, d.Input, name, withPNGChunk(base, "eXIf", exifOrientationBlock(tc.orientation)))
			im, mask := loadImage(t, opts, name)
			checkShape(t, im.Shape(), []int{1, tc.h, tc.w, 3})
			checkShape(t, mask.Shape(), []int{1, tc.h, tc.w})
			for i, v := range tc.want {
				if got := im.Pix[3*i]; got != float32(v)/255 {
					t.Errorf("pixel %d = %v, want %v", i, got*255, v)
				}
				if got, want := mask.Pix[i], float32(0); v == F {
					if got != 1 {
						t.Errorf("mask at F (pixel %d) = %v, want 1", i, got)
					}
				} else if got != want {
					t.Errorf("mask at pixel %d = %v, want 0", i, got)
				}
			}
		})
	}
}

func TestLoadImageJPEGOrientation(t *testing.T) {
	opts, d := loadOpts(t)
	m := image.NewRGBA(image.Rect(0, 0, 16, 8))
	for y := 0; y < 8; y++ {
		for x := 0; x < 16; x++ {
			c := color.RGBA{255, 0, 0, 255}
			if x >= 8 {
				c = color.RGBA{0, 0, 255, 255}
			}
			m.Set(x, y, c)
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, m, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	exif := append([]byte("Exif\x00\x00"), exifOrientationBlock(6)...)
	app1 := []byte{0xFF, 0xE1, byte((len(exif) + 2) >> 8), byte(len(exif) + 2)}
	data := append(append(append([]byte{}, buf.Bytes()[:2]...), append(app1, exif...)...), buf.Bytes()[2:]...)
	writeInput(t, d.Input, "photo.jpg", data)
	im, mask := loadImage(t, opts, "photo.jpg")
	checkShape(t, im.Shape(), []int{1, 16, 8, 3})
	checkShape(t, mask.Shape(), []int{1, 64, 64})
	// Rotated 90° clockwise: the left (red) half is now on top.
	top, bottom := im.Pix[(2*8+4)*3:], im.Pix[(13*8+4)*3:]
	if top[0] < 0.9 || top[2] > 0.1 || bottom[0] > 0.1 || bottom[2] < 0.9 {
		t.Errorf("top %v bottom %v, want red over blue", top[:3], bottom[:3])
	}
}

func TestLoadImageGIFFrames(t *testing.T) {
	opts, d := loadOpts(t)
	pal := color.Palette{color.RGBA{255, 0, 0, 255}, color.RGBA{0, 255, 0, 255}, color.RGBA{0, 0, 255, 255}}
	frame := func(idx uint8, r image.Rectangle) *image.Paletted {
		p := image.NewPaletted(r, pal)
		for i := range p.Pix {
			p.Pix[i] = idx
		}
		return p
	}
	g := &gif.GIF{
		Image:    []*image.Paletted{frame(0, image.Rect(0, 0, 2, 2)), frame(1, image.Rect(1, 0, 2, 2)), frame(2, image.Rect(0, 0, 2, 2))},
		Delay:    []int{0, 0, 0},
		Disposal: []byte{gif.DisposalNone, gif.DisposalNone, gif.DisposalNone},
		Config:   image.Config{ColorModel: pal, Width: 2, Height: 2},
	}
	var buf bytes.Buffer
	if err := gif.EncodeAll(&buf, g); err != nil {
		t.Fatal(err)
	}
	writeInput(t, d.Input, "anim.gif", buf.Bytes())
	im, mask := loadImage(t, opts, "anim.gif")
	checkShape(t, im.Shape(), []int{3, 2, 2, 3})
	checkShape(t, mask.Shape(), []int{3, 64, 64})
	red, green, blue := []float32{1, 0, 0}, []float32{0, 1, 0}, []float32{0, 0, 1}
	want := [][]float32{red, red, red, red, red, green, red, green, blue, blue, blue, blue}
	for i, w := range want {
		checkPix(t, im.Pix[3*i:3*i+3], w, 0)
	}
}

func TestLoadImageMaskChannels(t *testing.T) {
	opts, d := loadOpts(t)
	m := image.NewNRGBA(image.Rect(0, 0, 1, 1))
	copy(m.Pix, []uint8{51, 102, 153, 204})
	writeInput(t, d.Input, "px.png", encodePNGImage(t, m))
	rgb := image.NewRGBA(image.Rect(0, 0, 2, 1))
	for i := range rgb.Pix {
		rgb.Pix[i] = 255
	}
	writeInput(t, d.Input, "opaque.png", encodePNGImage(t, rgb))
	tests := []struct {
		file, channel string
		shape         []int
		want          []float32
	}{
		{"px.png", "alpha", []int{1, 1, 1}, []float32{1 - float32(204)/255}},
		{"px.png", "red", []int{1, 1, 1}, []float32{0.2}},
		{"px.png", "green", []int{1, 1, 1}, []float32{0.4}},
		{"px.png", "blue", []int{1, 1, 1}, []float32{0.6}},
		{"opaque.png", "alpha", []int{1, 1, 2}, []float32{0, 0}}, // converted to RGBA: alpha 255
	}
	for _, tc := range tests {
		t.Run(tc.file+"/"+tc.channel, func(t *testing.T) {
			res, err := run(t, opts, nil, "LoadImageMask", nodes.Inputs{"image": tc.file, "channel": tc.channel})
			if err != nil {
				t.Fatal(err)
			}
			mask := res.Outputs[0].(*Mask)
			checkShape(t, mask.Shape(), tc.shape)
			checkPix(t, mask.Pix, tc.want, 0)
		})
	}
}

func TestLoadImageRefusesBadNames(t *testing.T) {
	opts, d := loadOpts(t)
	secret := filepath.Join(filepath.Dir(d.Input), "secret.png")
	png1 := encodePNGImage(t, image.NewGray(image.Rect(0, 0, 1, 1)))
	if err := os.WriteFile(secret, png1, 0o644); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(filepath.Dir(d.Input), "elsewhere")
	writeInput(t, outside, "x.png", png1)
	if err := os.Symlink(outside, filepath.Join(d.Input, "link")); err != nil {
		t.Fatal(err)
	}
	writeInput(t, d.Output, "out.png", png1)
	writeInput(t, d.Input, "notanimage.png", []byte("hello"))
	r := newTestRegistry(t, opts)
	for _, class := range []string{"LoadImage", "LoadImageMask"} {
		n, _ := r.Lookup(class)
		v := n.(nodes.InputValidator)
		for _, name := range []string{"../secret.png", secret, "sub/../../secret.png", "link/x.png", "missing.png", "",
			"../secret.png [input]", "../input/../secret.png [output]", "..\\secret.png", "a\x00.png"} {
			t.Run(class+"/"+name, func(t *testing.T) {
				err := v.ValidateInputs(&nodes.Env{}, nodes.Inputs{"image": name, "channel": "alpha"})
				var inv *InvalidFileError
				if !errors.As(err, &inv) || err.Error() != "Invalid image file: "+name {
					t.Fatalf("ValidateInputs(%q) = %v, want ComfyUI's invalid file error", name, err)
				}
				if _, err := n.Run(t.Context(), &nodes.Env{}, nodes.Inputs{"image": name, "channel": "alpha"}); err == nil {
					t.Fatalf("Run(%q) read the file", name)
				}
			})
		}
		t.Run(class+"/annotated output", func(t *testing.T) {
			if err := v.ValidateInputs(&nodes.Env{}, nodes.Inputs{"image": "out.png [output]"}); err != nil {
				t.Fatal(err)
			}
		})
		t.Run(class+"/not an image", func(t *testing.T) {
			_, err := n.Run(t.Context(), &nodes.Env{}, nodes.Inputs{"image": "notanimage.png", "channel": "alpha"})
			wantErr(t, err, "cannot identify image file")
		})
	}
}

func TestLoadImageIsChanged(t *testing.T) {
	opts, d := loadOpts(t)
	r := newTestRegistry(t, opts)
	n, _ := r.Lookup("LoadImage")
	ch := n.(nodes.IsChanger)
	writeInput(t, d.Input, "a.png", encodePNGImage(t, image.NewGray(image.Rect(0, 0, 1, 1))))
	h1, err := ch.IsChanged(&nodes.Env{}, nodes.Inputs{"image": "a.png"})
	if err != nil {
		t.Fatal(err)
	}
	h2, _ := ch.IsChanged(&nodes.Env{}, nodes.Inputs{"image": "a.png"})
	writeInput(t, d.Input, "a.png", encodePNGImage(t, image.NewGray(image.Rect(0, 0, 2, 1))))
	h3, _ := ch.IsChanged(&nodes.Env{}, nodes.Inputs{"image": "a.png"})
	if h1 != h2 || h1 == h3 || len(h1) != 64 {
		t.Fatalf("hashes %q %q %q: want a stable sha256 that follows the content", h1, h2, h3)
	}
	if _, err := ch.IsChanged(&nodes.Env{}, nodes.Inputs{"image": "../a.png"}); err == nil {
		t.Fatal("IsChanged hashed a file outside the input folder")
	}
}

func TestSaveThenLoadRoundTrip(t *testing.T) {
	opts, d := loadOpts(t)
	src := img(1, 1, 2, 4, 0.2, 0.4, 0.6, 1, 1, 0.8, 0, 0.2)
	res, err := run(t, opts, nil, "SaveImage", nodes.Inputs{"images": src, "filename_prefix": "rt"})
	if err != nil {
		t.Fatal(err)
	}
	name := filenames(t, res)[0] + " [output]"
	im, mask := loadImage(t, opts, name)
	checkPix(t, im.Pix, []float32{0.2, 0.4, 0.6, 1, 0.8, 0}, 1.0/255)
	checkPix(t, mask.Pix, []float32{0, 0.8}, 1.0/255)
	if _, err := os.Stat(filepath.Join(d.Output, filenames(t, res)[0])); err != nil {
		t.Fatal(err)
	}
}

package builtin

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/nodes"
)

func benchNode(b *testing.B, opts Options, class string, in nodes.Inputs, bytesPerOp int64) {
	b.Helper()
	r := nodes.NewRegistry()
	if err := Register(r, opts); err != nil {
		b.Fatal(err)
	}
	n, err := r.Lookup(class)
	if err != nil {
		b.Fatal(err)
	}
	env := &nodes.Env{}
	b.SetBytes(bytesPerOp)
	b.ResetTimer()
	for b.Loop() {
		if _, err := n.Run(context.Background(), env, in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkImageBlur measures the separable reflect-padded gaussian at small and large
// radii on a 512x512 RGB image.
func BenchmarkImageBlur(b *testing.B) {
	im := ramp(1, 512, 512, 3)
	for _, r := range []int{1, 15, 31} {
		b.Run(fmt.Sprintf("f32/512x512x3/r%d", r), func(b *testing.B) {
			benchNode(b, Options{}, "ImageBlur", nodes.Inputs{"image": im, "blur_radius": int64(r), "sigma": 1.0}, int64(4*len(im.Pix)))
		})
	}
}

func BenchmarkImageSharpen(b *testing.B) {
	im := ramp(1, 512, 512, 3)
	benchNode(b, Options{}, "ImageSharpen", nodes.Inputs{"image": im, "sharpen_radius": int64(1), "sigma": 1.0, "alpha": 1.0}, int64(4*len(im.Pix)))
}

// BenchmarkSaveImage measures PNG encoding plus the file write of SaveImage.
func BenchmarkSaveImage(b *testing.B) {
	dir := b.TempDir()
	im := ramp(1, 512, 512, 3)
	benchNode(b, Options{Dirs: nodes.Dirs{Output: dir}}, "SaveImage", nodes.Inputs{"images": im, "filename_prefix": "bench"}, int64(len(im.Pix)))
}

// BenchmarkLoadImage measures reading and decoding a 512x512 RGBA PNG.
func BenchmarkLoadImage(b *testing.B) {
	dir := b.TempDir()
	m := image.NewNRGBA(image.Rect(0, 0, 512, 512))
	for i := range m.Pix {
		m.Pix[i] = uint8(i * 7)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, m); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "in.png"), buf.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}
	benchNode(b, Options{Dirs: nodes.Dirs{Input: dir}}, "LoadImage", nodes.Inputs{"image": "in.png"}, int64(len(m.Pix)))
}

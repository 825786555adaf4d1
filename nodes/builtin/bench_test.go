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

	"github.com/forgeflow/forgeflow/diffusion/sd"
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

// BenchmarkImageQuantize measures Pillow's median cut, palette mapping and dithering on a
// 512x512 image with 90 000+ colours (the histogram drops a bit per channel).
func BenchmarkImageQuantize(b *testing.B) {
	im := &Image{Batch: 1, Height: 512, Width: 512, Channels: 3, Pix: make([]float32, 512*512*3)}
	for p := 0; p < 512*512; p++ {
		for c, v := range [3]int{p % 256, (p / 256) % 256, (p*7 + p/97) % 256} {
			im.Pix[3*p+c] = float32(v) / 255
		}
	}
	for _, d := range []string{"none", "floyd-steinberg", "bayer-4"} {
		b.Run("u8/512x512x3/256/"+d, func(b *testing.B) {
			benchNode(b, Options{}, "ImageQuantize", nodes.Inputs{"image": im, "colors": int64(256), "dither": d}, int64(512*512*3))
		})
	}
}

// BenchmarkLatentOperationSharpen measures the default sharpen operation (radius 9, a
// 19x19 kernel, direct convolution) on a 1x4x128x128 latent (a 1024² SD image).
func BenchmarkLatentOperationSharpen(b *testing.B) {
	rt, err := cpuRuntime()
	if err != nil {
		b.Fatal(err)
	}
	v := make([]float32, 4*128*128)
	for i := range v {
		v[i] = float32((i*37)%101-50) / 16
	}
	s, err := rt.FromFloat32(v, 1, 4, 128, 128)
	if err != nil {
		b.Fatal(err)
	}
	op := latentSharpen{radius: 9, sigma: 1, alpha: 0.1}
	benchNode(b, Options{Runtime: rt}, "LatentApplyOperation", nodes.Inputs{"samples": &sd.Latent{Samples: s}, "operation": op}, int64(4*len(v)))
}

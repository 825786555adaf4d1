package upscale

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// BenchmarkUpscale times ImageUpscaleWithModel's run (one 512² tile, as ComfyUI takes a
// 512² image whole) of full-size networks with random weights made in memory, and
// reports the convolutions' GFLOP/s. The 4× RRDB at 512² is about 9.4 TFLOP: run it
// with -benchtime 1x.
func BenchmarkUpscale(b *testing.B) {
	for _, c := range []struct {
		name string
		spec RandomSpec
		size int
	}{
		{"esrgan4x-23b", ESRGANx4(), 128},
		{"esrgan4x-23b", ESRGANx4(), 512},
		{"compact4x-16c", RandomSpec{Arch: "Compact", In: 3, Out: 3, Features: 64, Blocks: 16, Scale: 4}, 512},
		{"span4x-48f", RandomSpec{Arch: "SPAN", In: 3, Out: 3, Features: 48, Scale: 4}, 512},
	} {
		b.Run(fmt.Sprintf("f32/%s/%dx%d", c.name, c.size, c.size), func(b *testing.B) {
			rt := testRuntime(b)
			var buf bytes.Buffer
			if err := WriteRandom(&buf, c.spec, 1, weights.F32); err != nil {
				b.Fatal(err)
			}
			f, err := tensorfile.OpenBytes(c.name, buf.Bytes())
			if err != nil {
				b.Fatal(err)
			}
			m, err := LoadFile(rt, f)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			img := randImage(1, 1, 3, c.size, c.size)
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if _, err := m.Upscale(context.Background(), rt, img, TileOptions{}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(m.FLOPs(c.size, c.size)*float64(b.N)/time.Since(start).Seconds()/1e9, "GFLOP/s")
		})
	}
}

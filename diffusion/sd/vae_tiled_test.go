package sd

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/vae"
)

func TestFeatherMask(t *testing.T) {
	tests := []struct {
		n, feather int
		want       []float32
	}{
		{5, 2, []float32{0.5, 1, 1, 1, 0.5}},
		{6, 3, []float32{1.0 / 3, 2.0 / 3, 1, 1, 2.0 / 3, 1.0 / 3}},
		// Ramps from both edges meet: the middle index gets both factors.
		{3, 2, []float32{0.5, 1, 0.5}},
		{4, 3, []float32{1.0 / 3, 2.0 / 3, 2.0 / 3, 1.0 / 3}},
		{4, 4, []float32{1, 1, 1, 1}}, // feather ≥ n: no ramp
		{4, 0, []float32{1, 1, 1, 1}},
	}
	for _, tc := range tests {
		m := featherMask(tc.n, tc.feather)
		for i, w := range tc.want {
			if g := m[i].apply(1); math.Abs(float64(g-w)) > 1e-7 {
				t.Errorf("featherMask(%d, %d)[%d] = %v, want %v", tc.n, tc.feather, i, g, w)
			}
		}
	}
}

func TestTilePositions(t *testing.T) {
	tests := []struct {
		n, tile, overlap int
		want             []int
	}{
		{64, 64, 8, []int{0}},
		{100, 64, 8, []int{0, 56}},
		{128, 32, 8, []int{0, 24, 48, 72, 96}},
	}
	for _, tc := range tests {
		got, err := tilePositions(tc.n, tc.tile, tc.overlap)
		if err != nil || len(got) != len(tc.want) {
			t.Fatalf("tilePositions(%d, %d, %d) = %v, %v; want %v", tc.n, tc.tile, tc.overlap, got, err, tc.want)
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Fatalf("tilePositions(%d, %d, %d) = %v, want %v", tc.n, tc.tile, tc.overlap, got, tc.want)
			}
		}
	}
	if _, err := tilePositions(100, 8, 8); err == nil {
		t.Error("a tile no larger than the overlap was accepted")
	}
}

// TestTiledScaleLocalFunction runs the tiler with functions whose output at a point
// depends only on that point (nearest 2× upscale; 2×2 average pooling): the blended
// tiles must then equal the function applied to the whole input.
func TestTiledScaleLocalFunction(t *testing.T) {
	const c, h, w = 2, 20, 28
	in := ckRandVals(3, c*h*w)
	up := func(x []float32, th, tw int) ([]float32, int, int, error) {
		out := make([]float32, c*4*th*tw)
		for ch := 0; ch < c; ch++ {
			for y := 0; y < 2*th; y++ {
				for xx := 0; xx < 2*tw; xx++ {
					out[(ch*2*th+y)*2*tw+xx] = x[(ch*th+y/2)*tw+xx/2]
				}
			}
		}
		return out, 2 * th, 2 * tw, nil
	}
	pool := func(x []float32, th, tw int) ([]float32, int, int, error) {
		oh, ow := th/2, tw/2
		out := make([]float32, c*oh*ow)
		for ch := 0; ch < c; ch++ {
			for y := 0; y < oh; y++ {
				for xx := 0; xx < ow; xx++ {
					s := x[(ch*th+2*y)*tw+2*xx] + x[(ch*th+2*y)*tw+2*xx+1] + x[(ch*th+2*y+1)*tw+2*xx] + x[(ch*th+2*y+1)*tw+2*xx+1]
					out[(ch*oh+y)*ow+xx] = s / 4
				}
			}
		}
		return out, oh, ow, nil
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name         string
		fn           tileFunc
		scale        float64
		tile, overl  int
		wantH, wantW int
	}{
		{"upscale", up, 2, 8, 2, 2 * h, 2 * w},
		{"pool", pool, 0.5, 8, 4, h / 2, w / 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, _, _, _ := tc.fn(in, h, w)
			got, oh, ow, err := tiledScale(ctx, in, c, h, w, tc.tile, tc.tile+4, tc.overl, tc.scale, c, tc.fn)
			if err != nil {
				t.Fatal(err)
			}
			if oh != tc.wantH || ow != tc.wantW {
				t.Fatalf("%dx%d, want %dx%d", ow, oh, tc.wantW, tc.wantH)
			}
			for i := range want {
				if d := math.Abs(float64(got[i] - want[i])); d > 1e-5 {
					t.Fatalf("[%d] = %v, want %v", i, got[i], want[i])
				}
			}
		})
	}
}

// TestTiledVAE compares tiled decode and encode with the whole-image ones on a tiny
// VAE: equal when one tile covers the input, close (the networks see less context at
// the tile borders) when several do.
func TestTiledVAE(t *testing.T) {
	rt := ckRuntime(t)
	path := filepath.Join(t.TempDir(), "sd1.safetensors")
	writeSpec(t, path, tinySD1(21))
	ck, err := LoadCheckpoint(rt, path, LoadOptions{SkipModel: true, SkipCLIP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	ctx := context.Background()
	lat, _ := rt.FromFloat32(ckRandVals(22, 4*24*20), 1, 4, 24, 20)
	defer lat.Release()
	full, err := ck.VAE.Decode(ctx, lat)
	if err != nil {
		t.Fatal(err)
	}
	meanDiff := func(a, b []float32) (mean, maxd float64) {
		for i := range a {
			d := math.Abs(float64(a[i] - b[i]))
			mean += d
			maxd = max(maxd, d)
		}
		return mean / float64(len(a)), maxd
	}
	one, err := ck.VAE.DecodeTiled(ctx, lat, 64, 64, 4)
	if err != nil {
		t.Fatal(err)
	}
	if _, m := meanDiff(one.Pix, full.Pix); m > 1e-6 {
		t.Errorf("one-tile decode differs from the full decode by %g", m)
	}
	tiled, err := ck.VAE.DecodeTiled(ctx, lat, 12, 12, 4)
	if err != nil {
		t.Fatal(err)
	}
	if tiled.Height != full.Height || tiled.Width != full.Width {
		t.Fatalf("tiled %dx%d, full %dx%d", tiled.Width, tiled.Height, full.Width, full.Height)
	}
	// The scale of "different": the full decode of another latent.
	lat2, _ := rt.FromFloat32(ckRandVals(23, 4*24*20), 1, 4, 24, 20)
	defer lat2.Release()
	other, err := ck.VAE.Decode(ctx, lat2)
	if err != nil {
		t.Fatal(err)
	}
	mean, _ := meanDiff(tiled.Pix, full.Pix)
	unrelated, _ := meanDiff(other.Pix, full.Pix)
	t.Logf("tiled decode: mean |Δ| %.4f against the full decode; another latent's decode: %.4f", mean, unrelated)
	if mean > unrelated/4 {
		t.Errorf("tiled decode is %.4f off the full decode on average, a quarter of an unrelated image's %.4f", mean, unrelated)
	}

	img := &vae.Image{Batch: 1, Height: 48, Width: 40, Channels: 3, Pix: full.Pix}
	zf, err := ck.VAE.Encode(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	defer zf.Release()
	zt, err := ck.VAE.EncodeTiled(ctx, img, 24, 24, 8)
	if err != nil {
		t.Fatal(err)
	}
	defer zt.Release()
	a, _ := zf.Float32()
	b, _ := zt.Float32()
	if len(a) != len(b) {
		t.Fatalf("tiled latent %v, full %v", zt.Shape(), zf.Shape())
	}
	img2 := &vae.Image{Batch: 1, Height: 48, Width: 40, Channels: 3, Pix: other.Pix}
	zo, err := ck.VAE.Encode(ctx, img2)
	if err != nil {
		t.Fatal(err)
	}
	defer zo.Release()
	c, _ := zo.Float32()
	mean, _ = meanDiff(a, b)
	unrelated, _ = meanDiff(a, c)
	t.Logf("tiled encode: mean |Δ| %.4f against the full encode; another image's: %.4f", mean, unrelated)
	if mean > unrelated/4 {
		t.Errorf("tiled encode is %.4f off the full encode on average, a quarter of an unrelated image's %.4f", mean, unrelated)
	}
	if _, err := ck.VAE.DecodeTiled(ctx, lat, 4, 4, 4); err == nil {
		t.Error("tiles no larger than the overlap were accepted")
	}
}

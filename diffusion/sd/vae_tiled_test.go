package sd

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/vae"
)

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

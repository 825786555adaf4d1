package sd

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/vae"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/detect"
)

// TestLoadFluxVAE loads 16-channel VAEs without quant convolutions as VAELoader finds
// them: Flux's ae.safetensors layout (bare encoder.*/decoder.* keys) and under the
// "vae." prefix of Flux single-file checkpoints; both encode and decode.
func TestLoadFluxVAE(t *testing.T) {
	rt := ckRuntime(t)
	dir := t.TempDir()
	tiny := RandomVAE{Ch: 32, Mult: []int{1, 2}, ResBlocks: 1, Latent: 16, NoQuantConv: true}
	for _, prefix := range []string{"", "vae."} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			path := filepath.Join(dir, prefix+"ae.safetensors")
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			bw := bufio.NewWriter(f)
			if err := WriteRandomVAE(bw, tiny, prefix, 5, weights.F32); err != nil {
				t.Fatal(err)
			}
			bw.Flush()
			f.Close()
			ck, err := LoadVAE(rt, path)
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			m := ck.VAE.Model
			if m.QuantConv.Weight != nil || m.PostQuantConv.Weight != nil || m.LatentChannels() != 16 {
				t.Fatalf("quant convs %v %v, %d latent channels", m.QuantConv.Weight, m.PostQuantConv.Weight, m.LatentChannels())
			}
			if ck.VAE.Latent != FluxLatent {
				t.Errorf("latent format %v, want Flux's", ck.VAE.Latent)
			}
			img := &vae.Image{Batch: 1, Height: 16, Width: 12, Channels: 3, Pix: ckRandVals(6, 16*12*3)}
			for i, v := range img.Pix {
				img.Pix[i] = min(max(v/4+0.5, 0), 1)
			}
			z, err := ck.VAE.Encode(context.Background(), img)
			if err != nil {
				t.Fatal(err)
			}
			defer z.Release()
			ckShape(t, "latent", z, 1, 16, 8, 6)
			back, err := ck.VAE.Decode(context.Background(), z)
			if err != nil {
				t.Fatal(err)
			}
			if back.Height != 16 || back.Width != 12 {
				t.Errorf("decoded %dx%d, want 12x16", back.Width, back.Height)
			}
		})
	}
	if FamilyLatent(detect.FamilySD3) != SD3Latent || FamilyLatent(detect.FamilyFluxDev) != FluxLatent {
		t.Error("SD3/Flux families lack their latent formats")
	}
	for _, f := range []LatentFormat{SD3Latent, FluxLatent} {
		if _, err := PreviewImage(f, make([]float32, 16*4*4), [4]int{1, 16, 4, 4}); err != nil {
			t.Errorf("%s preview: %v", f.Name, err)
		}
	}
}

package sd

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/clip"
	"github.com/forgeflow/forgeflow/diffusion/vae"
	"github.com/forgeflow/forgeflow/weights/detect"
)

func TestLoadTextEncoder(t *testing.T) {
	rt := ckRuntime(t)
	dir := t.TempDir()
	bpe, err := clip.LoadBPE(writeTinyVocab(t, filepath.Join(dir, "vocab")))
	if err != nil {
		t.Fatal(err)
	}
	var clipL, clipH, clipG randomTensors
	clipL.hfCLIP("text_model.", RandomText{Width: tinyTextWidth, Layers: 2, Vocab: 1024})
	clipL.linear("text_projection", tinyProj, tinyTextWidth, false)
	clipH.openCLIP("", RandomText{Width: tinyTextWidth, Layers: 23, Vocab: 1024, Projection: tinyProj})
	clipG.openCLIP("", RandomText{Width: tinyTextWidth, Layers: 31, Vocab: 1024, Projection: tinyProj})
	tests := []struct {
		name       string
		b          randomTensors
		typ        string
		enc        string
		layer      int
		normHidden bool
		pad0       bool
	}{
		{"clip_l", clipL, CLIPTypeStableDiffusion, "l", 0, true, false},
		{"clip_h", clipH, CLIPTypeStableDiffusion, "h", -2, true, true},
		{"clip_g", clipG, CLIPTypeStableDiffusion, "g", -2, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".safetensors")
			writeTensors(t, path, tc.b, 5)
			ck, err := LoadTextEncoder(rt, path, tc.typ, LoadOptions{Vocab: bpe})
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			if ck.Model != nil || ck.VAE != nil || len(ck.CLIP.Encoders) != 1 {
				t.Fatal("a text encoder file loaded more than one CLIP")
			}
			te := ck.CLIP.Encoders[0]
			if te.Name != tc.enc || te.Encoder.Layer != tc.layer || te.Encoder.NormHidden != tc.normHidden || (te.Encoder.Pad == 0) != tc.pad0 {
				t.Errorf("encoder %s layer %d normed %v pad %d", te.Name, te.Encoder.Layer, te.Encoder.NormHidden, te.Encoder.Pad)
			}
			if te.Encoder.Projection == nil {
				t.Error("pooled output is not projected")
			}
			enc, err := ck.CLIP.EncodeText(context.Background(), "a cat")
			if err != nil {
				t.Fatal(err)
			}
			defer enc.Release()
			ckShape(t, "cond", enc.Cond, 1, 77, tinyTextWidth)
			ckShape(t, "pooled", enc.Pooled, 1, tinyProj)
		})
	}
	var ue *UnsupportedError
	if _, err := LoadTextEncoder(rt, filepath.Join(dir, "clip_l.safetensors"), "wan", LoadOptions{}); !errors.As(err, &ue) {
		t.Errorf("type wan: %v, want an UnsupportedError", err)
	}
	if _, err := LoadTextEncoder(rt, filepath.Join(dir, "clip_g.safetensors"), CLIPTypeStableCascade, LoadOptions{}); !errors.As(err, &ue) {
		t.Errorf("CLIP-G for Stable Cascade: %v, want an UnsupportedError", err)
	}
	var vaeOnly randomTensors
	vaeOnly.vae("", TinyRandomSpec(detect.FamilySD1).VAE)
	vp := filepath.Join(dir, "vae.safetensors")
	writeTensors(t, vp, vaeOnly, 54)
	if _, err := LoadTextEncoder(rt, vp, CLIPTypeStableDiffusion, LoadOptions{}); !errors.As(err, &ue) {
		t.Errorf("a VAE as text encoder: %v, want an UnsupportedError", err)
	}
}

func TestLoadVAEFile(t *testing.T) {
	rt := ckRuntime(t)
	dir := t.TempDir()
	var b randomTensors
	b.vae("", TinyRandomSpec(detect.FamilySD1).VAE)
	path := filepath.Join(dir, "vae.safetensors")
	writeTensors(t, path, b, 61)
	ck, err := LoadVAE(rt, path)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	if ck.VAE.Latent != SD15Latent {
		t.Errorf("latent format %v", ck.VAE.Latent)
	}
	lat, _ := rt.FromFloat32(ckRandVals(62, 4*4*4), 1, 4, 4, 4)
	defer lat.Release()
	img, err := ck.VAE.Decode(context.Background(), lat)
	if err != nil {
		t.Fatal(err)
	}
	if img.Height != 8 || img.Width != 8 {
		t.Errorf("decoded %dx%d, want 8x8", img.Width, img.Height)
	}
	// A checkpoint's VAE with its family's latent format.
	xl := filepath.Join(dir, "xl.safetensors")
	writeSpec(t, xl, tinySDXL(63))
	ck2, err := LoadVAE(rt, xl)
	if err != nil {
		t.Fatal(err)
	}
	defer ck2.Close()
	if ck2.VAE.Latent != SDXLLatent {
		t.Errorf("SDXL checkpoint VAE latent format %v", ck2.VAE.Latent)
	}
	var clipL randomTensors
	clipL.hfCLIP("text_model.", RandomText{Width: tinyTextWidth, Layers: 1, Vocab: 1024})
	cp := filepath.Join(dir, "clip.safetensors")
	writeTensors(t, cp, clipL, 64)
	var ue *UnsupportedError
	if _, err := LoadVAE(rt, cp); !errors.As(err, &ue) {
		t.Errorf("a text encoder as VAE: %v, want an UnsupportedError", err)
	}

	// pixel_space: identity around the 2x−1 scaling.
	ps := NewPixelSpaceVAE(rt)
	pix := ckRandVals(65, 2*4*6*3)
	for i := range pix {
		pix[i] = min(max(pix[i]*0.2+0.5, 0), 1)
	}
	z, err := ps.Encode(context.Background(), &vae.Image{Batch: 2, Height: 4, Width: 6, Channels: 3, Pix: pix})
	if err != nil {
		t.Fatal(err)
	}
	defer z.Release()
	ckShape(t, "pixel-space latent", z, 2, 3, 4, 6)
	back, err := ps.Decode(context.Background(), z)
	if err != nil {
		t.Fatal(err)
	}
	for i := range pix {
		if d := back.Pix[i] - pix[i]; d > 1e-6 || d < -1e-6 {
			t.Fatalf("pixel space round trip [%d]: %v, want %v", i, back.Pix[i], pix[i])
		}
	}
}

// TestSD2SGMLayout loads an SD2 checkpoint whose OpenCLIP-H lies under the sgm prefix
// conditioner.embedders.0.model. (SD20.process_clip_state_dict accepts both).
func TestSD2SGMLayout(t *testing.T) {
	rt := ckRuntime(t)
	spec := tinySD2(91, false)
	ts, err := spec.Tensors()
	if err != nil {
		t.Fatal(err)
	}
	for i := range ts {
		if rest, ok := strings.CutPrefix(ts[i].Name, "cond_stage_model.model."); ok {
			ts[i].Name = "conditioner.embedders.0.model." + rest
		}
	}
	path := filepath.Join(t.TempDir(), "sd2sgm.safetensors")
	writeTensors(t, path, ts, spec.Seed)
	ck, err := LoadCheckpoint(rt, path, LoadOptions{SkipModel: true, SkipVAE: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	if len(ck.CLIP.Encoders) != 1 || ck.CLIP.Encoders[0].Name != "h" {
		t.Fatalf("encoders %v", ck.CLIP.Encoders)
	}
}

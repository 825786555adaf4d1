package sd

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/clip"
	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/detect"
)

func ckFinite(t *testing.T, name string, v []float32) {
	t.Helper()
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			t.Fatalf("%s[%d] = %v", name, i, x)
		}
	}
}

func ckShape(t *testing.T, name string, x *gpu.Tensor, want ...int) {
	t.Helper()
	got := x.Shape()
	if len(got) != len(want) {
		t.Fatalf("%s shape %v, want %v", name, got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s shape %v, want %v", name, got, want)
		}
	}
}

// TestLoadCheckpointFamilies loads a tiny checkpoint of each family, checks what the
// loader made of it, and runs the text encoders, one UNet evaluation with their
// output, and a VAE decode.
func TestLoadCheckpointFamilies(t *testing.T) {
	rt := ckRuntime(t)
	dir := t.TempDir()
	bpe, err := clip.LoadBPE(writeTinyVocab(t, filepath.Join(dir, "vocab")))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		build    RandomSpec
		family   detect.Family
		pred     sampling.Prediction
		latent   LatentFormat
		encoders []string
		condDim  int
		pooled   int
	}{
		{"sd1", tinySD1(1), detect.FamilySD1, sampling.EPS, SD15Latent, []string{"l"}, tinyTextWidth, tinyTextWidth},
		{"sd2_v", tinySD2(2, true), detect.FamilySD2, sampling.VPrediction, SD15Latent, []string{"h"}, tinyTextWidth, tinyProj},
		{"sd2_eps", tinySD2(3, false), detect.FamilySD2, sampling.EPS, SD15Latent, []string{"h"}, tinyTextWidth, tinyProj},
		{"sdxl", tinySDXL(4), detect.FamilySDXL, sampling.EPS, SDXLLatent, []string{"l", "g"}, 2 * tinyTextWidth, tinyProj},
		{"sdxl_refiner", tinySpec(detect.FamilySDXLRefiner, 5), detect.FamilySDXLRefiner, sampling.EPS, SDXLLatent, []string{"g"}, tinyTextWidth, tinyProj},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".safetensors")
			writeSpec(t, path, tc.build)
			ck, err := LoadCheckpoint(rt, path, LoadOptions{Vocab: bpe})
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			if ck.Family != tc.family {
				t.Errorf("family %s, want %s", ck.Family, tc.family)
			}
			if p := ck.Model.Sampling.Prediction(); p != tc.pred {
				t.Errorf("prediction %v, want %v", p, tc.pred)
			}
			if ck.Model.Latent != tc.latent || ck.VAE.Latent != tc.latent {
				t.Errorf("latent formats %v / %v, want %v", ck.Model.Latent, ck.VAE.Latent, tc.latent)
			}
			if dt := ck.Model.UNet.TimeEmbed1.Weight.DType(); dt != gpu.F16 {
				t.Errorf("UNet matrix stored as %s, want F16 kept", dt)
			}
			var names []string
			for _, te := range ck.CLIP.Encoders {
				names = append(names, te.Name)
				if te.Tokenizer == nil {
					t.Errorf("encoder %s has no tokenizer", te.Name)
				}
				if te.Encoder.Model.Heads != tinyTextWidth/64 {
					t.Errorf("encoder %s: %d heads, want width/64", te.Name, te.Encoder.Model.Heads)
				}
			}
			if strings.Join(names, ",") != strings.Join(tc.encoders, ",") {
				t.Errorf("encoders %v, want %v", names, tc.encoders)
			}

			ctx := context.Background()
			enc, err := ck.CLIP.EncodeText(ctx, "a (photo:1.2) of a cat")
			if err != nil {
				t.Fatal(err)
			}
			defer enc.Release()
			ckShape(t, "cond", enc.Cond, 1, 77, tc.condDim)
			ckShape(t, "pooled", enc.Pooled, 1, tc.pooled)
			cv, _ := enc.Cond.Float32()
			ckFinite(t, "cond", cv)

			// One UNet evaluation with the encoder's output as context.
			x, _ := rt.FromFloat32(make([]float32, 4*8*8), 1, 4, 8, 8)
			defer x.Release()
			ts, _ := rt.FromFloat32([]float32{500}, 1)
			defer ts.Release()
			in := unet.Inputs{X: x, Timesteps: ts, Context: enc.Cond}
			if ck.Model.ADM {
				size := unet.SizeConditioning{Width: 64, Height: 64, TargetWidth: 64, TargetHeight: 64}
				if ck.Family == detect.FamilySDXLRefiner {
					// The refiner's y ends with the aesthetic score where SDXL has the
					// target height, embedded alike, and has no target width.
					size.TargetHeight = 6
				}
				y, err := unet.EncodeADM(rt, enc.Pooled, size)
				if err != nil {
					t.Fatal(err)
				}
				defer y.Release()
				if ck.Family == detect.FamilySDXLRefiner {
					yr, err := gpu.Narrow(y, 1, 0, tc.pooled+5*256)
					if err != nil {
						t.Fatal(err)
					}
					yc, err := gpu.Contiguous(rt, yr)
					yr.Release()
					if err != nil {
						t.Fatal(err)
					}
					defer yc.Release()
					in.Y = yc
				} else {
					in.Y = y
				}
			}
			eps, err := ck.Model.UNet.Forward(ctx, rt, in)
			if err != nil {
				t.Fatal(err)
			}
			defer eps.Release()
			ckShape(t, "eps", eps, 1, 4, 8, 8)
			ev, _ := eps.Float32()
			ckFinite(t, "eps", ev)

			lat, _ := rt.FromFloat32(ckRandVals(5, 4*6*10), 1, 4, 6, 10)
			defer lat.Release()
			img, err := ck.VAE.Decode(ctx, lat)
			if err != nil {
				t.Fatal(err)
			}
			if img.Batch != 1 || img.Height != 12 || img.Width != 20 || img.Channels != 3 {
				t.Fatalf("image %dx%dx%dx%d, want 1x12x20x3", img.Batch, img.Height, img.Width, img.Channels)
			}
			for _, p := range img.Pix {
				if !(p >= 0 && p <= 1) {
					t.Fatalf("pixel %v outside [0, 1]", p)
				}
			}
		})
	}
}

// TestSDXLConcat checks that the SDXL conditioning is CLIP-L's output next to CLIP-G's,
// each encoded with its own layer setting, and the pooled output is CLIP-G's projected
// one.
func TestSDXLConcat(t *testing.T) {
	rt := ckRuntime(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "xl.safetensors")
	writeSpec(t, path, tinySDXL(7))
	bpe, err := clip.LoadBPE(writeTinyVocab(t, filepath.Join(dir, "vocab")))
	if err != nil {
		t.Fatal(err)
	}
	ck, err := LoadCheckpoint(rt, path, LoadOptions{Vocab: bpe, SkipModel: true, SkipVAE: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	if ck.Model != nil || ck.VAE != nil {
		t.Fatal("skipped parts were loaded")
	}
	c := ck.CLIP
	tok, err := c.Tokenize("a photo")
	if err != nil {
		t.Fatal(err)
	}
	if pad := tok["g"][0][76].ID; pad != 0 {
		t.Errorf("CLIP-G pads with %d, want 0", pad)
	}
	if pad, end := tok["l"][0][76].ID, tok["l"][0][3].ID; pad != end {
		t.Errorf("CLIP-L pads with %d, want the end token %d", pad, end)
	}
	all, err := c.EncodeTokens(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	defer all.Release()
	for i, te := range c.Encoders {
		if te.Encoder.Layer != -2 || te.Encoder.NormHidden {
			t.Errorf("encoder %s: layer %d normed %v, want −2 not normed", te.Name, te.Encoder.Layer, te.Encoder.NormHidden)
		}
		one := &CLIP{Runtime: rt, Encoders: []*TextEncoder{te}}
		got, err := one.EncodeTokens(context.Background(), tok)
		if err != nil {
			t.Fatal(err)
		}
		gv, _ := got.Cond.Float32()
		av, _ := all.Cond.Float32()
		for tkn := 0; tkn < 77; tkn++ {
			for d := 0; d < tinyTextWidth; d++ {
				if a, g := av[tkn*2*tinyTextWidth+i*tinyTextWidth+d], gv[tkn*tinyTextWidth+d]; a != g {
					t.Fatalf("encoder %s token %d dim %d: concat %v, alone %v", te.Name, tkn, d, a, g)
				}
			}
		}
		if te.Name == "g" {
			pa, _ := all.Pooled.Float32()
			pg, _ := got.Pooled.Float32()
			for k := range pg {
				if pa[k] != pg[k] {
					t.Fatalf("pooled[%d] %v, CLIP-G's %v", k, pa[k], pg[k])
				}
			}
		}
		got.Release()
	}
	// CLIPSetLastLayer −1 changes the output.
	l1, err := c.WithLayer(-1).EncodeTokens(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	defer l1.Release()
	a, _ := all.Cond.Float32()
	b, _ := l1.Cond.Float32()
	same := true
	for i := range a {
		if a[i] != b[i] {
			same = false
			break
		}
	}
	if same {
		t.Error("CLIPSetLastLayer(-1) gave the default layer's output")
	}
}

func TestLoadCheckpointErrors(t *testing.T) {
	rt := ckRuntime(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.safetensors")
	writeSpec(t, good, tinySD1(9))
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	spec := tinySD1(10)
	all, err := spec.Tensors()
	if err != nil {
		t.Fatal(err)
	}
	var noVAE, missing []RandomTensor
	for _, ts := range all {
		if !strings.HasPrefix(ts.Name, vaePrefix) {
			noVAE = append(noVAE, ts)
		}
		if ts.Name != unetPrefix+"out.2.weight" && ts.Name != "cond_stage_model.transformer.text_model.final_layer_norm.weight" {
			missing = append(missing, ts)
		}
	}
	noVAEPath := filepath.Join(dir, "novae.safetensors")
	writeTensors(t, noVAEPath, noVAE, 1)
	missingPath := filepath.Join(dir, "missing.safetensors")
	writeTensors(t, missingPath, missing, 1)

	var vaeOnly randomTensors
	vaeOnly.vae("", spec.VAE)
	vaeOnlyPath := filepath.Join(dir, "vae.safetensors")
	writeTensors(t, vaeOnlyPath, vaeOnly, 2)

	tests := []struct {
		name, path string
		format     bool // a FormatError, else an UnsupportedError
		want       string
	}{
		{"truncated", write("trunc.safetensors", data[:len(data)/2]), true, "invalid checkpoint"},
		{"empty", write("empty.safetensors", nil), true, "empty file"},
		{"garbage", write("junk.ckpt", []byte("this is not a checkpoint at all")), true, "invalid checkpoint"},
		{"missing keys", missingPath, true, "out.2.weight"},
		{"wrong family", vaeOnlyPath, false, "not an SD1/SD2/SDXL checkpoint"},
		{"gguf", write("m.gguf", []byte("GGUF\x03\x00\x00\x00")), false, "GGUF"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ck, err := LoadCheckpoint(rt, tc.path, LoadOptions{})
			if err == nil {
				ck.Close()
				t.Fatal("loaded")
			}
			var fe *FormatError
			var ue *UnsupportedError
			if tc.format && !errors.As(err, &fe) {
				t.Errorf("error %v (%T) is not a FormatError", err, err)
			}
			if !tc.format && !errors.As(err, &ue) {
				t.Errorf("error %v (%T) is not an UnsupportedError", err, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
	// Without VAE tensors the checkpoint loads with an empty VAE, as in ComfyUI.
	ck, err := LoadCheckpoint(rt, noVAEPath, LoadOptions{})
	if err != nil {
		t.Fatalf("a checkpoint without VAE: %v", err)
	}
	if ck.VAE != nil || ck.Model == nil || ck.CLIP == nil {
		t.Errorf("a checkpoint without VAE loaded as model %v, CLIP %v, VAE %v", ck.Model != nil, ck.CLIP != nil, ck.VAE != nil)
	}
	ck.Close()
	if _, err := LoadCheckpoint(rt, filepath.Join(dir, "absent.safetensors"), LoadOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("absent file: %v", err)
	}
}

// TestTokenizeWithoutVocab checks that a CLIP loaded without a vocabulary says so.
func TestTokenizeWithoutVocab(t *testing.T) {
	rt := ckRuntime(t)
	path := filepath.Join(t.TempDir(), "sd1.safetensors")
	writeSpec(t, path, tinySD1(11))
	why := &MissingVocabError{Searched: []string{"/models/tokenizers/clip"}}
	ck, err := LoadCheckpoint(rt, path, LoadOptions{VocabErr: why, SkipModel: true, SkipVAE: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	_, err = ck.CLIP.EncodeText(context.Background(), "a cat")
	var ve *VocabError
	if !errors.As(err, &ve) || !errors.Is(err, why) {
		t.Fatalf("error %v, want a VocabError wrapping the search result", err)
	}
	if !strings.Contains(err.Error(), "vocab.json") {
		t.Errorf("error %q does not say which files to provide", err)
	}
}

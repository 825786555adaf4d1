package sd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/clip"
	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/diffusion/vae"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// TestGoldenThroughLoader assembles the golden set's SD1.x-shaped UNet, CLIP and VAE
// fixtures (testenv.GoldenSD1) into one checkpoint file (their keys are the real
// checkpoint names) and checks that LoadCheckpoint's MODEL, CLIP and VAE reproduce
// ComfyUI's outputs of each fixture.
func TestGoldenThroughLoader(t *testing.T) {
	fx := testenv.GoldenSD1(t)
	if fx.VAE.File == "" {
		t.Skip("the golden set has no vae case with the unet's latent channels")
	}
	files := map[string]*safetensors.File{}
	for fam, path := range map[string]string{"unet": fx.UNet.Path(), "clip": fx.CLIP.Path(), "vae": fx.VAE.Path()} {
		f, err := safetensors.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files[fam] = f
	}
	// The checkpoint: every weight of the three fixtures, none of their in./out. tensors.
	var es []safetensors.Entry
	for _, f := range files {
		for _, info := range f.Tensors() {
			if strings.HasPrefix(info.Name, "in.") || strings.HasPrefix(info.Name, "out.") {
				continue
			}
			tn, err := f.Tensor(info.Name)
			if err != nil {
				t.Fatal(err)
			}
			es = append(es, safetensors.Entry{Name: info.Name, DType: info.DType, Shape: info.Shape, Data: tn.Data})
		}
	}
	safetensors.SortEntries(es)
	path := filepath.Join(t.TempDir(), "golden_sd15.safetensors")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := safetensors.Write(out, es, nil); err != nil {
		t.Fatal(err)
	}
	out.Close()

	rt := ckRuntime(t)
	heads := unet.Heads{Count: fx.UNet.Heads}
	if fx.UNet.HeadDim > 0 {
		heads = unet.Heads{Dim: fx.UNet.HeadDim}
	}
	ck, err := LoadCheckpoint(rt, path, LoadOptions{
		UNetHeads:   heads,
		CLIPHeadDim: fx.CLIP.Hidden / fx.CLIP.Heads,
		// The fixture's CLIP ran with float32 weights, not ComfyUI's default float16.
		FP32TextEncoder: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	if ck.Family != "sd1" {
		t.Fatalf("family %s, want sd1", ck.Family)
	}
	ctx := context.Background()
	get := func(fam, name string) []float32 {
		t.Helper()
		tn, err := files[fam].Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		v, err := tn.Float32()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tensor := func(fam, name string) *gpu.Tensor {
		t.Helper()
		info, _ := files[fam].Info(name)
		shape := make([]int, len(info.Shape))
		for i, d := range info.Shape {
			shape[i] = int(d)
		}
		x, err := rt.FromFloat32(get(fam, name), shape...)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	t.Run("clip", func(t *testing.T) {
		for p := range fx.CLIP.Prompts {
			spec, err := fx.CLIP.Tensor("in.tokens." + p)
			if err != nil {
				t.Fatal(err)
			}
			if len(spec.Shape) != 2 {
				t.Fatal(fx.CLIP.FieldError("io_tensors", "in.tokens.%s has shape %v, want (windows, length)", p, spec.Shape))
			}
			n := spec.Shape[1]
			ids := get("clip", "in.tokens."+p)
			ws := make([]float32, len(ids))
			for i := range ws {
				ws[i] = 1
			}
			if _, ok := fx.CLIP.IO["in.weights."+p]; ok {
				ws = get("clip", "in.weights."+p)
			}
			var windows [][]clip.Token
			for w := 0; w < len(ids)/n; w++ {
				win := make([]clip.Token, n)
				for i := range win {
					win[i] = clip.Token{ID: int(ids[w*n+i]), Weight: float64(ws[w*n+i])}
				}
				windows = append(windows, win)
			}
			for _, layer := range []struct {
				suffix string
				c      *CLIP
			}{{"", ck.CLIP}, {"_skip2", ck.CLIP.WithLayer(-2)}} {
				enc, err := layer.c.EncodeTokens(ctx, Tokens{"l": windows})
				if err != nil {
					t.Fatal(err)
				}
				g, _ := enc.Cond.Float32()
				testenv.Close(t, p+".cond"+layer.suffix, g, get("clip", "out."+p+".cond"+layer.suffix), fx.CLIP.Tolerance)
				g, _ = enc.Pooled.Float32()
				testenv.Close(t, p+".pooled"+layer.suffix, g, get("clip", "out."+p+".pooled"+layer.suffix), fx.CLIP.Tolerance)
				enc.Release()
			}
		}
	})
	t.Run("vae", func(t *testing.T) {
		lat := tensor("vae", "in.latent")
		defer lat.Release()
		img, err := ck.VAE.Decode(ctx, lat)
		if err != nil {
			t.Fatal(err)
		}
		testenv.Close(t, "image", img.Pix, get("vae", "out.image"), fx.VAE.Tolerance)
		info, _ := files["vae"].Info("in.image")
		in := &vae.Image{Batch: int(info.Shape[0]), Height: int(info.Shape[1]), Width: int(info.Shape[2]), Channels: int(info.Shape[3]), Pix: get("vae", "in.image")}
		z, err := ck.VAE.Encode(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		defer z.Release()
		g, _ := z.Float32()
		testenv.Close(t, "latent", g, get("vae", "out.latent"), fx.VAE.Tolerance)
	})
	t.Run("unet", func(t *testing.T) {
		x, ts, c := tensor("unet", "in.x"), tensor("unet", "in.timesteps"), tensor("unet", "in.context")
		defer x.Release()
		defer ts.Release()
		defer c.Release()
		eps, err := ck.Model.UNet.Forward(ctx, rt, unet.Inputs{X: x, Timesteps: ts, Context: c})
		if err != nil {
			t.Fatal(err)
		}
		defer eps.Release()
		g, _ := eps.Float32()
		testenv.Close(t, "eps", g, get("unet", "out.eps"), fx.UNet.Tolerance)
	})
}

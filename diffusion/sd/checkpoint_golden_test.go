package sd

import (
	"context"
	"math"
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

type goldenCase struct {
	Case   string `json:"case"`
	File   string `json:"file"`
	Config struct {
		UNet struct {
			NumHeads        int `json:"num_heads"`
			NumHeadChannels int `json:"num_head_channels"`
		} `json:"unet_config"`
		ModelOptions struct {
			CLIPL struct {
				Hidden int `json:"hidden_size"`
				Heads  int `json:"num_attention_heads"`
			} `json:"clip_l_model_config"`
		} `json:"model_options"`
	} `json:"config"`
	Tolerance struct{ Abs, Rel float64 } `json:"tolerance"`
}

func goldenManifest(t *testing.T, family, name string) goldenCase {
	t.Helper()
	_, cases := testenv.GoldenCases[goldenCase](t, family)
	for _, c := range cases {
		if c.Case == name {
			return c
		}
	}
	t.Fatalf("%s: no case %s", family, name)
	return goldenCase{}
}

// TestGoldenThroughLoader assembles the golden tiny SD1.5 UNet, CLIP-L and VAE fixtures
// into one checkpoint file (their keys are the real checkpoint names) and checks that
// LoadCheckpoint's MODEL, CLIP and VAE reproduce ComfyUI's outputs of each fixture.
func TestGoldenThroughLoader(t *testing.T) {
	root := testenv.GoldenDir(t)
	uc := goldenManifest(t, "unet", "sd15_tiny")
	cc := goldenManifest(t, "clip", "clip_sd15_tiny")
	vc := goldenManifest(t, "vae", "sd_vae_tiny")
	files := map[string]*safetensors.File{}
	for _, p := range []struct{ fam, file string }{{"unet", uc.File}, {"clip", cc.File}, {"vae", vc.File}} {
		f, err := safetensors.Open(filepath.Join(root, p.fam, p.file))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files[p.fam] = f
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
	l := cc.Config.ModelOptions.CLIPL
	ck, err := LoadCheckpoint(rt, path, LoadOptions{
		UNetHeads:   unet.Heads{Count: uc.Config.UNet.NumHeads},
		CLIPHeadDim: l.Hidden / l.Heads,
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
	compare := func(t *testing.T, what string, got, want []float32, tol struct{ Abs, Rel float64 }) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
		}
		for i := range want {
			if d := math.Abs(float64(got[i] - want[i])); d > tol.Abs+tol.Rel*math.Abs(float64(want[i])) {
				t.Fatalf("%s[%d] = %v, want %v", what, i, got[i], want[i])
			}
		}
	}

	t.Run("clip", func(t *testing.T) {
		for _, p := range []string{"simple", "weighted", "long"} {
			ids := get("clip", "in.tokens."+p)
			ws := get("clip", "in.weights."+p)
			var windows [][]clip.Token
			for w := 0; w < len(ids)/77; w++ {
				win := make([]clip.Token, 77)
				for i := range win {
					win[i] = clip.Token{ID: int(ids[w*77+i]), Weight: float64(ws[w*77+i])}
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
				compare(t, p+".cond"+layer.suffix, g, get("clip", "out."+p+".cond"+layer.suffix), cc.Tolerance)
				g, _ = enc.Pooled.Float32()
				compare(t, p+".pooled"+layer.suffix, g, get("clip", "out."+p+".pooled"+layer.suffix), cc.Tolerance)
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
		compare(t, "image", img.Pix, get("vae", "out.image"), vc.Tolerance)
		info, _ := files["vae"].Info("in.image")
		in := &vae.Image{Batch: int(info.Shape[0]), Height: int(info.Shape[1]), Width: int(info.Shape[2]), Channels: int(info.Shape[3]), Pix: get("vae", "in.image")}
		z, err := ck.VAE.Encode(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		defer z.Release()
		g, _ := z.Float32()
		compare(t, "latent", g, get("vae", "out.latent"), vc.Tolerance)
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
		compare(t, "eps", g, get("unet", "out.eps"), uc.Tolerance)
	})
}

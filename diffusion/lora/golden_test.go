package lora_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/clip"
	"github.com/forgeflow/forgeflow/diffusion/lora"
	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// loraCase is a golden/lora manifest entry: the base fixtures it patches, the
// strengths, the prompt and ComfyUI's key mapping.
type loraCase struct {
	testenv.Case
	Config struct {
		BaseUNet      string            `json:"base_unet_fixture"`
		BaseUNetSHA   string            `json:"base_unet_sha256"`
		BaseCLIP      string            `json:"base_clip_fixture"`
		BaseCLIPSHA   string            `json:"base_clip_sha256"`
		Prompt        string            `json:"prompt"`
		StrengthModel *float64          `json:"strength_model"`
		StrengthCLIP  *float64          `json:"strength_clip"`
		KeyMapping    map[string]string `json:"key_mapping"`
	} `json:"config"`
}

// comfyName turns a checkpoint key under the fixture's prefix into ComfyUI's model
// state-dict name.
func comfyName(key, unetPrefix, clipPrefix string) (string, bool) {
	if rest, ok := strings.CutPrefix(key, unetPrefix); ok {
		return lora.UNetPrefix + rest, true
	}
	if rest, ok := strings.CutPrefix(key, clipPrefix); ok {
		return lora.CLIPPrefix("l") + rest, true
	}
	return "", false
}

// TestGoldenLoRA applies every case of golden/lora the LoraLoader way (sd.LoadLoRA) to
// the base unet and clip fixtures its metadata names, in each apply mode, and compares
// the key mapping, the patched UNet's eps and apply_model output, the patched CLIP's
// cond and pooled output for the case's prompt and the patched weights it lists with
// ComfyUI's, within the case's tolerance.
func TestGoldenLoRA(t *testing.T) {
	_, cases := testenv.GoldenCases[loraCase](t, "lora")
	unets, clips := map[string]testenv.UNet{}, map[string]testenv.CLIP{}
	for _, u := range testenv.GoldenUNets(t) {
		unets[u.Family()+"/"+u.File] = u
	}
	for _, c := range testenv.GoldenCLIPs(t) {
		clips[c.Family()+"/"+c.File] = c
	}
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	bpe, err := clip.LoadBPE(testenv.GoldenVocabDir(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			cfg := c.Config
			u, ok := unets[cfg.BaseUNet]
			if !ok || u.SHA256 != cfg.BaseUNetSHA {
				t.Fatal(c.FieldError("config.base_unet_fixture", "%s (sha256 %s) is no model case of the unet family", cfg.BaseUNet, cfg.BaseUNetSHA))
			}
			k, ok := clips[cfg.BaseCLIP]
			if !ok || k.SHA256 != cfg.BaseCLIPSHA {
				t.Fatal(c.FieldError("config.base_clip_fixture", "%s (sha256 %s) is no case of the clip family", cfg.BaseCLIP, cfg.BaseCLIPSHA))
			}
			if cfg.StrengthModel == nil || cfg.StrengthCLIP == nil {
				t.Fatal(c.FieldError("config", "needs strength_model and strength_clip"))
			}
			open := func(path string) *tensorfile.File {
				f, err := tensorfile.Open(path)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { f.Close() })
				return f
			}
			cf := open(c.Path())
			in := func(name string) *gpu.Tensor {
				if _, ok := c.IO[name]; !ok {
					t.Fatal(c.FieldError("io_tensors", "lists no %s", name))
				}
				return tensorOf(t, rt, cf, name)
			}
			within := func(t *testing.T, name string, got *gpu.Tensor) {
				t.Helper()
				g, err := got.Float32()
				if err != nil {
					t.Fatal(err)
				}
				w, err := in(name).Float32()
				if err != nil {
					t.Fatal(err)
				}
				testenv.Close(t, name, g, w, c.Tolerance)
			}

			heads := unet.Heads{Count: u.Heads}
			if u.HeadDim > 0 {
				heads = unet.Heads{Dim: u.HeadDim}
			}
			um, err := unet.Load(rt, statedict.NewFileSource(rt, open(u.Path())), u.Prefix, heads)
			if err != nil {
				t.Fatal(err)
			}
			ms, err := sampling.New(sampling.Config(u.Sampling))
			if err != nil {
				t.Fatal(u.FieldError("config.wrapper", "%v", err))
			}
			model := &sd.Model{Runtime: rt, UNet: um, Sampling: ms, Latent: sd.SD15Latent, Name: cfg.BaseUNet}
			tm := &clip.TextModel{Heads: k.Heads, Activation: k.Activation, EOS: k.EOS}
			if _, err := statedict.Bind(rt, statedict.NewFileSource(rt, open(k.Path())), k.Prefix, tm); err != nil {
				t.Fatal(err)
			}
			cl := &sd.CLIP{Runtime: rt, Encoders: []*sd.TextEncoder{{Name: "l",
				Encoder: &clip.Encoder{Model: tm, NormHidden: true, Start: k.Start, End: k.End, Pad: k.Pad}}}}

			km, err := sd.LoRAKeyMap(model, cl)
			if err != nil {
				t.Fatal(err)
			}
			for mod, want := range cfg.KeyMapping {
				if got := km[mod]; got.Key != want || got.Length != 0 {
					t.Errorf("key map: %s → %+v, ComfyUI maps it to %s", mod, got, want)
				}
			}

			// The prompt's weights come from ComfyUI's weight syntax, the ids from the case.
			windows, err := clip.NewSD1Tokenizer(bpe, nil).TokenizeWithWeights(cfg.Prompt)
			if err != nil {
				t.Fatal(err)
			}
			ids := intsOf(t, cf, "in.tokens")
			if len(windows) != 1 || len(windows[0]) != len(ids) {
				t.Fatalf("the prompt tokenizes to %d windows, in.tokens holds %d ids", len(windows), len(ids))
			}
			for i, id := range ids {
				if windows[0][i].ID != id {
					t.Fatalf("token %d: %d, in.tokens has %d", i, windows[0][i].ID, id)
				}
			}

			lf, err := lora.NewFile(rt, cf)
			if err != nil {
				t.Fatal(err)
			}
			for _, mode := range []lora.Mode{lora.Auto, lora.Merge, lora.Runtime} {
				t.Run(mode.String(), func(t *testing.T) {
					m2, c2, err := sd.LoadLoRA(model, cl, lf, *cfg.StrengthModel, *cfg.StrengthCLIP, sd.LoRAOptions{Mode: mode, Logger: slog.New(slog.DiscardHandler)})
					if err != nil {
						t.Fatal(err)
					}
					if m2.UNet == um || c2.Encoders[0].Encoder.Model == tm {
						t.Fatal("the LoRA changed nothing")
					}
					ctx := context.Background()
					eps, err := m2.UNet.Forward(ctx, rt, unet.Inputs{X: in("in.x"), Timesteps: in("in.timesteps"), Context: in("in.context")})
					if err != nil {
						t.Fatal(err)
					}
					within(t, "out.eps", eps)
					within(t, "out.denoised", applyModel(t, rt, m2, in("in.x"), in("in.sigma"), in("in.context")))

					enc, err := c2.Encoders[0].Encoder.Encode(rt, windows)
					if err != nil {
						t.Fatal(err)
					}
					within(t, "out.cond", enc.Cond)
					within(t, "out.pooled", enc.Pooled)

					if mode == lora.Runtime {
						return // no merged copies to compare
					}
					for _, name := range c.Tensors("out.patched.") {
						key, ok := comfyName(strings.TrimPrefix(name, "out.patched."), u.Prefix, k.Prefix)
						if !ok {
							t.Fatal(c.FieldError("io_tensors", "%s is under neither base fixture's prefix", name))
						}
						var w *gpu.Tensor
						if strings.HasPrefix(key, lora.UNetPrefix) {
							w = weightOf(t, m2.LoRANetwork(), key)
						} else {
							w = weightOf(t, c2.Encoders[0].LoRANetwork(), key)
						}
						within(t, name, w)
					}
				})
			}
			// The base objects are unchanged: the plain model is the loaded UNet.
			if m := model.WithoutLoRA(); m.UNet != um {
				t.Fatal("WithoutLoRA of the base model is not the base model")
			}
		})
	}
}

// weightOf reads a parameter of a network.
func weightOf[T any](t *testing.T, n *lora.Network[T], key string) *gpu.Tensor {
	t.Helper()
	if n == nil {
		t.Fatalf("%s: no LoRA network", key)
	}
	w, err := n.Weight(key)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// applyModel is BaseModel.apply_model for an eps model: the input scaled by sigma, the
// nearest timestep, the UNet, the denoised latent.
func applyModel(t *testing.T, rt *gpu.Runtime, m *sd.Model, x, sigmaT, ctxT *gpu.Tensor) *gpu.Tensor {
	t.Helper()
	sv, _ := sigmaT.Float32()
	xv, _ := x.Float32()
	sigma := sv[0]
	xin := make([]float32, len(xv))
	sampling.CalculateInput(m.Sampling.Prediction(), sigma, xv, xin)
	tt, _ := rt.FromFloat32([]float32{m.Sampling.Timestep(sigma)}, 1)
	xt, _ := rt.FromFloat32(xin, x.Shape()...)
	e, err := m.UNet.Forward(context.Background(), rt, unet.Inputs{X: xt, Timesteps: tt, Context: ctxT})
	if err != nil {
		t.Fatal(err)
	}
	ev, _ := e.Float32()
	den := make([]float32, len(xv))
	sampling.CalculateDenoised(m.Sampling.Prediction(), sigma, ev, xv, den)
	out, _ := rt.FromFloat32(den, x.Shape()...)
	return out
}

func tensorOf(t *testing.T, rt *gpu.Runtime, f *tensorfile.File, name string) *gpu.Tensor {
	t.Helper()
	tn, err := f.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	v, err := tn.Float32()
	if err != nil {
		t.Fatal(err)
	}
	shape := make([]int, len(tn.Shape))
	for i, d := range tn.Shape {
		shape[i] = int(d)
	}
	g, err := rt.FromFloat32(v, shape...)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func intsOf(t *testing.T, f *tensorfile.File, name string) []int {
	t.Helper()
	tn, err := f.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	if tn.DType != "I64" {
		t.Fatalf("%s is %s, want I64", name, tn.DType)
	}
	out := make([]int, len(tn.Data)/8)
	for i := range out {
		var v int64
		for b := 7; b >= 0; b-- {
			v = v<<8 | int64(tn.Data[i*8+b])
		}
		out[i] = int(v)
	}
	return out
}

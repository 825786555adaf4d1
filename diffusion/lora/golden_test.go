package lora_test

import (
	"context"
	"log/slog"
	"math"
	"path/filepath"
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

// loraCase is a golden/lora manifest entry: the base fixtures it patches, their
// configurations, the strengths and ComfyUI's key mapping.
type loraCase struct {
	Case   string `json:"case"`
	File   string `json:"file"`
	Config struct {
		BaseUNet string `json:"base_unet_fixture"`
		BaseCLIP string `json:"base_clip_fixture"`
		CLIP     struct {
			Heads int    `json:"num_attention_heads"`
			Act   string `json:"hidden_act"`
			EOS   int    `json:"eos_token_id"`
		} `json:"clip_model_config"`
		UNet struct {
			NumHeads        int `json:"num_heads"`
			NumHeadChannels int `json:"num_head_channels"`
		} `json:"unet_config"`
		Prompt        string            `json:"prompt"`
		StrengthModel float64           `json:"strength_model"`
		StrengthCLIP  float64           `json:"strength_clip"`
		KeyMapping    map[string]string `json:"key_mapping"`
	} `json:"config"`
	Tolerance struct{ Abs, Rel float64 } `json:"tolerance"`
}

// checkpointToComfy turns an SD1 checkpoint key into ComfyUI's model state-dict name.
var checkpointToComfy = strings.NewReplacer("model.diffusion_model.", lora.UNetPrefix,
	"cond_stage_model.transformer.text_model.", lora.CLIPPrefix("l"))

// TestGoldenLoRA applies every case of golden/lora the LoraLoader way (sd.LoadLoRA) to
// the base fixtures its metadata names, in each apply mode, and compares the patched
// UNet's eps and apply_model output, the patched CLIP's cond and pooled output and the
// patched weights it lists with ComfyUI's, within the case's tolerance.
func TestGoldenLoRA(t *testing.T) {
	dir, cases := testenv.GoldenCases[loraCase](t, "lora")
	root := filepath.Dir(dir)
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.Case, func(t *testing.T) {
			// The case file lies in the family's folder; the base fixtures it names are
			// relative to the golden root.
			open := func(name string) *tensorfile.File {
				path := filepath.Join(root, filepath.FromSlash(name))
				if name == c.File {
					path = filepath.Join(dir, name)
				}
				f, err := tensorfile.Open(path)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { f.Close() })
				return f
			}
			cf := open(c.File)
			in := func(name string) *gpu.Tensor { return tensorOf(t, rt, cf, name) }
			within := func(t *testing.T, name string, got *gpu.Tensor) {
				t.Helper()
				closeTo(t, name, got, in(name), c.Tolerance.Abs, c.Tolerance.Rel)
			}

			uf := open(c.Config.BaseUNet)
			heads := unet.Heads{Count: c.Config.UNet.NumHeads}
			if c.Config.UNet.NumHeadChannels > 0 {
				heads = unet.Heads{Dim: c.Config.UNet.NumHeadChannels}
			}
			um, err := unet.Load(rt, statedict.NewFileSource(rt, uf), "model.diffusion_model.", heads)
			if err != nil {
				t.Fatal(err)
			}
			model := &sd.Model{Runtime: rt, UNet: um, Sampling: sampling.NewSD(sampling.EPS), Latent: sd.SD15Latent, Name: c.Config.BaseUNet}
			tm := &clip.TextModel{Heads: c.Config.CLIP.Heads, Activation: c.Config.CLIP.Act, EOS: c.Config.CLIP.EOS}
			if _, err := statedict.Bind(rt, statedict.NewFileSource(rt, open(c.Config.BaseCLIP)), "cond_stage_model.transformer.text_model.", tm); err != nil {
				t.Fatal(err)
			}
			cl := &sd.CLIP{Runtime: rt, Encoders: []*sd.TextEncoder{{Name: "l",
				Encoder: &clip.Encoder{Model: tm, NormHidden: true, Start: 49406, End: c.Config.CLIP.EOS, Pad: c.Config.CLIP.EOS}}}}

			km, err := sd.LoRAKeyMap(model, cl)
			if err != nil {
				t.Fatal(err)
			}
			for mod, want := range c.Config.KeyMapping {
				if got := km[mod]; got.Key != want || got.Length != 0 {
					t.Errorf("key map: %s → %+v, ComfyUI maps it to %s", mod, got, want)
				}
			}

			// The prompt's weights come from ComfyUI's weight syntax, the ids from the case.
			bpe, err := clip.LoadBPE(filepath.Join(root, "tokenizer"))
			if err != nil {
				t.Fatal(err)
			}
			windows, err := clip.NewSD1Tokenizer(bpe, nil).TokenizeWithWeights(c.Config.Prompt)
			if err != nil {
				t.Fatal(err)
			}
			ids := intsOf(t, cf, "in.tokens")
			if len(windows) != 1 || len(windows[0]) != len(ids) {
				t.Fatalf("prompt tokenizes to %d windows, in.tokens holds %d ids", len(windows), len(ids))
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
					m2, c2, err := sd.LoadLoRA(model, cl, lf, c.Config.StrengthModel, c.Config.StrengthCLIP, sd.LoRAOptions{Mode: mode, Logger: slog.New(slog.DiscardHandler)})
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
					for _, info := range cf.Tensors() {
						key, ok := strings.CutPrefix(info.Name, "out.patched.")
						if !ok {
							continue
						}
						key = checkpointToComfy.Replace(key)
						var w *gpu.Tensor
						if strings.HasPrefix(key, lora.UNetPrefix) {
							w = weightOf(t, m2.LoRANetwork(), key)
						} else {
							w = weightOf(t, c2.Encoders[0].LoRANetwork(), key)
						}
						within(t, info.Name, w)
					}
				})
			}
			// The base objects are unchanged: the plain model still gives its own output.
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

// closeTo fails t unless |got − want| ≤ abs + rel·|want| everywhere.
func closeTo(t *testing.T, name string, got, want *gpu.Tensor, abs, rel float64) {
	t.Helper()
	g, err := got.Float32()
	if err != nil {
		t.Fatal(err)
	}
	w, err := want.Float32()
	if err != nil {
		t.Fatal(err)
	}
	if len(g) != len(w) {
		t.Fatalf("%s: %d values, want %d", name, len(g), len(w))
	}
	worst, at := 0.0, -1
	for i := range w {
		d := math.Abs(float64(g[i] - w[i]))
		if d > abs+rel*math.Abs(float64(w[i])) && d > worst {
			worst, at = d, i
		}
	}
	if at >= 0 {
		t.Fatalf("%s[%d] = %v, want %v (|Δ| %.3g; tolerance %g + %g·|want|)", name, at, g[at], w[at], worst, abs, rel)
	}
}

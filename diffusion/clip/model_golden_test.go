package clip

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

type clipCase struct {
	Case    string            `json:"case"`
	File    string            `json:"file"`
	Prompts map[string]string `json:"prompts"`
	Config  struct {
		ModelOptions struct {
			CLIPL struct {
				Heads int    `json:"num_attention_heads"`
				Act   string `json:"hidden_act"`
			} `json:"clip_l_model_config"`
		} `json:"model_options"`
	} `json:"config"`
	Tolerance struct{ Abs, Rel float64 } `json:"tolerance"`
}

// TestGoldenCLIP runs every case of golden/clip: the raw transformer outputs per layer,
// pooled and projected, and ComfyUI's encode_from_tokens with prompt weights and clip
// skip, within each case's tolerance.
func TestGoldenCLIP(t *testing.T) {
	dir, cases := testenv.GoldenCases[clipCase](t, "clip")
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.Case, func(t *testing.T) {
			f, err := tensorfile.Open(filepath.Join(dir, c.File))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			src := statedict.NewFileSource(rt, f)
			model := &TextModel{Heads: c.Config.ModelOptions.CLIPL.Heads, Activation: c.Config.ModelOptions.CLIPL.Act, EOS: 49407}
			rep, err := statedict.Bind(rt, src, "cond_stage_model.transformer.text_model.", model)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Unused) > 0 {
				t.Errorf("unused keys: %v", rep.Unused)
			}
			proj, err := src.Tensor("cond_stage_model.transformer.text_projection.weight")
			if err != nil {
				t.Fatal(err)
			}
			check := func(name string, got *gpu.Tensor) {
				t.Helper()
				g, err := got.Float32()
				if err != nil {
					t.Fatal(err)
				}
				want := floatsOf(t, f, name)
				if len(g) != len(want) {
					t.Fatalf("%s: %d values, want %d", name, len(g), len(want))
				}
				for i := range want {
					if d := math.Abs(float64(g[i] - want[i])); d > c.Tolerance.Abs+c.Tolerance.Rel*math.Abs(float64(want[i])) {
						t.Fatalf("%s[%d] = %v, want %v", name, i, g[i], want[i])
					}
				}
			}
			windowsOf := func(p string) [][]Token {
				ids := readInts(t, f, "in.tokens."+p)
				var ws []float64
				if _, ok := f.Info("in.weights." + p); ok {
					ws = readF64(t, f, "in.weights."+p)
				}
				var out [][]Token
				for w := 0; w < len(ids)/77; w++ {
					win := make([]Token, 77)
					for i := range win {
						win[i] = Token{ID: ids[w*77+i], Weight: 1}
						if ws != nil {
							win[i].Weight = ws[w*77+i]
						}
					}
					out = append(out, win)
				}
				return out
			}

			raw := windowsOf("raw")
			n := len(model.Layers)
			for layer := 0; layer < n; layer++ {
				o, err := model.Forward(rt, []Input{Input(raw[0])}, layer, false)
				if err != nil {
					t.Fatal(err)
				}
				check("out.raw.layer"+string(rune('0'+layer))+"_unnormed", o.Hidden)
				if layer == n-2 {
					check("out.raw.hidden_m2_unnormed", o.Hidden)
				}
				if layer == 0 {
					check("out.raw.last_hidden", o.Last)
					check("out.raw.pooled", o.Pooled)
					pp, err := gpu.Linear(rt, o.Pooled, proj, nil)
					if err != nil {
						t.Fatal(err)
					}
					check("out.raw.pooled_projected", pp)
					pp.Release()
				}
				o.Release()
			}
			o, err := model.Forward(rt, []Input{Input(raw[0])}, -2, true)
			if err != nil {
				t.Fatal(err)
			}
			check("out.raw.hidden_m2_normed", o.Hidden)
			o.Release()

			for p := range c.Prompts {
				for _, skip := range []bool{false, true} {
					enc := &Encoder{Model: model, NormHidden: true, Start: 49406, End: 49407, Pad: 49407}
					suffix := ""
					if skip {
						enc.Layer, suffix = -2, "_skip2"
					}
					e, err := enc.Encode(rt, windowsOf(p))
					if err != nil {
						t.Fatal(err)
					}
					check("out."+p+".cond"+suffix, e.Cond)
					check("out."+p+".pooled"+suffix, e.Pooled)
					e.Cond.Release()
					e.Pooled.Release()
				}
			}
		})
	}
}

func floatsOf(t *testing.T, f *tensorfile.File, name string) []float32 {
	t.Helper()
	tn, err := f.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	v, err := tn.Float32()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

package lora_test

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/lora"
	"github.com/forgeflow/forgeflow/diffusion/lora/loratest"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
)

// TestComfyUIReference applies loratest.RefCases (every adapter kind and key style, on
// tiny SD1, SD2, SDXL and SDXL-refiner checkpoints, and a stack of two LoRAs) and
// compares with what ComfyUI 0.3.64's own LoRA code made of the same files in the
// reference peer (testdata/comfyui_lora.json, see codex/refpeer.md): the key map
// (ComfyUI's entries exactly; ours adds only the plain diffusers attention names), the
// set of weights patched, and each patched weight's sum, sum of squares and sampled
// values, in merge mode and in run-time mode.
func TestComfyUIReference(t *testing.T) {
	data, err := os.ReadFile("testdata/comfyui_lora.json")
	if err != nil {
		t.Fatal(err)
	}
	var exp loratest.Expected
	if err := json.Unmarshal(data, &exp); err != nil {
		t.Fatal(err)
	}
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range loratest.RefCases() {
		t.Run(c.Name, func(t *testing.T) {
			want, ok := exp.Cases[c.Name]
			if !ok {
				t.Fatalf("the fixture has no case %s: regenerate it (codex/refpeer.md)", c.Name)
			}
			dir := t.TempDir()
			ckpt, files, err := loratest.WriteCase(rt, c, dir)
			if err != nil {
				t.Fatal(err)
			}
			ck, err := sd.LoadCheckpoint(rt, ckpt, sd.LoadOptions{FP32TextEncoder: true, SkipVAE: true})
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()

			km, err := sd.LoRAKeyMap(ck.Model, ck.CLIP)
			if err != nil {
				t.Fatal(err)
			}
			var lines []string
			for mod, tg := range km {
				if !plainDiffusersAttention(mod) {
					lines = append(lines, fmt.Sprintf("%s\t%s\t%d\t%d\n", mod, tg.Key, tg.Start, tg.Length))
				}
			}
			if got := (loratest.KeyMapDigest{Entries: len(lines), SHA256: loratest.DigestLines(lines)}); got != want.KeyMap {
				t.Errorf("key map %+v, ComfyUI's %+v", got, want.KeyMap)
			}

			for _, mode := range []lora.Mode{lora.Merge, lora.Runtime} {
				m, cl := ck.Model, ck.CLIP
				for i, path := range files {
					lf, err := lora.Open(rt, path)
					if err != nil {
						t.Fatal(err)
					}
					defer lf.Close()
					if m, cl, err = sd.LoadLoRA(m, cl, lf, c.LoRAs[i].StrengthModel, c.LoRAs[i].StrengthCLIP, sd.LoRAOptions{Mode: mode}); err != nil {
						t.Fatal(err)
					}
				}
				got := patchedWeights(t, ck.Model, ck.CLIP, m, cl)
				if !slices.Equal(sortedKeys(got), sortedKeys(want.Weights)) {
					t.Fatalf("%s: patched %v\nComfyUI patched %v", mode, sortedKeys(got), sortedKeys(want.Weights))
				}
				worst := 0.0
				for key, w := range want.Weights {
					worst = max(worst, compareStats(t, mode.String()+" "+key, got[key], w))
				}
				t.Logf("%s: %d weights, largest sampled |Δ| %.3g", mode, len(got), worst)
			}
		})
	}
}

// plainDiffusersAttention tells the key-map entries forgeflow adds beyond ComfyUI 0.3.64:
// diffusers/PEFT names of attention projections without ".processor."
// (UNetKeyMap's doc).
func plainDiffusersAttention(module string) bool {
	if strings.HasPrefix(module, "lora_") || strings.HasPrefix(module, "lycoris_") || strings.HasPrefix(module, lora.UNetPrefix) ||
		strings.HasPrefix(module, "text_encoder") || strings.Contains(module, ".processor.") {
		return false
	}
	return strings.Contains(module, ".to_q") || strings.Contains(module, ".to_k") || strings.Contains(module, ".to_v") ||
		strings.HasSuffix(module, ".to_out.0")
}

// patchedWeights returns the values of every weight the patched model and CLIP use
// differently from the base ones: merged copies, and weights with run-time patches
// folded in (W + Σ Up·Down).
func patchedWeights(t *testing.T, bm *sd.Model, bc *sd.CLIP, m *sd.Model, c *sd.CLIP) map[string][]float32 {
	t.Helper()
	out := map[string][]float32{}
	collect := func(base, net map[string]*gpu.Tensor, patches func(string) ([]patchT, bool)) {
		for k, w := range net {
			var ps []patchT
			has := false
			if strings.HasSuffix(k, ".weight") {
				ps, has = patches(k)
			}
			if w == base[k] && !has {
				continue
			}
			v, err := w.Float32()
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range ps {
				d := mm(p.up, p.down, p.out, p.r, p.in)
				for i := range v {
					v[i] += float32(d[i])
				}
			}
			out[k] = v
		}
	}
	tensors := func(ts map[string]*gpu.Tensor, err error) map[string]*gpu.Tensor {
		if err != nil {
			t.Fatal(err)
		}
		return ts
	}
	if n := m.LoRANetwork(); n != nil {
		collect(tensors(lora.NewNetwork(bm.UNet, lora.UNetPrefix, lora.Auto).Tensors()), tensors(n.Tensors()), func(k string) ([]patchT, bool) {
			ps, err := n.Patches(k)
			return toPatchT(t, ps), err == nil && len(ps) > 0
		})
	}
	for i, te := range c.Encoders {
		if n := te.LoRANetwork(); n != nil {
			base := bc.Encoders[i]
			collect(tensors(lora.NewNetwork(base.Encoder.Model, lora.CLIPPrefix(base.Name), lora.Auto).Tensors()), tensors(n.Tensors()), func(k string) ([]patchT, bool) {
				ps, err := n.Patches(k)
				return toPatchT(t, ps), err == nil && len(ps) > 0
			})
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// compareStats checks values against ComfyUI's digest and returns the largest sampled
// difference.
func compareStats(t *testing.T, name string, v []float32, w loratest.WeightStats) float64 {
	t.Helper()
	got := loratest.Stats(v)
	if got.Numel != w.Numel {
		t.Fatalf("%s: %d values, ComfyUI's %d", name, got.Numel, w.Numel)
	}
	if d := math.Abs(got.SumSq - w.SumSq); d > 1e-5*w.SumSq+1e-6 {
		t.Errorf("%s: sum of squares %v, ComfyUI's %v", name, got.SumSq, w.SumSq)
	}
	if d := math.Abs(got.Sum - w.Sum); d > 1e-5*math.Sqrt(w.SumSq*float64(w.Numel))+1e-6 {
		t.Errorf("%s: sum %v, ComfyUI's %v", name, got.Sum, w.Sum)
	}
	worst := 0.0
	for i, s := range w.Samples {
		g := got.Samples[i]
		d := math.Abs(g[1] - s[1])
		if g[0] != s[0] || d > 1e-5*(1+math.Abs(s[1])) {
			t.Errorf("%s[%v] = %v, ComfyUI's %v", name, s[0], g[1], s[1])
		}
		worst = max(worst, d)
	}
	return worst
}

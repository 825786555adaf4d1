package lora_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/flux"
	"github.com/forgeflow/forgeflow/diffusion/lora"
	"github.com/forgeflow/forgeflow/diffusion/lora/loratest"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/detect"
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
			if c.Family == detect.FamilyFluxDev {
				fluxReference(t, rt, c, want, ckpt, files)
				return
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
			checkKeyMap(t, km, want.KeyMap, plainDiffusersAttention)

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

// checkKeyMap compares km, less the entries extra tells, with ComfyUI's digest.
func checkKeyMap(t *testing.T, km lora.KeyMap, want loratest.KeyMapDigest, extra func(string) bool) {
	t.Helper()
	var lines []string
	for mod, tg := range km {
		if !extra(mod) {
			lines = append(lines, fmt.Sprintf("%s\t%s\t%d\t%d\n", mod, tg.Key, tg.Start, tg.Length))
		}
	}
	if got := (loratest.KeyMapDigest{Entries: len(lines), SHA256: loratest.DigestLines(lines)}); got != want {
		t.Errorf("key map %+v, ComfyUI's %+v", got, want)
	}
}

// fluxReference is TestComfyUIReference for a Flux case: the bare transformer file
// through flux.LoadFile and sd.NewFluxModel, the LoRAs through sd.LoadLoRA.
func fluxReference(t *testing.T, rt *gpu.Runtime, c loratest.Case, want loratest.ExpectedCase, ckpt string, files []string) {
	fm, err := flux.LoadFile(rt, ckpt, flux.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fm.Close()
	model := sd.NewFluxModel(rt, fm, ckpt)
	km, err := sd.LoRAKeyMap(model, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkKeyMap(t, km, want.KeyMap, func(string) bool { return false })
	for _, mode := range []lora.Mode{lora.Merge, lora.Runtime} {
		m := model
		for i, path := range files {
			lf, err := lora.Open(rt, path)
			if err != nil {
				t.Fatal(err)
			}
			defer lf.Close()
			if m, _, err = sd.LoadLoRA(m, nil, lf, c.LoRAs[i].StrengthModel, 0, sd.LoRAOptions{Mode: mode}); err != nil {
				t.Fatal(err)
			}
		}
		if m.WithoutLoRA().Net.(sd.FluxNetwork).Model != fm {
			t.Fatal("WithoutLoRA is not the loaded transformer")
		}
		got := changed(t, fm, m.FluxLoRANetwork())
		if !slices.Equal(sortedKeys(got), sortedKeys(want.Weights)) {
			t.Fatalf("%s: patched %v\nComfyUI patched %v", mode, sortedKeys(got), sortedKeys(want.Weights))
		}
		worst := 0.0
		for key, w := range want.Weights {
			worst = max(worst, compareStats(t, mode.String()+" "+key, got[key], w))
		}
		t.Logf("%s: %d weights, largest sampled |Δ| %.3g", mode, len(got), worst)
	}
}

// changed returns the values of every weight n's network uses differently from base:
// merged copies, and weights with run-time patches folded in (W + Σ Up·Down).
func changed[T any](t *testing.T, base *T, n *lora.Network[T]) map[string][]float32 {
	t.Helper()
	bt, err := lora.NewNetwork(base, n.Prefix, lora.Auto).Tensors()
	if err != nil {
		t.Fatal(err)
	}
	nt, err := n.Tensors()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]float32{}
	for k, w := range nt {
		var ps []patchT
		if strings.HasSuffix(k, ".weight") {
			p, err := n.Patches(k)
			if err == nil {
				ps = toPatchT(t, p)
			}
		}
		if w == bt[k] && len(ps) == 0 {
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
	return out
}

// patchedWeights is changed for a patched model and CLIP against their bases.
func patchedWeights(t *testing.T, bm *sd.Model, bc *sd.CLIP, m *sd.Model, c *sd.CLIP) map[string][]float32 {
	t.Helper()
	out := map[string][]float32{}
	if n := m.LoRANetwork(); n != nil {
		maps.Copy(out, changed(t, bm.UNet, n))
	}
	for i, te := range c.Encoders {
		if n := te.LoRANetwork(); n != nil {
			maps.Copy(out, changed(t, bc.Encoders[i].Encoder.Model, n))
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

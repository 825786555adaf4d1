package lora_test

import (
	"math"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/lora"
	"github.com/forgeflow/forgeflow/diffusion/lora/loratest"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/detect"
)

// TestScaleStack checks a scale patch's place in the stack, as calculate_weight applies
// ComfyUI's strength_model: a LoRA merged before a scale is scaled with the weight, one
// after it is not; in runtime mode a weight with a scale is merged (a scale has no
// low-rank form); factors of 1 and empty sets patch nothing; bad factors are refused.
func TestScaleStack(t *testing.T) {
	tn := loadTiny(t, detect.FamilySD1, weights.F32)
	m1 := "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
	f1 := loratest.New(3)
	f1.LoRA(m1, loratest.Kohya, 32, 4, 2, 32)
	l1 := openLoRA(t, tn.rt, f1)
	base := tn.snapshot(t, tn.model, tn.clip)
	r1 := ref{f1}
	delta := r1.lora(m1+".lora_up.weight", m1+".lora_down.weight", "", m1+".alpha")
	scale := func(v []float64, f float64) []float64 {
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = float64(float32(x) * float32(f))
		}
		return out
	}
	f64 := func(v []float32) []float64 { return f64s(v) }
	for _, mode := range []lora.Mode{lora.Merge, lora.Runtime} {
		t.Run(mode.String(), func(t *testing.T) {
			// LoRA, then ×1.5: (W + 0.8ΔW)·1.5.
			a, _, err := sd.LoadLoRA(tn.model, nil, l1, 0.8, 0, sd.LoRAOptions{Mode: mode})
			if err != nil {
				t.Fatal(err)
			}
			as, err := a.ScaleWeights(func(k string) float64 {
				if k == toQ {
					return 1.5
				}
				return 1
			}, mode)
			if err != nil {
				t.Fatal(err)
			}
			near(t, "lora then scale", tn.param(t, as, nil, toQ), scale(plus(f64(base[toQ]), delta, 0.8), 1.5), 2e-5)
			if ps, _ := as.LoRANetwork().Patches(toQ); len(ps) != 0 {
				t.Errorf("a scaled weight kept %d run-time patches", len(ps))
			}
			// ×1.5, then LoRA: W·1.5 + 0.8ΔW.
			s, err := tn.model.ScaleWeights(func(k string) float64 {
				if k == toQ {
					return 1.5
				}
				return 1
			}, mode)
			if err != nil {
				t.Fatal(err)
			}
			near(t, "scale", tn.param(t, s, nil, toQ), scale(f64(base[toQ]), 1.5), 0)
			sa, _, err := sd.LoadLoRA(s, nil, l1, 0.8, 0, sd.LoRAOptions{Mode: mode})
			if err != nil {
				t.Fatal(err)
			}
			near(t, "scale then lora", tn.param(t, sa, nil, toQ), plus(scale(f64(base[toQ]), 1.5), delta, 0.8), 2e-5)
		})
	}
	same, err := tn.model.ScaleWeights(func(string) float64 { return 1 }, lora.Auto)
	if err != nil || same != tn.model {
		t.Fatalf("factors of 1: %v, same model %v", err, same == tn.model)
	}
	set, err := lora.ScaleSet(map[string]float64{toQ: 1, conv1: 1})
	if err != nil || len(set.Patches) != 0 {
		t.Fatalf("ScaleSet of factors 1: %v, %d patches", err, len(set.Patches))
	}
	for _, bad := range []float64{math.NaN(), math.Inf(1)} {
		if _, err := tn.model.ScaleWeights(func(string) float64 { return bad }, lora.Auto); err == nil {
			t.Errorf("factor %v accepted", bad)
		}
	}
}

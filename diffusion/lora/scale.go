package lora

import (
	"fmt"
	"math"
	"sort"
)

// ScaleSet returns a patch set that multiplies each weight named in factors (by
// ComfyUI key, as Network.Params lists them) by its factor: ModelPatcher.add_patches
// with a (None,) patch at strength 0 and strength_model f, which calculate_weight turns
// into weight *= f (comfy_extras/nodes_attention_multiply.py). Applied through
// Network.With like a LoRA, a scale takes its place in the stack (a LoRA before it is
// scaled too, one after it is not), is computed in float32 and rounded once to the
// weight's dtype; it is always merged, never a run-time patch. A factor of 1 changes
// nothing and is left out; a set with no factor left patches nothing.
func ScaleSet(factors map[string]float64) (*Set, error) {
	keys := make([]string, 0, len(factors))
	for k := range factors {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	s := &Set{Patches: map[string][]Patch{}}
	for _, k := range keys {
		f := factors[k]
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("lora: scale of %s: factor %v", k, f)
		}
		if f == 1 {
			continue
		}
		s.Patches[k] = []Patch{{Target: Target{Key: k}, Adapter: &Adapter{Kind: KindScale, Module: k, Factor: f}}}
	}
	return s, nil
}

package t5

import (
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
)

// ggufProbe is a key only llama.cpp's T5 encoder layout ("t5encoder" GGUF files) has.
const ggufProbe = "enc.blk.0.attn_q.weight"

// ggufBlockNames maps llama.cpp's per-block tensor names to the transformers ones, as
// ComfyUI-GGUF's loader renames them (T5_SD_MAP).
var ggufBlockNames = map[string]string{
	"attn_q":     "layer.0.SelfAttention.q",
	"attn_k":     "layer.0.SelfAttention.k",
	"attn_v":     "layer.0.SelfAttention.v",
	"attn_o":     "layer.0.SelfAttention.o",
	"attn_norm":  "layer.0.layer_norm",
	"attn_rel_b": "layer.0.SelfAttention.relative_attention_bias",
	"ffn_gate":   "layer.1.DenseReluDense.wi_0",
	"ffn_up":     "layer.1.DenseReluDense.wi_1",
	"ffn_down":   "layer.1.DenseReluDense.wo",
	"ffn_norm":   "layer.1.layer_norm",
}

// transformersName returns the transformers key of a llama.cpp T5 encoder key
// ("enc.blk.3.ffn_up.weight" → "encoder.block.3.layer.1.DenseReluDense.wi_1.weight"), or
// false for a key that is not one (decoder tensors, metadata-like extras).
func transformersName(k string) (string, bool) {
	switch {
	case strings.HasPrefix(k, "token_embd."):
		return "shared." + k[len("token_embd."):], true
	case strings.HasPrefix(k, "enc.output_norm."):
		return "encoder.final_layer_norm." + k[len("enc.output_norm."):], true
	}
	rest, ok := strings.CutPrefix(k, "enc.blk.")
	if !ok {
		return "", false
	}
	idx, rest, ok := strings.Cut(rest, ".")
	if !ok || idx == "" || strings.Trim(idx, "0123456789") != "" {
		return "", false
	}
	name, suffix, ok := strings.Cut(rest, ".")
	if !ok {
		return "", false
	}
	hf, ok := ggufBlockNames[name]
	if !ok {
		return "", false
	}
	return "encoder.block." + idx + "." + hf + "." + suffix, true
}

// ggufNames serves a llama.cpp-named T5 encoder under the transformers names the Model's
// tags use: a renaming view over the same tensors, nothing copied. Keys that are not T5
// encoder tensors keep their names (and end up in the bind report's unused list).
type ggufNames struct {
	src    statedict.Source
	keys   []string
	stored map[string]string // served key → key in src
}

func newGGUFNames(src statedict.Source, prefix string) *ggufNames {
	g := &ggufNames{src: src, stored: map[string]string{}}
	for _, k := range src.Keys() {
		served := k
		if rest, ok := strings.CutPrefix(k, prefix); ok {
			if hf, ok := transformersName(rest); ok {
				served = prefix + hf
			}
		}
		g.stored[served] = k
		g.keys = append(g.keys, served)
	}
	return g
}

// Keys implements statedict.Source.
func (g *ggufNames) Keys() []string { return g.keys }

// Tensor implements statedict.Source.
func (g *ggufNames) Tensor(key string) (*gpu.Tensor, error) {
	if k, ok := g.stored[key]; ok {
		key = k
	}
	return g.src.Tensor(key)
}

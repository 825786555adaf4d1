package sd

import (
	"fmt"
	"io"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/flux"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/gguf"
)

// Random-weight Flux all-in-one checkpoints with the real key layout (the transformer
// part alone is diffusion/flux's RandomSpec; the VAE and text encoders are the writers of
// checkpoint_random.go and sd3_random.go).

// RandomFluxSpec describes a random Flux all-in-one checkpoint like ComfyUI's
// flux1-schnell-fp8: the transformer, the 16-channel VAE, CLIP-L and T5-XXL, each of
// the last three left out when zero.
type RandomFluxSpec struct {
	Model flux.RandomSpec // its Prefix is ignored: the checkpoint puts model.diffusion_model.
	VAE   RandomVAE
	CLIPL RandomText
	T5    RandomT5
	// DType is the storage of every tensor (F16 when empty).
	DType weights.DType
	Seed  uint64
}

// TinyFluxRandomSpec is a small Flux checkpoint of the real layout for tests: the
// transformer of flux.TinyRandomSpec with a 64-wide context, VAE with a spatial factor
// of 2, 64-wide CLIP-L (one 64-wide head; the transformer reads 32 of its pooled output) and a
// one-block T5 of width 64 over a 512-piece vocabulary.
func TinyFluxRandomSpec(guidance bool) RandomFluxSpec {
	m := flux.TinyRandomSpec(guidance)
	m.Context, m.Vec = 64, 32
	return RandomFluxSpec{Model: m,
		VAE:   RandomVAE{Ch: 32, Mult: []int{1, 2}, ResBlocks: 1, Latent: 16, NoQuantConv: true},
		CLIPL: RandomText{Width: 64, Layers: 2, Vocab: 1024},
		T5:    RandomT5{DModel: 64, DFF: 64, Heads: 2, DKV: 16, Layers: 1, Vocab: 512}}
}

// Tensors lists the checkpoint's tensors under ComfyUI's key names.
func (s RandomFluxSpec) Tensors() ([]RandomTensor, error) {
	m := s.Model
	m.Prefix = unetPrefix
	mt, err := m.Tensors()
	if err != nil {
		return nil, err
	}
	var ts randomTensors
	for _, t := range mt {
		ts.add(t.Name, t.Scale, t.Offset, t.Shape...)
	}
	if len(s.VAE.Mult) > 0 {
		ts.vae(fluxVAEPrefix, s.VAE)
	}
	if s.CLIPL.Width > 0 {
		ts.hfCLIP(fluxCLIPLPrefix+"text_model.", s.CLIPL)
	}
	if s.T5.DModel > 0 {
		ts.t5(fluxT5Prefix, s.T5)
	}
	return ts, nil
}

// checkRandomFlux checks that the spec's text encoders fit its transformer.
func checkRandomFlux(s RandomFluxSpec) error {
	if s.CLIPL.Width > 0 && s.CLIPL.Width < s.Model.Vec {
		return fmt.Errorf("sd: random Flux: CLIP-L width %d is narrower than the transformer's vector %d", s.CLIPL.Width, s.Model.Vec)
	}
	if s.T5.DModel > 0 && s.T5.DModel != s.Model.Context {
		return fmt.Errorf("sd: random Flux: T5 width %d is not the transformer's context %d", s.T5.DModel, s.Model.Context)
	}
	return nil
}

// WriteRandomFlux writes the spec's all-in-one checkpoint as safetensors.
func WriteRandomFlux(w io.Writer, s RandomFluxSpec) error {
	if err := checkRandomFlux(s); err != nil {
		return err
	}
	ts, err := s.Tensors()
	if err != nil {
		return err
	}
	return WriteRandomTensors(w, ts, s.Seed, s.DType)
}

// TextParts returns the spec's text encoders as an SD3 spec, whose PartTensors and
// WriteRandomSD3Part write the separate clip_l and t5xxl files a DualCLIPLoader loads.
func (s RandomFluxSpec) TextParts() RandomSD3Spec {
	return RandomSD3Spec{CLIPL: s.CLIPL, T5: s.T5, DType: s.DType, Seed: s.Seed}
}

// t5GGUFNames maps a transformers T5 encoder block tensor to llama.cpp's name (the
// "t5encoder" GGUF layout that city96's t5-v1_1-xxl-encoder-gguf files and the refpeer
// kit's T5 use).
var t5GGUFNames = []struct{ hf, gguf string }{
	{"layer.0.SelfAttention.q.", "attn_q."}, {"layer.0.SelfAttention.k.", "attn_k."},
	{"layer.0.SelfAttention.v.", "attn_v."}, {"layer.0.SelfAttention.o.", "attn_o."},
	{"layer.0.SelfAttention.relative_attention_bias.", "attn_rel_b."}, {"layer.0.layer_norm.", "attn_norm."},
	{"layer.1.DenseReluDense.wi_0.", "ffn_gate."}, {"layer.1.DenseReluDense.wi_1.", "ffn_up."},
	{"layer.1.DenseReluDense.wo.", "ffn_down."}, {"layer.1.layer_norm.", "ffn_norm."},
}

// t5GGUFName returns llama.cpp's name of a transformers T5 encoder tensor.
func t5GGUFName(hf string) (string, error) {
	switch {
	case strings.HasPrefix(hf, "shared."):
		return "token_embd." + hf[len("shared."):], nil
	case strings.HasPrefix(hf, "encoder.final_layer_norm."):
		return "enc.output_norm." + hf[len("encoder.final_layer_norm."):], nil
	}
	if rest, ok := strings.CutPrefix(hf, "encoder.block."); ok {
		if idx, rest, ok := strings.Cut(rest, "."); ok {
			for _, n := range t5GGUFNames {
				if suffix, ok := strings.CutPrefix(rest, n.hf); ok {
					return "enc.blk." + idx + "." + n.gguf + suffix, nil
				}
			}
		}
	}
	return "", fmt.Errorf("sd: no llama.cpp name for T5 tensor %q", hf)
}

// WriteRandomT5GGUF writes a random T5 encoder as a llama.cpp "t5encoder" GGUF file:
// matrices whose rows are whole blocks in qtype, the relative position table in F16
// and the norms in F32, as the released T5-XXL GGUFs store them.
func WriteRandomT5GGUF(w io.Writer, t RandomT5, seed uint64, qtype gguf.Type) error {
	if !qtype.CanQuantize() {
		return fmt.Errorf("sd: cannot write GGUF type %s", qtype)
	}
	var ts randomTensors
	ts.t5("", t)
	wts := make([]gguf.WriteTensor, len(ts))
	for i, rt := range ts {
		name, err := t5GGUFName(rt.Name)
		if err != nil {
			return err
		}
		typ := qtype
		cols := rt.Shape[len(rt.Shape)-1]
		switch {
		case len(rt.Shape) == 1:
			typ = gguf.TypeF32
		case strings.Contains(name, "attn_rel_b") || cols%qtype.BlockSize() != 0:
			typ = gguf.TypeF16
		}
		dims := make([]uint64, len(rt.Shape))
		for j, d := range rt.Shape {
			dims[len(dims)-1-j] = uint64(d)
		}
		count := int64(1)
		for _, d := range rt.Shape {
			count *= int64(d)
		}
		n, err := typ.RowSize(count)
		if err != nil {
			return err
		}
		data := make([]byte, n)
		if err := gguf.Quantize(data, typ, rt.Values(seed)); err != nil {
			return fmt.Errorf("sd: T5 tensor %s: %w", name, err)
		}
		wts[i] = gguf.WriteTensor{Name: name, Type: typ, Dims: dims, Data: data}
	}
	return gguf.Write(w, []gguf.KV{
		{Key: "general.architecture", Type: gguf.TypeString, Value: "t5encoder"},
		{Key: "general.description", Type: gguf.TypeString, Value: "forgeflow random weights"},
	}, wts)
}

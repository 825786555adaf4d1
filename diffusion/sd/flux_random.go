package sd

import (
	"fmt"
	"io"

	"github.com/forgeflow/forgeflow/diffusion/flux"
	"github.com/forgeflow/forgeflow/weights"
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

// WriteRandomFlux writes the spec's all-in-one checkpoint as safetensors.
func WriteRandomFlux(w io.Writer, s RandomFluxSpec) error {
	if s.CLIPL.Width > 0 && s.CLIPL.Width < s.Model.Vec {
		return fmt.Errorf("sd: random Flux: CLIP-L width %d is narrower than the transformer's vector %d", s.CLIPL.Width, s.Model.Vec)
	}
	if s.T5.DModel > 0 && s.T5.DModel != s.Model.Context {
		return fmt.Errorf("sd: random Flux: T5 width %d is not the transformer's context %d", s.T5.DModel, s.Model.Context)
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

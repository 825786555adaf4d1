package sd

import (
	"fmt"
	"io"
	"math"

	"github.com/forgeflow/forgeflow/diffusion/mmdit"
	"github.com/forgeflow/forgeflow/weights"
)

// Random-weight SD3 checkpoints and text encoder files with the real key layout (see
// checkpoint_random.go for the SD UNet families).

// Key prefixes of an all-in-one SD3 checkpoint (supported_models.SD3: the text encoders
// under "text_encoders.", the VAE under "first_stage_model.").
const (
	sd3CLIPLPrefix = "text_encoders.clip_l.transformer."
	sd3CLIPGPrefix = "text_encoders.clip_g.transformer."
	sd3T5Prefix    = "text_encoders.t5xxl.transformer."
)

// RandomT5 sizes a T5 v1.1 encoder (gated-GELU feed-forward).
type RandomT5 struct {
	DModel, DFF, Heads, DKV, Layers, Vocab int
}

// RandomSD3Spec describes a random SD3 checkpoint: the MMDiT, the 16-channel VAE and
// the text encoders, each of which may be left out (zero width).
type RandomSD3Spec struct {
	MMDiT mmdit.RandomSpec
	VAE   RandomVAE
	// CLIPL and CLIPG are transformers-layout CLIP text models; CLIPG.Projection is its
	// text_projection width.
	CLIPL, CLIPG RandomText
	T5           RandomT5
	// DType is the storage of every tensor (F16 when empty).
	DType weights.DType
	Seed  uint64
}

// SD3MediumRandomSpec is SD3 medium with CLIP-L, CLIP-G and T5-XXL
// (sd3_medium_incl_clips_t5xxlfp16's layout).
func SD3MediumRandomSpec() RandomSD3Spec {
	return RandomSD3Spec{MMDiT: mmdit.SD3MediumSpec(), VAE: FluxRandomVAE(),
		CLIPL: RandomText{Width: 768, Layers: 12, Vocab: 49408},
		CLIPG: RandomText{Width: 1280, Layers: 32, Vocab: 49408, Projection: 1280},
		T5:    RandomT5{DModel: 4096, DFF: 10240, Heads: 64, DKV: 64, Layers: 24, Vocab: 32128}}
}

// TinySD3RandomSpec is a small SD3 of the real layout for tests: a 2-head, 2-block
// MMDiT (SD3.5 medium's q/k norms and dual attention in block 0 when sd35), a VAE
// with a spatial factor of 2, 64-wide CLIP-L (3 layers: SD3 reads its penultimate) and CLIP-G (32 layers, so that
// ComfyUI's layer-count rule tells it from CLIP-L) over a 1024-token vocabulary, and a
// one-block T5 4096 wide (SD3 sets T5's tokens after CLIP states padded to 4096) over a
// 512-piece vocabulary. The pooled vector is CLIP-L's and CLIP-G's outputs, 128 wide.
func TinySD3RandomSpec(sd35 bool) RandomSD3Spec {
	m := mmdit.RandomSpec{Depth: 2, InChannels: 16, PatchSize: 2, ADMInChannels: 128,
		ContextInDim: 4096, PosEmbedMaxSize: 16}
	if sd35 {
		m.QKNorm, m.XBlockSelfAttn = true, []int{0}
	}
	return RandomSD3Spec{MMDiT: m,
		VAE:   RandomVAE{Ch: 32, Mult: []int{1, 2}, ResBlocks: 1, Latent: 16, NoQuantConv: true},
		CLIPL: RandomText{Width: 64, Layers: 3, Vocab: 1024},
		CLIPG: RandomText{Width: 64, Layers: 32, Vocab: 1024, Projection: 64},
		T5:    RandomT5{DModel: 4096, DFF: 64, Heads: 2, DKV: 16, Layers: 1, Vocab: 512}}
}

// SD3Parts are the parts of an SD3 spec that PartTensors writes as files of their own.
const (
	SD3PartModel = "model" // the MMDiT under no prefix (a diffusion_models file)
	SD3PartVAE   = "vae"   // the VAE under no prefix
	SD3PartCLIPL = "clip_l"
	SD3PartCLIPG = "clip_g"
	SD3PartT5    = "t5xxl"
)

// Tensors lists the all-in-one checkpoint's tensors under ComfyUI's key names.
func (s RandomSD3Spec) Tensors() ([]RandomTensor, error) {
	var ts randomTensors
	if err := ts.mmdit(unetPrefix, s.MMDiT); err != nil {
		return nil, err
	}
	if len(s.VAE.Mult) > 0 {
		ts.vae(vaePrefix, s.VAE)
	}
	if s.CLIPL.Width > 0 {
		ts.hfCLIP(sd3CLIPLPrefix+"text_model.", s.CLIPL)
	}
	if s.CLIPG.Width > 0 {
		ts.hfCLIP(sd3CLIPGPrefix+"text_model.", s.CLIPG)
		ts.linear(sd3CLIPGPrefix+"text_projection", s.CLIPG.Projection, s.CLIPG.Width, false)
	}
	if s.T5.DModel > 0 {
		ts.t5(sd3T5Prefix, s.T5)
	}
	return ts, nil
}

// PartTensors lists one part as its own file holds it: a diffusion_models file (bare
// MMDiT keys), a VAE file, or a text encoder file as ComfyUI's text_encoders folder holds
// them (CLIP "text_model.*" with "text_projection.weight", T5 "encoder.*" and
// "shared.weight").
func (s RandomSD3Spec) PartTensors(part string) ([]RandomTensor, error) {
	var ts randomTensors
	switch part {
	case SD3PartModel:
		if err := ts.mmdit("", s.MMDiT); err != nil {
			return nil, err
		}
	case SD3PartVAE:
		ts.vae("", s.VAE)
	case SD3PartCLIPL:
		ts.hfCLIP("text_model.", s.CLIPL)
		ts.linear("text_projection", s.CLIPL.Width, s.CLIPL.Width, false)
	case SD3PartCLIPG:
		ts.hfCLIP("text_model.", s.CLIPG)
		ts.linear("text_projection", s.CLIPG.Projection, s.CLIPG.Width, false)
	case SD3PartT5:
		ts.t5("", s.T5)
	default:
		return nil, fmt.Errorf("sd: no SD3 part %q", part)
	}
	return ts, nil
}

// WriteRandomSD3 writes the spec's all-in-one checkpoint as safetensors.
func WriteRandomSD3(w io.Writer, s RandomSD3Spec) error {
	ts, err := s.Tensors()
	if err != nil {
		return err
	}
	return WriteRandomTensors(w, ts, s.Seed, s.DType)
}

// WriteRandomSD3Part writes one part of the spec as its own file.
func WriteRandomSD3Part(w io.Writer, s RandomSD3Spec, part string) error {
	ts, err := s.PartTensors(part)
	if err != nil {
		return err
	}
	return WriteRandomTensors(w, ts, s.Seed, s.DType)
}

func (ts *randomTensors) mmdit(p string, spec mmdit.RandomSpec) error {
	m, err := spec.Tensors(p)
	if err != nil {
		return err
	}
	for _, t := range m {
		ts.add(t.Name, t.Scale, t.Offset, t.Shape...)
	}
	return nil
}

// t5 adds a transformers-layout T5 encoder under p (…"shared.weight",
// "encoder.block.N…"), the relative position table in block 0 only.
func (ts *randomTensors) t5(p string, t RandomT5) {
	inner := t.Heads * t.DKV
	ts.add(p+"shared.weight", 1, 0, t.Vocab, t.DModel)
	for i := 0; i < t.Layers; i++ {
		b := fmt.Sprintf("%sencoder.block.%d.layer.", p, i)
		for _, n := range []string{"q", "k", "v"} {
			ts.add(b+"0.SelfAttention."+n+".weight", 1/math.Sqrt(float64(t.DModel)), 0, inner, t.DModel)
		}
		ts.add(b+"0.SelfAttention.o.weight", 1/math.Sqrt(float64(inner)), 0, t.DModel, inner)
		if i == 0 {
			ts.add(b+"0.SelfAttention.relative_attention_bias.weight", 0.5, 0, 32, t.Heads)
		}
		ts.add(b+"0.layer_norm.weight", 0.1, 1, t.DModel)
		ts.add(b+"1.DenseReluDense.wi_0.weight", 1/math.Sqrt(float64(t.DModel)), 0, t.DFF, t.DModel)
		ts.add(b+"1.DenseReluDense.wi_1.weight", 1/math.Sqrt(float64(t.DModel)), 0, t.DFF, t.DModel)
		ts.add(b+"1.DenseReluDense.wo.weight", 1/math.Sqrt(float64(t.DFF)), 0, t.DModel, t.DFF)
		ts.add(b+"1.layer_norm.weight", 0.1, 1, t.DModel)
	}
	ts.add(p+"encoder.final_layer_norm.weight", 0.1, 1, t.DModel)
}

package detect

import (
	"slices"
	"strings"
)

// TextEncoder describes one text encoder found in a file.
type TextEncoder struct {
	// Prefix is what this encoder's keys start with, up to and including the part
	// before the model's own names ("cond_stage_model.transformer.text_model.",
	// "conditioner.embedders.1.model.", "text_encoders.t5xxl.transformer.", "").
	Prefix string
	Family Family
	// Format is the key naming: "hf" (transformers CLIPTextModel: encoder.layers.N),
	// "open_clip" (transformer.resblocks.N), "t5" (transformers T5: encoder.block.N) or
	// "gguf" (llama.cpp T5 names: enc.blk.N).
	Format string
	// Exact is true when the sizes are those of the released encoder of Family.
	Exact bool
	CLIP  *CLIPConfig
	T5    *T5Config
}

// CLIPConfig is a CLIP text transformer's configuration (comfy/clip_model.py).
type CLIPConfig struct {
	HiddenSize       int
	Layers           int
	IntermediateSize int
	VocabSize        int
	MaxPositions     int
	// NumHeads is hidden size / 64 for the released encoders; 0 when not Exact (the
	// head count cannot be read from shapes).
	NumHeads int
	// HiddenAct comes from the family: "quick_gelu" for CLIP-L, "gelu" for CLIP-G/H.
	HiddenAct string
	// ProjectionDim is the text projection's output width (0 without one).
	ProjectionDim int
}

// T5Config is a T5 encoder's configuration (comfy/text_encoders/t5.py).
type T5Config struct {
	DModel    int
	DFF       int
	DKV       int
	NumHeads  int
	NumLayers int
	VocabSize int // 0 when the file has no embedding
	// RelAttnBuckets is relative_attention_num_buckets (32).
	RelAttnBuckets int
	// Gated is the v1.1 feed-forward (wi_0, wi_1; gelu_pytorch_tanh); false is the
	// original T5's (wi; relu).
	Gated bool
}

// clipFamily applies comfy/sd.py detect_te_model's layer-count rule: a 31st layer
// means CLIP-G, a 23rd CLIP-H, anything else CLIP-L.
func clipFamily(layers, hidden int) (Family, bool) {
	switch {
	case layers > 30:
		return FamilyCLIPG, layers == 32 && hidden == 1280
	case layers > 22:
		return FamilyCLIPH, layers == 24 && hidden == 1024
	default:
		return FamilyCLIPL, layers == 12 && hidden == 768
	}
}

// visionPrefix reports prefixes of image encoders, whose layers look like text ones.
func visionPrefix(p string) bool {
	return strings.HasSuffix(p, "vision_model.") || strings.HasSuffix(p, "visual.")
}

// prefixesOf returns every distinct prefix that precedes marker in some key, in key
// order.
func (s *sd) prefixesOf(marker string) []string {
	var out []string
	for _, k := range s.keys {
		if i := strings.Index(k, marker); i >= 0 && (i == 0 || k[i-1] == '.') && k[i:] == marker {
			if p := k[:i]; !slices.Contains(out, p) && !visionPrefix(p) {
				out = append(out, p)
			}
		}
	}
	return out
}

func detectTextEncoders(s *sd) []TextEncoder {
	var out []TextEncoder
	// transformers CLIPTextModel; old SD1 files lack the "text_model." level.
	for _, p := range s.prefixesOf("encoder.layers.0.self_attn.q_proj.weight") {
		c := &CLIPConfig{}
		c.HiddenSize = s.dim(p+"encoder.layers.0.self_attn.q_proj.weight", 0)
		c.Layers = s.countBlocks(p + "encoder.layers.%d.")
		c.IntermediateSize = s.dim(p+"encoder.layers.0.mlp.fc1.weight", 0)
		c.VocabSize = s.dim(p+"embeddings.token_embedding.weight", 0)
		c.MaxPositions = s.dim(p+"embeddings.position_embedding.weight", 0)
		parent := strings.TrimSuffix(p, "text_model.")
		c.ProjectionDim = s.dim(parent+"text_projection.weight", 0)
		out = append(out, clipEncoder(p, "hf", c))
	}
	for _, p := range s.prefixesOf("transformer.resblocks.0.attn.in_proj_weight") {
		c := &CLIPConfig{}
		c.HiddenSize = s.dim(p+"transformer.resblocks.0.attn.in_proj_weight", 1)
		c.Layers = s.countBlocks(p + "transformer.resblocks.%d.")
		c.IntermediateSize = s.dim(p+"transformer.resblocks.0.mlp.c_fc.weight", 0)
		c.VocabSize = s.dim(p+"token_embedding.weight", 0)
		c.MaxPositions = s.dim(p+"positional_embedding", 0)
		c.ProjectionDim = s.dim(p+"text_projection", 1)
		out = append(out, clipEncoder(p, "open_clip", c))
	}
	for _, p := range s.prefixesOf("encoder.block.0.layer.0.SelfAttention.q.weight") {
		c := &T5Config{}
		q := p + "encoder.block.0.layer.0.SelfAttention.q.weight"
		rel := p + "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
		c.DModel = s.dim(q, 1)
		c.NumHeads = s.dim(rel, 1)
		c.RelAttnBuckets = s.dim(rel, 0)
		if c.NumHeads > 0 {
			c.DKV = s.dim(q, 0) / c.NumHeads
		}
		c.NumLayers = s.countBlocks(p + "encoder.block.%d.")
		c.Gated = s.has(p + "encoder.block.0.layer.1.DenseReluDense.wi_0.weight")
		if c.Gated {
			c.DFF = s.dim(p+"encoder.block.0.layer.1.DenseReluDense.wi_0.weight", 0)
		} else {
			c.DFF = s.dim(p+"encoder.block.0.layer.1.DenseReluDense.wi.weight", 0)
		}
		c.VocabSize = s.dim(p+"shared.weight", 0)
		if c.VocabSize == 0 {
			c.VocabSize = s.dim(p+"encoder.embed_tokens.weight", 0)
		}
		out = append(out, t5Encoder(p, "t5", c))
	}
	// llama.cpp's names for a T5 encoder in GGUF files (the t5encoder architecture that
	// ComfyUI-GGUF loads, renaming enc.blk.N.attn_q to encoder.block.N...q and so on).
	if s.has("enc.blk.0.attn_q.weight") {
		c := &T5Config{}
		c.DModel = s.dim("enc.blk.0.attn_q.weight", 1)
		c.NumHeads = s.dim("enc.blk.0.attn_rel_b.weight", 1)
		c.RelAttnBuckets = s.dim("enc.blk.0.attn_rel_b.weight", 0)
		if c.NumHeads > 0 {
			c.DKV = s.dim("enc.blk.0.attn_q.weight", 0) / c.NumHeads
		}
		c.NumLayers = s.countBlocks("enc.blk.%d.")
		c.Gated = s.has("enc.blk.0.ffn_gate.weight")
		c.DFF = s.dim("enc.blk.0.ffn_up.weight", 0)
		c.VocabSize = s.dim("token_embd.weight", 0)
		out = append(out, t5Encoder("", "gguf", c))
	}
	return out
}

func clipEncoder(prefix, format string, c *CLIPConfig) TextEncoder {
	fam, exact := clipFamily(c.Layers, c.HiddenSize)
	c.HiddenAct = "gelu"
	if fam == FamilyCLIPL {
		c.HiddenAct = "quick_gelu"
	}
	if exact {
		c.NumHeads = c.HiddenSize / 64
	}
	return TextEncoder{Prefix: prefix, Family: fam, Format: format, Exact: exact, CLIP: c}
}

// t5Encoder classifies a T5 encoder as comfy/sd.py detect_te_model does for the
// released sizes (24 blocks; 4096 wide: XXL, 2048: XL). Other gated (v1.1) encoders are
// reported as T5-XXL-shaped, not Exact; ungated ones as FamilyT5.
func t5Encoder(prefix, format string, c *T5Config) TextEncoder {
	te := TextEncoder{Prefix: prefix, Format: format, T5: c}
	switch {
	case c.Gated && c.NumLayers == 24 && c.DModel == 4096:
		te.Family, te.Exact = FamilyT5XXL, true
	case c.Gated && c.NumLayers == 24 && c.DModel == 2048:
		te.Family, te.Exact = FamilyT5XL, true
	case c.Gated:
		te.Family = FamilyT5XXL
	default:
		te.Family = FamilyT5
	}
	return te
}

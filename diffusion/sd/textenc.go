package sd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"

	"github.com/forgeflow/forgeflow/diffusion/clip"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/detect"
)

// encoderRole is how ComfyUI configures one text encoder of a family
// (comfy/sd1_clip.py SDClipModel, comfy/sdxl_clip.py, comfy/text_encoders/sd2_clip.py).
type encoderRole struct {
	name       string // "l", "h", "g": the key of the token dict
	activation string // quick_gelu (OpenAI CLIP-L) or gelu (OpenCLIP)
	// layer is the default output: 0 the last layer final-normed, −2 the penultimate.
	layer      int
	normHidden bool
	// padEnd pads with the end token (CLIP-L); OpenCLIP tokenizers pad with 0.
	padEnd bool
	// projected: the pooled output goes through text_projection.
	projected bool
	// embedKey selects the tensor of a multi-encoder embedding file.
	embedKey string
}

var (
	// SD1.x: CLIP-L, last layer, final-normed, pooled not projected (SD1ClipModel as
	// loaded from a checkpoint: return_projected_pooled=False).
	roleSD1L = encoderRole{name: "l", activation: "quick_gelu", layer: 0, normHidden: true, padEnd: true, embedKey: "clip_l"}
	// SD2.x: OpenCLIP-H, penultimate layer, final-normed, pad 0 (SD2ClipHModel).
	roleSD2H = encoderRole{name: "h", activation: "gelu", layer: -2, normHidden: true, projected: true, embedKey: "clip_h"}
	// SDXL: CLIP-L at hidden −2 without the final norm, OpenCLIP-G penultimate without
	// the final norm, projected pooled (SDXLClipModel, SDXLClipG).
	roleSDXLL = encoderRole{name: "l", activation: "quick_gelu", layer: -2, normHidden: false, padEnd: true, embedKey: "clip_l"}
	roleSDXLG = encoderRole{name: "g", activation: "gelu", layer: -2, normHidden: false, projected: true, embedKey: "clip_g"}
)

// Token start/end ids of every released CLIP vocabulary, used when no vocabulary is
// loaded (the tokenizer's own ids win when there is one).
const (
	startToken = 49406
	endToken   = 49407
)

// loadFamilyCLIP builds a checkpoint's text encoders as the family's
// process_clip_state_dict finds them (comfy/supported_models.py).
func loadFamilyCLIP(rt *gpu.Runtime, src *statedict.FileSource, fam detect.Family, opts LoadOptions) (*CLIP, error) {
	type part struct {
		prefix   string
		openCLIP bool
		role     encoderRole
	}
	var parts []part
	switch fam {
	case detect.FamilySD1:
		p := "cond_stage_model.transformer.text_model."
		if len(keysUnder(src.File(), p)) == 0 {
			p = "cond_stage_model.transformer." // pre-transformers-4.x SD1 files lack text_model.
		}
		parts = []part{{p, false, roleSD1L}}
	case detect.FamilySD2:
		p := "cond_stage_model.model."
		if len(keysUnder(src.File(), p)) == 0 {
			p = "conditioner.embedders.0.model." // SD2.x saved in the sgm layout
		}
		parts = []part{{p, true, roleSD2H}}
	case detect.FamilySDXL:
		parts = []part{
			{"conditioner.embedders.0.transformer.text_model.", false, roleSDXLL},
			{"conditioner.embedders.1.model.", true, roleSDXLG},
		}
	case detect.FamilySDXLRefiner:
		parts = []part{{"conditioner.embedders.0.model.", true, roleSDXLG}}
	default:
		return nil, &UnsupportedError{Path: src.File().Name(), What: fmt.Sprintf("text encoders of %s models", fam)}
	}
	c := &CLIP{Runtime: rt}
	for _, p := range parts {
		var te *TextEncoder
		var err error
		if p.openCLIP {
			te, err = loadOpenCLIP(rt, src, p.prefix, p.role, opts)
		} else {
			te, err = loadHFCLIP(rt, src, p.prefix, p.role, opts)
		}
		if err != nil {
			return nil, err
		}
		c.Encoders = append(c.Encoders, te)
	}
	return c, nil
}

// loadHFCLIP binds a transformers-layout CLIPTextModel under prefix ("…text_model.").
func loadHFCLIP(rt *gpu.Runtime, src *statedict.FileSource, prefix string, role encoderRole, opts LoadOptions) (*TextEncoder, error) {
	if len(keysUnder(src.File(), prefix+"encoder.layers.")) == 0 {
		return nil, &FormatError{Path: src.File().Name(), Err: fmt.Errorf("no CLIP-%s text encoder: no %sencoder.layers.* tensors", role.name, prefix)}
	}
	return bindTextModel(rt, src, prefix, role, "", opts)
}

// loadOpenCLIP maps an OpenCLIP text tower under prefix onto the transformers layout the
// text model binds, as comfy/utils.py clip_text_transformers_convert does:
//
//	token_embedding.weight                 → embeddings.token_embedding.weight
//	positional_embedding                   → embeddings.position_embedding.weight
//	ln_final.*                             → final_layer_norm.*
//	transformer.resblocks.N.ln_1/ln_2      → encoder.layers.N.layer_norm1/2
//	transformer.resblocks.N.attn.in_proj_* → self_attn.{q,k,v}_proj (thirds of the rows)
//	transformer.resblocks.N.attn.out_proj  → self_attn.out_proj
//	transformer.resblocks.N.mlp.c_fc/c_proj → mlp.fc1/fc2
//	text_projection (in, out)              → text_projection.weight, transposed
//
// The renamed keys live under prefix+"hf." in the source; nothing is copied until bound.
func loadOpenCLIP(rt *gpu.Runtime, src *statedict.FileSource, prefix string, role encoderRole, opts LoadOptions) (*TextEncoder, error) {
	in0 := prefix + "transformer.resblocks.0.attn.in_proj_weight"
	if !src.Has(in0) {
		return nil, &FormatError{Path: src.File().Name(), Err: fmt.Errorf("no OpenCLIP-%s text encoder: %s is missing", role.name, in0)}
	}
	hf := prefix + "hf."
	alias := func(to, from string) {
		if src.Has(from) {
			src.Alias(hf+to, statedict.Derived{Stored: from})
		}
	}
	alias("embeddings.token_embedding.weight", prefix+"token_embedding.weight")
	alias("embeddings.position_embedding.weight", prefix+"positional_embedding")
	alias("final_layer_norm.weight", prefix+"ln_final.weight")
	alias("final_layer_norm.bias", prefix+"ln_final.bias")
	for i := 0; ; i++ {
		from := prefix + "transformer.resblocks." + strconv.Itoa(i) + "."
		if !src.Has(from + "attn.in_proj_weight") {
			break
		}
		to := "encoder.layers." + strconv.Itoa(i) + "."
		for _, n := range [][2]string{
			{"layer_norm1.", "ln_1."}, {"layer_norm2.", "ln_2."},
			{"self_attn.out_proj.", "attn.out_proj."},
			{"mlp.fc1.", "mlp.c_fc."}, {"mlp.fc2.", "mlp.c_proj."},
		} {
			alias(to+n[0]+"weight", from+n[1]+"weight")
			alias(to+n[0]+"bias", from+n[1]+"bias")
		}
		info, _ := src.File().Info(from + "attn.in_proj_weight")
		if len(info.Shape) != 2 || info.Shape[0]%3 != 0 {
			return nil, &FormatError{Path: src.File().Name(), Err: fmt.Errorf("%sattn.in_proj_weight has shape %v, want (3·width, width)", from, info.Shape)}
		}
		w := int(info.Shape[0] / 3)
		for j, qkv := range []string{"q_proj", "k_proj", "v_proj"} {
			src.Alias(hf+to+"self_attn."+qkv+".weight", statedict.Derived{Stored: from + "attn.in_proj_weight", From: j * w, N: w})
			if src.Has(from + "attn.in_proj_bias") {
				src.Alias(hf+to+"self_attn."+qkv+".bias", statedict.Derived{Stored: from + "attn.in_proj_bias", From: j * w, N: w})
			}
		}
	}
	proj := ""
	if src.Has(prefix + "text_projection") {
		proj = hf + "text_projection.weight"
		src.Alias(proj, statedict.Derived{Stored: prefix + "text_projection", Transpose: true})
	}
	return bindTextModel(rt, src, hf, role, proj, opts)
}

// bindTextModel binds a transformers-layout text model under prefix and wraps it in an
// encoder configured for role. projKey names the projection matrix (out, in), or "".
func bindTextModel(rt *gpu.Runtime, src *statedict.FileSource, prefix string, role encoderRole, projKey string, opts LoadOptions) (*TextEncoder, error) {
	m := &clip.TextModel{Activation: role.activation, EOS: endToken}
	var weightsSrc statedict.Source = f16Source{src, rt}
	if opts.FP32TextEncoder {
		weightsSrc = src
	}
	if _, err := statedict.Bind(rt, weightsSrc, prefix, m); err != nil {
		return nil, &FormatError{Path: src.File().Name(), Err: fmt.Errorf("CLIP-%s: %w", role.name, err)}
	}
	if len(m.Layers) == 0 {
		return nil, &FormatError{Path: src.File().Name(), Err: fmt.Errorf("CLIP-%s has no layers", role.name)}
	}
	hidden := m.Embeddings.Token.Dim(1)
	headDim := opts.CLIPHeadDim
	if headDim <= 0 {
		headDim = 64
	}
	if hidden%headDim != 0 {
		return nil, &FormatError{Path: src.File().Name(), Err: fmt.Errorf("CLIP-%s width %d is not a multiple of the %d-wide attention heads", role.name, hidden, headDim)}
	}
	m.Heads = hidden / headDim
	enc := &clip.Encoder{Model: m, Layer: role.layer, NormHidden: role.normHidden,
		Start: startToken, End: endToken, Pad: 0}
	if role.padEnd {
		enc.Pad = endToken
	}
	if role.projected && projKey != "" {
		p, err := weightsSrc.Tensor(projKey)
		if err != nil {
			return nil, &FormatError{Path: src.File().Name(), Err: fmt.Errorf("CLIP-%s projection: %w", role.name, err)}
		}
		enc.Projection = p
	}
	te := &TextEncoder{Name: role.name, Encoder: enc}
	if enc.Projection != nil {
		te.projKey, te.loadedProjection = projKey, enc.Projection
	}
	return withVocab(te, opts.Vocab, opts.VocabErr, opts.EmbeddingDirs), nil
}

// withVocab returns a copy of te that tokenizes with bpe (nil: none, vocabErr says
// why) and finds textual-inversion embeddings in embDirs. The encoder is copied (its
// special ids follow the vocabulary); the text model is shared.
func withVocab(te *TextEncoder, bpe *clip.BPE, vocabErr error, embDirs []string) *TextEncoder {
	enc := *te.Encoder
	padEnd := enc.Pad == enc.End
	out := &TextEncoder{Name: te.Name, Encoder: &enc, VocabErr: vocabErr, loras: te.loras,
		projKey: te.projKey, loadedProjection: te.loadedProjection}
	if bpe == nil {
		return out
	}
	out.VocabErr = nil
	role := encoderRole{padEnd: padEnd, embedKey: "clip_" + te.Name}
	out.Tokenizer = newTokenizer(bpe, role, enc.Model.Embeddings.Token.Dim(1), embDirs)
	// The vocabulary's own special ids (the released one: 49406, 49407).
	if ids := bpe.Encode(""); len(ids) == 2 {
		enc.Start, enc.End = ids[0], ids[1]
		if padEnd {
			enc.Pad = ids[1]
		}
		if enc.Model.EOS != ids[1] {
			m := *enc.Model
			m.EOS = ids[1]
			enc.Model = &m
		}
	}
	return out
}

// WithVocab returns a copy of c whose encoders tokenize with bpe (nil: none, and
// vocabErr says why) and resolve "embedding:name" in embDirs. The weights are shared.
func (c *CLIP) WithVocab(bpe *clip.BPE, vocabErr error, embDirs []string) *CLIP {
	cp := *c
	cp.Encoders = make([]*TextEncoder, len(c.Encoders))
	for i, te := range c.Encoders {
		cp.Encoders[i] = withVocab(te, bpe, vocabErr, embDirs)
	}
	return &cp
}

// WithLogger returns a copy of c whose tokenizers (CLIP's and T5's) log to log: a textual-inversion
// embedding named in a prompt ("embedding:name") that no embeddings folder holds is
// then reported, as ComfyUI warns "embedding:name does not exist, ignoring", instead of
// being dropped silently.
func (c *CLIP) WithLogger(log *slog.Logger) *CLIP {
	cp := *c
	cp.Encoders = make([]*TextEncoder, len(c.Encoders))
	for i, te := range c.Encoders {
		t := *te
		if te.Tokenizer != nil {
			tok := *te.Tokenizer
			tok.Logger = log
			t.Tokenizer = &tok
		}
		cp.Encoders[i] = &t
	}
	if c.T5 != nil && c.T5.Tokenizer != nil {
		te := *c.T5
		tok := *te.Tokenizer
		tok.Logger = log
		te.Tokenizer = &tok
		cp.T5 = &te
	}
	return &cp
}

// f16Source serves a text encoder's F32 and BF16 tensors rounded to F16 (to nearest
// even): ComfyUI keeps text encoders in float16 on every device unless told otherwise
// (comfy/model_management.py text_encoder_dtype) and computes in float32 from those
// values, so a float32 checkpoint's prompt encodings match only with the same rounding.
// F16 and float8 tensors convert exactly and are served as stored.
type f16Source struct {
	statedict.Source
	rt *gpu.Runtime
}

// Tensor implements statedict.Source.
func (s f16Source) Tensor(key string) (*gpu.Tensor, error) {
	t, err := s.Source.Tensor(key)
	if err != nil || (t.DType() != gpu.F32 && t.DType() != gpu.BF16) {
		return t, err
	}
	h, err := gpu.Cast(s.rt, t, gpu.F16)
	t.Release()
	if err != nil {
		return nil, fmt.Errorf("sd: %s: %w", key, err)
	}
	return h, nil
}

// newTokenizer is the family tokenizer of ComfyUI for role: windows of 77, words of 8+
// tokens split across windows, padding with the end token (CLIP-L) or 0 (OpenCLIP).
func newTokenizer(bpe *clip.BPE, role encoderRole, width int, embDirs []string) *clip.Tokenizer {
	var emb clip.EmbeddingLookup
	if len(embDirs) > 0 {
		emb = clip.DirEmbeddings(embDirs, width, role.embedKey)
	}
	if role.padEnd {
		return clip.NewSD1Tokenizer(bpe, emb)
	}
	return &clip.Tokenizer{BPE: bpe, MaxLength: 77, MaxWordLength: 8, PadToken: 0, Embeddings: emb}
}

// VocabError is returned when text is tokenized with no CLIP vocabulary loaded.
type VocabError struct {
	Err error // the vocabulary search's error, or nil
}

func (e *VocabError) Error() string {
	var missing *MissingVocabError
	switch {
	case errors.As(e.Err, &missing):
		return e.Err.Error() // already says what is missing and where to put it
	case e.Err != nil:
		return "sd: no usable CLIP tokenizer vocabulary: " + e.Err.Error()
	}
	return "sd: no CLIP tokenizer vocabulary was loaded with this model"
}

func (e *VocabError) Unwrap() error { return e.Err }

// Tokens are a prompt's token windows per encoder name ("l", "g", "h"), ComfyUI's
// tokenize output.
type Tokens map[string][][]clip.Token

// Tokenize tokenizes text for every encoder of c (CLIP.tokenize): CLIP windows under
// the encoders' names, T5's one sequence under T5Key.
func (c *CLIP) Tokenize(text string) (Tokens, error) {
	out := Tokens{}
	for _, te := range c.Encoders {
		if te.Tokenizer == nil {
			return nil, c.vocabError()
		}
		w, err := te.Tokenizer.TokenizeWithWeights(text)
		if err != nil {
			return nil, err
		}
		out[te.Name] = w
	}
	if err := c.tokenizeT5(text, out); err != nil {
		return nil, err
	}
	if c.Kind == CLIPSD3 {
		// SD3Tokenizer gives CLIP-L and CLIP-G tokens whichever encoders exist, and
		// SD3ClipModel looks at how many windows the missing one has; the two CLIP
		// tokenizers cut a text into the same number of windows.
		l, hasL := out["l"]
		g, hasG := out["g"]
		switch {
		case hasL && !hasG:
			out["g"] = l
		case hasG && !hasL:
			out["l"] = g
		}
	}
	return out, nil
}

// vocabError says why c cannot tokenize.
func (c *CLIP) vocabError() error {
	for _, te := range c.Encoders {
		if te.VocabErr != nil {
			return &VocabError{Err: te.VocabErr}
		}
	}
	return &VocabError{}
}

// Encoded is a text encoding: the conditioning (1, T, D) and pooled output (1, P).
type Encoded struct {
	Cond   *gpu.Tensor
	Pooled *gpu.Tensor
}

// Release frees both tensors.
func (e *Encoded) Release() {
	if e == nil {
		return
	}
	e.Cond.Release()
	e.Pooled.Release()
}

// EncodeTokens runs each encoder on its tokens and combines them as the family's
// ComfyUI model does (CLIP.Kind): one encoder's output as is; SDXL's CLIP-L and CLIP-G
// concatenated on the feature axis (cut to the shorter), pooled from the last encoder
// (CLIP-G); SD3's and Flux's as encodeSD3 and encodeFlux say. CLIP.Layer, when set,
// overrides every encoder's layer (CLIPSetLastLayer).
func (c *CLIP) EncodeTokens(ctx context.Context, tokens Tokens) (*Encoded, error) {
	switch c.Kind {
	case CLIPSD3:
		return c.encodeSD3(ctx, tokens)
	case CLIPFlux:
		return c.encodeFlux(ctx, tokens)
	}
	if len(c.Encoders) == 0 {
		return nil, errors.New("sd: CLIP has no text encoders")
	}
	var parts []*Encoded
	defer func() {
		for _, p := range parts {
			p.Release()
		}
	}()
	for _, te := range c.Encoders {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		w, ok := tokens[te.Name]
		if !ok {
			return nil, fmt.Errorf("sd: no tokens for text encoder %q", te.Name)
		}
		enc := *te.Encoder
		if c.Layer != 0 {
			enc.Layer = c.Layer
		}
		out, err := enc.Encode(c.Runtime, w)
		if err != nil {
			return nil, fmt.Errorf("sd: text encoder %s: %w", te.Name, err)
		}
		parts = append(parts, &Encoded{Cond: out.Cond, Pooled: out.Pooled})
	}
	if len(parts) == 1 {
		e := parts[0]
		parts = nil
		return e, nil
	}
	n := parts[0].Cond.Dim(1)
	for _, p := range parts[1:] {
		n = min(n, p.Cond.Dim(1))
	}
	conds := make([]*gpu.Tensor, len(parts))
	for i, p := range parts {
		v, err := gpu.Narrow(p.Cond, 1, 0, n)
		if err != nil {
			return nil, err
		}
		defer v.Release()
		conds[i] = v
	}
	cond, err := gpu.Concat(c.Runtime, 2, conds...)
	if err != nil {
		return nil, fmt.Errorf("sd: concatenating text encodings: %w", err)
	}
	last := parts[len(parts)-1]
	pooled := last.Pooled
	last.Pooled = nil
	return &Encoded{Cond: cond, Pooled: pooled}, nil
}

// EncodeText tokenizes and encodes text (CLIPTextEncode's encode_from_tokens).
func (c *CLIP) EncodeText(ctx context.Context, text string) (*Encoded, error) {
	tok, err := c.Tokenize(text)
	if err != nil {
		return nil, err
	}
	return c.EncodeTokens(ctx, tok)
}

// WithoutPooledProjection returns a copy of c whose pooled output skips the
// text_projection (ComfyUI's encode_from_tokens with return_pooled="unprojected", as
// GLIGENTextBoxApply asks for). The weights are shared.
func (c *CLIP) WithoutPooledProjection() *CLIP {
	cp := *c
	cp.Encoders = make([]*TextEncoder, len(c.Encoders))
	for i, te := range c.Encoders {
		t := *te
		enc := *te.Encoder
		enc.Projection = nil
		t.Encoder = &enc
		cp.Encoders[i] = &t
	}
	return &cp
}

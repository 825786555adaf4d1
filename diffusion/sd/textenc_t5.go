package sd

import (
	"context"
	"errors"
	"fmt"
	"github.com/forgeflow/forgeflow/diffusion/lora"

	"github.com/forgeflow/forgeflow/diffusion/clip"
	"github.com/forgeflow/forgeflow/diffusion/t5"
	"github.com/forgeflow/forgeflow/gpu"
)

// CLIPKind says how a CLIP object's encoders make the conditioning: the text encoder
// class ComfyUI builds for the model family.
type CLIPKind int

const (
	// CLIPSD is SD1/SD2/SDXL's (sd1_clip.SD1ClipModel, sdxl_clip.SDXLClipModel, …): one
	// encoder's output as it is, or several side by side on the feature axis, pooled
	// from the last.
	CLIPSD CLIPKind = iota
	// CLIPSD3 is sd3_clip.SD3ClipModel: CLIP-L's and CLIP-G's hidden states side by side,
	// padded to 4096 features, followed by T5's tokens; pooled = CLIP-L's ++ CLIP-G's.
	// Any of the three may be absent.
	CLIPSD3
	// CLIPFlux is flux.FluxClipModel: T5's hidden states with CLIP-L's pooled output.
	CLIPFlux
)

func (k CLIPKind) String() string {
	switch k {
	case CLIPSD3:
		return "sd3"
	case CLIPFlux:
		return "flux"
	}
	return "sd"
}

// T5Key is the T5 encoder's name in Tokens (ComfyUI's token dict key).
const T5Key = "t5xxl"

// Widths ComfyUI's SD3ClipModel hard-codes: the zero pooled output of a missing CLIP-L
// (768) or CLIP-G (1280), the left padding a lone CLIP-G gets (768), the width CLIP
// hidden states are padded to before T5's tokens follow them (4096), and the token count
// of an empty conditioning (77).
const (
	sd3PooledL    = 768
	sd3PooledG    = 1280
	sd3Width      = 4096
	sd3EmptyCount = 77
)

// T5Encoder is the T5-XXL of a CLIP object with its tokenizer.
type T5Encoder struct {
	Encoder *t5.Encoder
	// Tokenizer is nil when no T5 tokenizer was found; VocabErr says why.
	Tokenizer *t5.Tokenizer
	VocabErr  error
	// MinLength is the family's padding (t5.FluxMinLength, t5.SD3MinLength); Options
	// are T5TokenizerOptions' (nil: none).
	MinLength int
	Options   *t5.Options
	// embDirs are the textual-inversion folders ("embedding:name", t5xxl vectors).
	embDirs []string
	// loras is the T5's LoRA stack (lora.go); nil for none.
	loras *lora.Network[t5.Model]
}

// tokenizer builds the tokenizer for vocab with the encoder's settings.
func (te *T5Encoder) tokenizer(vocab *t5.Vocab) *t5.Tokenizer {
	tok := t5.NewTokenizer(vocab, te.MinLength)
	if len(te.embDirs) > 0 {
		tok.Embeddings = clip.DirEmbeddings(te.embDirs, te.Encoder.Model.DModel, T5Key)
	}
	if te.Options != nil {
		tok = tok.WithOptions(*te.Options)
	}
	return tok
}

// WithT5Vocab returns a copy of c whose T5 tokenizes with vocab (nil: none, vocabErr
// says why) and resolves "embedding:name" in embDirs. A CLIP without T5 is returned as
// it is.
func (c *CLIP) WithT5Vocab(vocab *t5.Vocab, vocabErr error, embDirs []string) *CLIP {
	if c.T5 == nil {
		return c
	}
	cp := *c
	te := *c.T5
	te.embDirs = embDirs
	te.Tokenizer, te.VocabErr = nil, vocabErr
	if vocab != nil {
		te.Tokenizer, te.VocabErr = te.tokenizer(vocab), nil
	}
	cp.T5 = &te
	return &cp
}

// WithT5Options returns a copy of c whose T5 tokenizer pads as T5TokenizerOptions says
// (each 0 turns it off). A CLIP without T5 is returned as it is, as ComfyUI sets an
// option no tokenizer reads.
func (c *CLIP) WithT5Options(o t5.Options) *CLIP {
	if c.T5 == nil {
		return c
	}
	cp := *c
	te := *c.T5
	te.Options = &o
	if te.Tokenizer != nil {
		te.Tokenizer = te.tokenizer(te.Tokenizer.Vocab)
	}
	cp.T5 = &te
	return &cp
}

// T5VocabError is returned when a prompt is tokenized for a T5 that has no tokenizer.
type T5VocabError struct {
	Err error // the tokenizer search's error, or nil
}

func (e *T5VocabError) Error() string {
	var missing *MissingT5TokenizerError
	switch {
	case errors.As(e.Err, &missing):
		return e.Err.Error()
	case e.Err != nil:
		return "sd: no usable T5 tokenizer: " + e.Err.Error()
	}
	return "sd: no T5 tokenizer was loaded with this text encoder"
}

func (e *T5VocabError) Unwrap() error { return e.Err }

// tokenizeT5 adds the prompt's T5 tokens (one sequence) to out.
func (c *CLIP) tokenizeT5(text string, out Tokens) error {
	if c.T5 == nil {
		return nil
	}
	if c.T5.Tokenizer == nil {
		return &T5VocabError{Err: c.T5.VocabErr}
	}
	toks, err := c.T5.Tokenizer.TokenizeWithWeights(text)
	if err != nil {
		return err
	}
	out[T5Key] = [][]clip.Token{toks}
	return nil
}

// encoder returns the CLIP encoder called name, or nil.
func (c *CLIP) encoder(name string) *TextEncoder {
	for _, te := range c.Encoders {
		if te.Name == name {
			return te
		}
	}
	return nil
}

// encodeCLIP runs one CLIP encoder on its windows (encode_token_weights). No windows
// encode the empty sequence [start, end], whose output is the result.
func (c *CLIP) encodeCLIP(te *TextEncoder, windows [][]clip.Token) (*Encoded, error) {
	enc := *te.Encoder
	if c.Layer != 0 {
		enc.Layer = c.Layer
	}
	if len(windows) == 0 {
		windows = [][]clip.Token{{{ID: enc.Start, Weight: 1}, {ID: enc.End, Weight: 1}}}
	}
	out, err := enc.Encode(c.Runtime, windows)
	if err != nil {
		return nil, fmt.Errorf("sd: text encoder %s: %w", te.Name, err)
	}
	return &Encoded{Cond: out.Cond, Pooled: out.Pooled}, nil
}

// encodeT5 runs the T5 on its one sequence. No sequence encodes [end] alone, as
// encode_token_weights does for an empty token list.
func (c *CLIP) encodeT5(ctx context.Context, windows [][]clip.Token) (*gpu.Tensor, error) {
	enc := *c.T5.Encoder
	if c.Layer != 0 {
		enc.Layer = c.Layer
	}
	var toks []clip.Token
	switch len(windows) {
	case 0:
		toks = []clip.Token{{ID: enc.End, Weight: 1}}
	case 1:
		toks = windows[0]
	default:
		return nil, fmt.Errorf("sd: %d T5 token sequences; T5 takes one", len(windows))
	}
	out, err := enc.Encode(ctx, toks)
	if err != nil {
		return nil, fmt.Errorf("sd: text encoder t5xxl: %w", err)
	}
	return out.Cond, nil
}

// encodeSD3 is SD3ClipModel.encode_token_weights.
func (c *CLIP) encodeSD3(ctx context.Context, tokens Tokens) (*Encoded, error) {
	rt := c.Runtime
	var parts []*gpu.Tensor
	defer func() {
		for _, t := range parts {
			t.Release()
		}
	}()
	keep := func(t *gpu.Tensor) *gpu.Tensor {
		parts = append(parts, t)
		return t
	}
	var lg, pooled []float32
	lgTokens, lgWidth := 0, 0
	l, g := c.encoder("l"), c.encoder("g")
	if len(tokens["l"]) > 0 || len(tokens["g"]) > 0 {
		var lOut *gpu.Tensor
		lPooled := make([]float32, sd3PooledL)
		if l != nil {
			e, err := c.encodeCLIP(l, tokens["l"])
			if err != nil {
				return nil, err
			}
			lOut, _ = keep(e.Cond), keep(e.Pooled)
			if lPooled, err = e.Pooled.Float32(); err != nil {
				return nil, err
			}
		}
		gPooled := make([]float32, sd3PooledG)
		var out *gpu.Tensor
		if g != nil {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			e, err := c.encodeCLIP(g, tokens["g"])
			if err != nil {
				return nil, err
			}
			gOut := keep(e.Cond)
			keep(e.Pooled)
			if gPooled, err = e.Pooled.Float32(); err != nil {
				return nil, err
			}
			if lOut != nil {
				n := min(lOut.Dim(1), gOut.Dim(1))
				lv, err := gpu.Narrow(lOut, 1, 0, n)
				if err != nil {
					return nil, err
				}
				gv, err := gpu.Narrow(gOut, 1, 0, n)
				if err != nil {
					lv.Release()
					return nil, err
				}
				out, err = gpu.Concat(rt, 2, keep(lv), keep(gv))
				if err != nil {
					return nil, err
				}
				keep(out)
			} else {
				// A lone CLIP-G sits where it would beside CLIP-L: 768 zeros on its left.
				z, err := rt.FromFloat32(make([]float32, gOut.Dim(1)*sd3PooledL), 1, gOut.Dim(1), sd3PooledL)
				if err != nil {
					return nil, err
				}
				if out, err = gpu.Concat(rt, 2, keep(z), gOut); err != nil {
					return nil, err
				}
				keep(out)
			}
		} else {
			out = lOut
		}
		if out != nil {
			v, err := out.Float32()
			if err != nil {
				return nil, err
			}
			lgTokens, lgWidth = out.Dim(1), out.Dim(2)
			lg = padFeatures(v, lgTokens, lgWidth, sd3Width)
		}
		pooled = append(lPooled, gPooled...)
	}
	cond, width, count := lg, sd3Width, lgTokens
	if c.T5 != nil {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		t, err := c.encodeT5(ctx, tokens[T5Key])
		if err != nil {
			return nil, err
		}
		keep(t)
		tv, err := t.Float32()
		if err != nil {
			return nil, err
		}
		if lg == nil {
			cond, width, count = tv, t.Dim(2), t.Dim(1)
		} else {
			if t.Dim(2) != sd3Width {
				return nil, fmt.Errorf("sd: T5 hidden states are %d wide; SD3 places them after CLIP states padded to %d", t.Dim(2), sd3Width)
			}
			cond = append(append(make([]float32, 0, len(lg)+len(tv)), lg...), tv...)
			count += t.Dim(1)
		}
	}
	if cond == nil {
		cond, width, count = make([]float32, sd3EmptyCount*sd3Width), sd3Width, sd3EmptyCount
	}
	if pooled == nil {
		pooled = make([]float32, sd3PooledL+sd3PooledG)
	}
	ct, err := rt.FromFloat32(cond, 1, count, width)
	if err != nil {
		return nil, err
	}
	pt, err := rt.FromFloat32(pooled, 1, len(pooled))
	if err != nil {
		ct.Release()
		return nil, err
	}
	return &Encoded{Cond: ct, Pooled: pt}, nil
}

// padFeatures pads (or, like torch.nn.functional.pad with a negative width, cuts) each
// of n rows of width w to width to, with zeros on the right.
func padFeatures(v []float32, n, w, to int) []float32 {
	out := make([]float32, n*to)
	for i := 0; i < n; i++ {
		copy(out[i*to:(i+1)*to], v[i*w:i*w+min(w, to)])
	}
	return out
}

// encodeFlux is FluxClipModel.encode_token_weights: T5's hidden states as the
// conditioning, CLIP-L's pooled output (its hidden states are not used).
func (c *CLIP) encodeFlux(ctx context.Context, tokens Tokens) (*Encoded, error) {
	l := c.encoder("l")
	if l == nil || c.T5 == nil {
		return nil, errors.New("sd: a Flux text encoder needs CLIP-L and T5-XXL")
	}
	cond, err := c.encodeT5(ctx, tokens[T5Key])
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		cond.Release()
		return nil, err
	}
	e, err := c.encodeCLIP(l, tokens["l"])
	if err != nil {
		cond.Release()
		return nil, err
	}
	e.Cond.Release()
	return &Encoded{Cond: cond, Pooled: e.Pooled}, nil
}

// EncodeSD3Prompts is CLIPTextEncodeSD3: each encoder its own text; with noPadding
// (empty_padding "none") an empty text gives its encoder no tokens at all. CLIP-L's and
// CLIP-G's windows are then evened out with windows of the empty prompt.
func EncodeSD3Prompts(ctx context.Context, c *CLIP, textL, textG, textT5 string, noPadding bool) (Conditioning, error) {
	if c == nil {
		return nil, errors.New("sd: encode prompt: no CLIP")
	}
	tokens, err := c.Tokenize(textG)
	if err != nil {
		return nil, err
	}
	if textG == "" && noPadding {
		tokens["g"] = nil
	}
	for _, p := range []struct{ key, text string }{{"l", textL}, {T5Key, textT5}} {
		if _, ok := tokens[p.key]; !ok {
			continue // this CLIP has no T5
		}
		if p.text == "" && noPadding {
			tokens[p.key] = nil
			continue
		}
		own, err := c.Tokenize(p.text)
		if err != nil {
			return nil, err
		}
		tokens[p.key] = own[p.key]
	}
	if len(tokens["l"]) != len(tokens["g"]) {
		empty, err := c.Tokenize("")
		if err != nil {
			return nil, err
		}
		for len(tokens["l"]) < len(tokens["g"]) {
			tokens["l"] = append(tokens["l"], empty["l"]...)
		}
		for len(tokens["l"]) > len(tokens["g"]) {
			tokens["g"] = append(tokens["g"], empty["g"]...)
		}
	}
	enc, err := c.EncodeTokens(ctx, tokens)
	if err != nil {
		return nil, err
	}
	return Conditioning{NewCond(enc.Cond, enc.Pooled)}, nil
}

// EncodeFluxPrompts is CLIPTextEncodeFlux: CLIP-L's text and T5's apart, and the
// guidance scale set on the entry.
func EncodeFluxPrompts(ctx context.Context, c *CLIP, textL, textT5 string, guidance float64) (Conditioning, error) {
	if c == nil {
		return nil, errors.New("sd: encode prompt: no CLIP")
	}
	tokens, err := c.Tokenize(textL)
	if err != nil {
		return nil, err
	}
	if _, ok := tokens[T5Key]; ok {
		own, err := c.Tokenize(textT5)
		if err != nil {
			return nil, err
		}
		tokens[T5Key] = own[T5Key]
	}
	enc, err := c.EncodeTokens(ctx, tokens)
	if err != nil {
		return nil, err
	}
	cond := NewCond(enc.Cond, enc.Pooled)
	cond.Guidance = &guidance
	return Conditioning{cond}, nil
}

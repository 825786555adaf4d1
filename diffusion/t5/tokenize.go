package t5

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/forgeflow/forgeflow/diffusion/clip"
)

// Tokenizer files, in the order a folder is searched: Hugging Face's tokenizer.json
// (what ComfyUI ships in comfy/text_encoders/t5_tokenizer/) and SentencePiece's model.
const (
	TokenizerJSON = "tokenizer.json"
	SpieceModel   = "spiece.model"
)

// maxTokenizerBytes bounds what a tokenizer file may hold (T5's tokenizer.json is 2.4 MB,
// UMT5's 16 MB): a larger file is not a tokenizer and is not read.
const maxTokenizerBytes = 64 << 20

// LoadVocab reads a tokenizer file: tokenizer.json (by its .json extension) or a
// SentencePiece model.
func LoadVocab(path string) (*Vocab, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("t5: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxTokenizerBytes+1))
	if err != nil {
		return nil, fmt.Errorf("t5: %s: %w", path, err)
	}
	if len(data) > maxTokenizerBytes {
		return nil, fmt.Errorf("t5: %s: larger than %d MB, not a tokenizer", path, maxTokenizerBytes>>20)
	}
	var v *Vocab
	if filepath.Ext(path) == ".json" {
		v, err = ParseTokenizerJSON(data)
	} else {
		v, err = ParseSpieceModel(data)
	}
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	return v, nil
}

// Minimum lengths ComfyUI pads T5 prompts to (T5XXLTokenizer's min_length).
const (
	FluxMinLength = 256 // comfy/text_encoders/flux.py
	SD3MinLength  = 77  // comfy/text_encoders/sd3_clip.py
)

// Tokenizer is ComfyUI's T5XXLTokenizer, an SDTokenizer over the T5 vocabulary: prompt
// weights and embeddings as for CLIP, no start token, the end token after the prompt,
// then <pad> up to MinLength; never cut into windows (max_length 99999999).
type Tokenizer struct {
	Vocab *Vocab
	// MinLength pads the sequence with Pad to at least this many tokens (0: none).
	MinLength int
	// MinPadding adds this many Pad tokens after the end token first.
	MinPadding int
	// Pad is the padding token (PadID).
	Pad int
	// Embeddings resolves "embedding:name" (t5xxl vectors); nil keeps the text.
	Embeddings clip.EmbeddingLookup
	Logger     *slog.Logger
}

// NewTokenizer returns T5XXLTokenizer's settings: pad 0, no minimum padding, minLength
// (FluxMinLength or SD3MinLength).
func NewTokenizer(v *Vocab, minLength int) *Tokenizer {
	return &Tokenizer{Vocab: v, MinLength: minLength, Pad: PadID}
}

// Options are what the T5TokenizerOptions node sets (t5xxl_min_padding and
// t5xxl_min_length): both replace the tokenizer's own, 0 turning each off.
type Options struct {
	MinPadding, MinLength int
}

// WithOptions returns a copy of t with the options applied.
func (t *Tokenizer) WithOptions(o Options) *Tokenizer {
	c := *t
	c.MinPadding, c.MinLength = o.MinPadding, o.MinLength
	return &c
}

// TokenizeWithWeights turns a prompt into T5 tokens as ComfyUI's tokenize_with_weights
// does for T5: each weighted piece of text tokenized on its own (its </s> dropped), word
// ids counting the pieces, then </s>, MinPadding pads and pads up to MinLength.
func (t *Tokenizer) TokenizeWithWeights(prompt string) ([]clip.Token, error) {
	if t.Vocab == nil {
		return nil, errors.New("t5: tokenizer has no vocabulary")
	}
	end := t.Vocab.EndID()
	if end < 0 {
		return nil, errors.New("t5: the tokenizer appends no end token; T5 needs </s>")
	}
	groups, err := clip.TokenGroups(prompt, func(word string) []int {
		ids := t.Vocab.Encode(word)
		return ids[:len(ids)-1]
	}, t.Embeddings, t.Logger)
	if err != nil {
		return nil, err
	}
	var out []clip.Token
	for gi, g := range groups {
		for _, tok := range g {
			tok.WordID = gi + 1
			out = append(out, tok)
		}
	}
	out = append(out, clip.Token{ID: end, Weight: 1})
	pad := clip.Token{ID: t.Pad, Weight: 1}
	for range max(t.MinPadding, 0) {
		out = append(out, pad)
	}
	for len(out) < t.MinLength {
		out = append(out, pad)
	}
	return out, nil
}

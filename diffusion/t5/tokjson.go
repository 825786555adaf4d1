package t5

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// tokenizer.json as Hugging Face's tokenizers library writes it for a SentencePiece
// Unigram model (T5TokenizerFast: comfy/text_encoders/t5_tokenizer/tokenizer.json).
type tokJSON struct {
	AddedTokens []struct {
		ID      int    `json:"id"`
		Content string `json:"content"`
		LStrip  bool   `json:"lstrip"`
		RStrip  bool   `json:"rstrip"`
		Special bool   `json:"special"`
	} `json:"added_tokens"`
	Normalizer    *tokStep `json:"normalizer"`
	PreTokenizer  *tokStep `json:"pre_tokenizer"`
	PostProcessor *tokStep `json:"post_processor"`
	Model         struct {
		Type         string              `json:"type"`
		UnkID        *int                `json:"unk_id"`
		Vocab        [][]json.RawMessage `json:"vocab"`
		ByteFallback bool                `json:"byte_fallback"`
	} `json:"model"`
}

// tokStep is one normalizer, pre-tokenizer or post-processor, with the fields of the
// kinds a SentencePiece tokenizer uses.
type tokStep struct {
	Type string `json:"type"`
	// Sequence
	Normalizers   []tokStep `json:"normalizers"`
	PreTokenizers []tokStep `json:"pretokenizers"`
	// Precompiled
	PrecompiledCharsmap json.RawMessage `json:"precompiled_charsmap"`
	// Strip
	StripLeft  bool `json:"strip_left"`
	StripRight bool `json:"strip_right"`
	// Replace
	Pattern struct {
		Regex  *string `json:"Regex"`
		String *string `json:"String"`
	} `json:"pattern"`
	Content string `json:"content"`
	// Metaspace
	Replacement    string  `json:"replacement"`
	AddPrefixSpace *bool   `json:"add_prefix_space"`
	PrependScheme  *string `json:"prepend_scheme"`
	Split          *bool   `json:"split"`
	// TemplateProcessing
	Single []struct {
		Sequence *struct {
			ID string `json:"id"`
		} `json:"Sequence"`
		SpecialToken *struct {
			ID string `json:"id"`
		} `json:"SpecialToken"`
	} `json:"single"`
	SpecialTokens map[string]struct {
		IDs []int `json:"ids"`
	} `json:"special_tokens"`
}

// ParseTokenizerJSON reads a Hugging Face tokenizer.json holding a Unigram model
// (T5's). Pipelines other than SentencePiece's (other models, normalizers or
// pre-tokenizers) are refused with an error naming the part.
func ParseTokenizerJSON(data []byte) (*Vocab, error) {
	var tj tokJSON
	if err := json.Unmarshal(data, &tj); err != nil {
		return nil, fmt.Errorf("t5: tokenizer.json: %w", err)
	}
	if tj.Model.Type != "Unigram" {
		return nil, fmt.Errorf("t5: tokenizer.json: model type %q; only Unigram (SentencePiece) tokenizers are supported", tj.Model.Type)
	}
	if tj.Model.UnkID == nil {
		return nil, errors.New("t5: tokenizer.json: model.unk_id is not set")
	}
	isSpecial := map[int]bool{}
	var specials []special
	for _, a := range tj.AddedTokens {
		if a.Content == "" {
			return nil, fmt.Errorf("t5: tokenizer.json: added token %d has no content", a.ID)
		}
		specials = append(specials, special{text: a.Content, id: a.ID, lstrip: a.LStrip, rstrip: a.RStrip})
		isSpecial[a.ID] = true
	}
	pieces := make([]piece, len(tj.Model.Vocab))
	for i, e := range tj.Model.Vocab {
		if len(e) != 2 {
			return nil, fmt.Errorf("t5: tokenizer.json: vocab entry %d is not [piece, score]", i)
		}
		var p piece
		var score float64
		if err := json.Unmarshal(e[0], &p.text); err != nil {
			return nil, fmt.Errorf("t5: tokenizer.json: vocab entry %d: %w", i, err)
		}
		if err := json.Unmarshal(e[1], &score); err != nil {
			return nil, fmt.Errorf("t5: tokenizer.json: vocab entry %d: %w", i, err)
		}
		p.score = float32(score)
		switch {
		case i == *tj.Model.UnkID:
			p.kind = kindUnknown
		case isSpecial[i]:
			p.kind = kindControl
		case tj.Model.ByteFallback && isBytePiece(p.text):
			p.kind = kindByte
		default:
			p.kind = kindNormal
		}
		pieces[i] = p
	}
	norm, err := jsonNormalizer(tj.Normalizer, tj.PreTokenizer)
	if err != nil {
		return nil, err
	}
	eos, err := jsonEnd(tj.PostProcessor)
	if err != nil {
		return nil, err
	}
	return newVocab(pieces, *tj.Model.UnkID, eos, specials, norm, tj.Model.ByteFallback)
}

func isBytePiece(s string) bool {
	return len(s) == 6 && strings.HasPrefix(s, "<0x") && s[5] == '>' && strings.Trim(s[3:5], "0123456789ABCDEF") == ""
}

// jsonNormalizer maps the normalizer and pre-tokenizer onto SentencePiece's switches. It
// knows the shapes transformers writes for SentencePiece models: a Precompiled charsmap
// (alone, or followed by Strip(right) and Replace(" {2,}" → "▁"), which together remove
// extra whitespace), and a Metaspace pre-tokenizer (alone, or after WhitespaceSplit,
// which also removes extra whitespace).
func jsonNormalizer(normStep, pre *tokStep) (normalizer, error) {
	var n normalizer
	steps := []tokStep{}
	if normStep != nil {
		if normStep.Type == "Sequence" {
			steps = normStep.Normalizers
		} else {
			steps = []tokStep{*normStep}
		}
	}
	stripRight, collapse := false, false
	for _, s := range steps {
		switch s.Type {
		case "Precompiled":
			blob, err := charsmapBytes(s.PrecompiledCharsmap)
			if err != nil {
				return n, err
			}
			if len(blob) > 0 {
				if n.cmap, err = parseCharsMap(blob); err != nil {
					return n, err
				}
			}
		case "Strip":
			if s.StripLeft || !s.StripRight {
				return n, errors.New("t5: tokenizer.json: only a right Strip normalizer is supported")
			}
			stripRight = true
		case "Replace":
			if s.Pattern.Regex == nil || *s.Pattern.Regex != " {2,}" || s.Content != spaceSymbol {
				return n, errors.New(`t5: tokenizer.json: only the Replace normalizer " {2,}" → "▁" is supported`)
			}
			collapse = true
		default:
			return n, fmt.Errorf("t5: tokenizer.json: normalizer %q is not supported", s.Type)
		}
	}
	if collapse != stripRight {
		return n, errors.New("t5: tokenizer.json: a Strip normalizer without the Replace of repeated spaces (or the other way round) is not supported")
	}
	n.removeExtraWhitespace = collapse
	if pre == nil {
		return n, errors.New("t5: tokenizer.json: no pre_tokenizer; a Metaspace one is needed")
	}
	meta := pre
	if pre.Type == "Sequence" {
		if len(pre.PreTokenizers) != 2 || pre.PreTokenizers[0].Type != "WhitespaceSplit" {
			return n, errors.New("t5: tokenizer.json: a pre_tokenizer Sequence other than [WhitespaceSplit, Metaspace] is not supported")
		}
		meta = &pre.PreTokenizers[1]
		n.removeExtraWhitespace = true
	}
	if meta.Type != "Metaspace" {
		return n, fmt.Errorf("t5: tokenizer.json: pre_tokenizer %q is not supported; SentencePiece tokenizers use Metaspace", meta.Type)
	}
	if meta.Replacement != spaceSymbol {
		return n, fmt.Errorf("t5: tokenizer.json: Metaspace replacement %q; only ▁ is supported", meta.Replacement)
	}
	n.escapeWhitespace = true
	n.prefixUnlessSpace = true
	switch {
	case meta.PrependScheme != nil:
		switch *meta.PrependScheme {
		case "always":
			n.addDummyPrefix, n.prefixEveryPart = true, true
		case "first":
			n.addDummyPrefix = true
		case "never":
		default:
			return n, fmt.Errorf("t5: tokenizer.json: Metaspace prepend_scheme %q", *meta.PrependScheme)
		}
	case meta.AddPrefixSpace != nil:
		n.addDummyPrefix, n.prefixEveryPart = *meta.AddPrefixSpace, *meta.AddPrefixSpace
	default:
		n.addDummyPrefix, n.prefixEveryPart = true, true
	}
	return n, nil
}

// charsmapBytes reads precompiled_charsmap: base64 text (current tokenizers) or an array
// of byte values (older ones).
func charsmapBytes(raw json.RawMessage) ([]byte, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("t5: tokenizer.json: precompiled_charsmap: %w", err)
		}
		return b, nil
	}
	var arr []byte
	var ints []int
	if err := json.Unmarshal(raw, &ints); err != nil {
		return nil, errors.New("t5: tokenizer.json: precompiled_charsmap is neither base64 nor a byte array")
	}
	for _, v := range ints {
		if v < 0 || v > 255 {
			return nil, fmt.Errorf("t5: tokenizer.json: precompiled_charsmap value %d is not a byte", v)
		}
		arr = append(arr, byte(v))
	}
	return arr, nil
}

// jsonEnd reads the end token a TemplateProcessing post-processor appends to a single
// sequence ($A </s>); −1 without a post-processor.
func jsonEnd(pp *tokStep) (int, error) {
	if pp == nil {
		return -1, nil
	}
	if pp.Type != "TemplateProcessing" {
		return 0, fmt.Errorf("t5: tokenizer.json: post_processor %q is not supported", pp.Type)
	}
	eos := -1
	for i, it := range pp.Single {
		switch {
		case it.Sequence != nil && i == 0:
		case it.SpecialToken != nil && i == 1 && len(pp.Single) == 2:
			st, ok := pp.SpecialTokens[it.SpecialToken.ID]
			if !ok || len(st.IDs) != 1 {
				return 0, fmt.Errorf("t5: tokenizer.json: post_processor special token %q has no single id", it.SpecialToken.ID)
			}
			eos = st.IDs[0]
		default:
			return 0, errors.New("t5: tokenizer.json: only the post_processor template \"$A </s>\" is supported")
		}
	}
	return eos, nil
}

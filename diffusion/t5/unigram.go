package t5

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"unicode/utf8"
)

// Vocab is a SentencePiece Unigram tokenizer as T5's tokenizer.json and spiece.model
// describe it. Encode follows Hugging Face's T5TokenizerFast (what ComfyUI's T5XXLTokenizer
// runs) with SentencePiece's own normalizer and Viterbi: the vocabulary's special tokens
// (<pad>, </s>, <unk>, <extra_id_N>) are cut out of the text first; each piece of text in
// between is normalized (precompiled character map, extra whitespace removed, spaces as
// ▁, a ▁ in front of the text's start), segmented into the pieces of highest total score,
// unknown characters merged into one <unk> (or spelled as <0xXX> byte pieces with byte
// fallback); </s> is appended.
//
// Scores are summed in float32 as SentencePiece does (the reference environment's
// tokenizer); Hugging Face's tokenizers sum in float64, which can only matter for two
// segmentations of equal score to within float32 rounding.
type Vocab struct {
	pieces []piece
	// lattice indexes the pieces Viterbi may use (normal, user-defined and unused
	// ones; unused are skipped); maxLen is the longest in bytes.
	lattice map[string]int
	maxLen  int
	// userDefined pieces are matched before normalization and always win.
	userDefined []string
	minScore    float32
	maxScore    float32
	unk         int
	bytePieces  [256]int // <0xXX> piece ids, −1 where absent; used with byteFallback
	byteFall    bool
	eos         int // appended after the text, −1 for none
	specials    []special
	norm        normalizer
}

type pieceKind uint8

// SentencePiece's piece types (sentencepiece_model.proto SentencePiece.Type).
const (
	kindNormal pieceKind = iota + 1
	kindUnknown
	kindControl
	kindUserDefined
	kindUnused
	kindByte
)

type piece struct {
	text  string
	score float32
	kind  pieceKind
}

// special is a token matched verbatim in the raw text (Hugging Face's added tokens).
type special struct {
	text           string
	id             int
	lstrip, rstrip bool
}

// normalizer holds SentencePiece's NormalizerSpec switches.
type normalizer struct {
	cmap                  *charsMap
	addDummyPrefix        bool
	removeExtraWhitespace bool
	escapeWhitespace      bool
	// prefixEveryPart adds the dummy prefix to text after a special token too
	// (SentencePiece itself); Hugging Face's prepend_scheme "first" only at the text's
	// start.
	prefixEveryPart bool
	// prefixUnlessSpace skips the dummy prefix when the text already starts with a
	// space (Hugging Face's Metaspace; only visible when whitespace is kept as is).
	prefixUnlessSpace bool
}

// kUnkPenalty is what an unknown character scores below the lowest piece
// (unigram_model.cc).
const unkPenalty = 10

// newVocab checks pieces and builds the lookup tables. unk is the unknown piece's id.
func newVocab(pieces []piece, unk, eos int, specials []special, norm normalizer, byteFallback bool) (*Vocab, error) {
	if len(pieces) == 0 {
		return nil, errors.New("t5: tokenizer has no pieces")
	}
	if unk < 0 || unk >= len(pieces) {
		return nil, fmt.Errorf("t5: tokenizer's unknown token id %d outside the %d pieces", unk, len(pieces))
	}
	if eos >= len(pieces) {
		return nil, fmt.Errorf("t5: tokenizer's end token id %d outside the %d pieces", eos, len(pieces))
	}
	v := &Vocab{pieces: pieces, lattice: map[string]int{}, unk: unk, eos: eos, norm: norm, byteFall: byteFallback,
		minScore: math.MaxFloat32, maxScore: -math.MaxFloat32}
	for i := range v.bytePieces {
		v.bytePieces[i] = -1
	}
	for id, p := range pieces {
		if p.text == "" {
			return nil, fmt.Errorf("t5: tokenizer piece %d is empty", id)
		}
		if p.score != p.score {
			return nil, fmt.Errorf("t5: tokenizer piece %d (%q) has a NaN score", id, p.text)
		}
		switch p.kind {
		case kindNormal, kindUserDefined, kindUnused:
			if _, dup := v.lattice[p.text]; !dup {
				v.lattice[p.text] = id
			}
			v.maxLen = max(v.maxLen, len(p.text))
			if p.kind == kindUserDefined {
				v.userDefined = append(v.userDefined, p.text)
			}
		case kindByte:
			var b int
			if _, err := fmt.Sscanf(p.text, "<0x%02X>", &b); err == nil && b >= 0 && b < 256 {
				v.bytePieces[b] = id
			}
		}
		if p.kind == kindNormal {
			v.minScore = min(v.minScore, p.score)
			v.maxScore = max(v.maxScore, p.score)
		}
	}
	if len(v.lattice) == 0 {
		return nil, errors.New("t5: tokenizer has no normal pieces")
	}
	// Longest first, so that a special token containing another wins.
	v.specials = append([]special(nil), specials...)
	sort.SliceStable(v.specials, func(i, j int) bool { return len(v.specials[i].text) > len(v.specials[j].text) })
	for _, s := range v.specials {
		if s.text == "" || s.id < 0 {
			return nil, fmt.Errorf("t5: tokenizer's special token %q has id %d", s.text, s.id)
		}
	}
	return v, nil
}

// Size is the number of ids the vocabulary can produce.
func (v *Vocab) Size() int {
	n := len(v.pieces)
	for _, s := range v.specials {
		n = max(n, s.id+1)
	}
	return n
}

// EndID is the id Encode appends (</s>), or −1 when the tokenizer appends none.
func (v *Vocab) EndID() int { return v.eos }

// Encode tokenizes text: the vocabulary's ids, then the end token.
func (v *Vocab) Encode(text string) []int {
	var ids []int
	start := 0
	for start <= len(text) {
		at, sp := v.nextSpecial(text, start)
		end := len(text)
		if sp != nil {
			end = at
		}
		part := text[start:end]
		if sp != nil && sp.lstrip {
			part = strings.TrimRight(part, " \t\n\r\f\v")
		}
		ids = v.encodePart(ids, part, start == 0 || v.norm.prefixEveryPart)
		if sp == nil {
			break
		}
		ids = append(ids, sp.id)
		start = at + len(sp.text)
		if sp.rstrip {
			start += len(text[start:]) - len(strings.TrimLeft(text[start:], " \t\n\r\f\v"))
		}
	}
	if v.eos >= 0 {
		ids = append(ids, v.eos)
	}
	return ids
}

// nextSpecial finds the first special token at or after from (the longest at a
// position).
func (v *Vocab) nextSpecial(text string, from int) (int, *special) {
	best, at := -1, len(text)+1
	for i := range v.specials {
		if j := strings.Index(text[from:], v.specials[i].text); j >= 0 && from+j < at {
			best, at = i, from+j
		}
	}
	if best < 0 {
		return 0, nil
	}
	return at, &v.specials[best]
}

// encodePart normalizes one piece of text and appends the ids of its best segmentation.
func (v *Vocab) encodePart(ids []int, text string, prefix bool) []int {
	norm := v.normalize(text, prefix)
	if norm == "" {
		return ids
	}
	prevUnk := false
	for _, p := range v.viterbi(norm) {
		if p.id != v.unk {
			ids = append(ids, p.id)
			prevUnk = false
			continue
		}
		if v.byteFall {
			if bs, ok := v.bytesOf(p.text); ok {
				ids = append(ids, bs...)
				prevUnk = false
				continue
			}
		}
		// A run of unknown characters becomes one <unk>.
		if !prevUnk {
			ids = append(ids, v.unk)
		}
		prevUnk = true
	}
	return ids
}

func (v *Vocab) bytesOf(s string) ([]int, bool) {
	out := make([]int, 0, len(s))
	for i := 0; i < len(s); i++ {
		id := v.bytePieces[s[i]]
		if id < 0 {
			return nil, false
		}
		out = append(out, id)
	}
	return out, true
}

const spaceSymbol = "\u2581"

// normalize is SentencePiece's Normalizer::Normalize: each character replaced through
// the precompiled map (user-defined pieces kept as they are), leading, trailing and
// repeated spaces dropped, a space put in front (dummy prefix), spaces written as ▁.
func (v *Vocab) normalize(s string, prefix bool) string {
	n := &v.norm
	if n.removeExtraWhitespace {
		for s != "" {
			r, l := v.normalizePrefix(s)
			if r != " " {
				break
			}
			s = s[l:]
		}
	}
	if s == "" {
		return ""
	}
	space := " "
	if n.escapeWhitespace {
		space = spaceSymbol
	}
	var b strings.Builder
	b.Grow(len(s) * 2)
	if prefix && n.addDummyPrefix {
		if r, _ := v.normalizePrefix(s); !n.prefixUnlessSpace || !(strings.HasPrefix(r, " ") || strings.HasPrefix(r, spaceSymbol)) {
			b.WriteString(space)
		}
	}
	prevSpace := n.removeExtraWhitespace
	for s != "" {
		r, l := v.normalizePrefix(s)
		if prevSpace {
			r = strings.TrimLeft(r, " ")
		}
		if r != "" {
			if n.escapeWhitespace {
				b.WriteString(strings.ReplaceAll(r, " ", spaceSymbol))
			} else {
				b.WriteString(r)
			}
			prevSpace = strings.HasSuffix(r, " ")
		}
		s = s[l:]
		if !n.removeExtraWhitespace {
			prevSpace = false
		}
	}
	out := b.String()
	if n.removeExtraWhitespace {
		for strings.HasSuffix(out, space) {
			out = out[:len(out)-len(space)]
		}
	}
	return out
}

// normalizePrefix returns the normalized form of the text's first character (or of a
// longer sequence the map or a user-defined piece covers) and the bytes it consumed. A
// malformed UTF-8 byte becomes U+FFFD and consumes one byte.
func (v *Vocab) normalizePrefix(s string) (string, int) {
	best := 0
	for _, u := range v.userDefined {
		if len(u) > best && strings.HasPrefix(s, u) {
			best = len(u)
		}
	}
	if best > 0 {
		return s[:best], best
	}
	if v.norm.cmap != nil {
		if r, n, ok := v.norm.cmap.longest(s); ok {
			return r, n
		}
	}
	r, n := utf8.DecodeRuneInString(s)
	if r == utf8.RuneError && n <= 1 {
		return "\uFFFD", 1
	}
	return s[:n], n
}

type segment struct {
	text string
	id   int
}

// viterbi is SentencePiece's Model::EncodeOptimized: the best score of a segmentation
// ending at each byte position, from every position every piece that starts there (an
// unknown character when no single-character piece does), then the best path read
// backwards. Ties keep the first candidate found (shorter pieces, earlier starts).
func (v *Vocab) viterbi(s string) []segment {
	type node struct {
		id    int
		score float32
		from  int
	}
	best := make([]node, len(s)+1)
	for i := range best {
		best[i].from = -1
	}
	unkScore := v.minScore - unkPenalty
	for start := 0; start < len(s); {
		_, charLen := utf8.DecodeRuneInString(s[start:])
		base := best[start].score
		single := false
		for end := start + 1; end <= len(s) && end-start <= v.maxLen; end++ {
			id, ok := v.lattice[s[start:end]]
			if !ok {
				continue
			}
			p := &v.pieces[id]
			if p.kind == kindUnused {
				continue
			}
			score := p.score
			if p.kind == kindUserDefined {
				score = float32(float64(end-start)*float64(v.maxScore) - 0.1)
			}
			cand := base + score
			if t := &best[end]; t.from < 0 || cand > t.score {
				*t = node{id: id, score: cand, from: start}
			}
			if end-start == charLen {
				single = true
			}
		}
		if !single {
			cand := base + unkScore
			if t := &best[start+charLen]; t.from < 0 || cand > t.score {
				*t = node{id: v.unk, score: cand, from: start}
			}
		}
		start += charLen
	}
	var out []segment
	for end := len(s); end > 0; {
		n := best[end]
		out = append(out, segment{s[n.from:end], n.id})
		end = n.from
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

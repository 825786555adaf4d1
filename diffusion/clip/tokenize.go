package clip

import (
	"fmt"
	"log/slog"
	"regexp"
	"strings"
)

// Token is one slot of a 77-token CLIP input: a vocabulary id, or (Embed non-nil) a
// textual-inversion vector that replaces the token embedding; its prompt weight; and
// ComfyUI's word id (0 for start, end and padding tokens, otherwise the 1-based index of
// the weighted text group the token came from).
type Token struct {
	ID     int
	Embed  []float32
	Weight float64
	WordID int
}

// EmbeddingLookup returns the vectors of a textual-inversion embedding by the name used
// in the prompt ("embedding:name"); nil and no error when there is none by that name.
type EmbeddingLookup func(name string) ([][]float32, error)

// Tokenizer is ComfyUI's SDTokenizer: the BPE plus weight syntax, embeddings and
// chunking into fixed-length token windows.
type Tokenizer struct {
	BPE *BPE
	// MaxLength is the window length including start and end tokens (77).
	MaxLength int
	// MaxWordLength: a group of at least this many tokens may be split across windows;
	// a shorter one that does not fit starts a new window (8).
	MaxWordLength int
	// PadWithEnd pads with the end token (SD1.x CLIP-L); otherwise PadToken is used.
	PadToken int
	// Embeddings resolves "embedding:name"; nil disables embeddings (the text is kept).
	Embeddings EmbeddingLookup
	Logger     *slog.Logger
}

// NewSD1Tokenizer returns the SD1.x tokenizer settings ComfyUI uses: windows of 77,
// start 49406, end and padding 49407 (the BPE's own ids).
func NewSD1Tokenizer(bpe *BPE, emb EmbeddingLookup) *Tokenizer {
	return &Tokenizer{BPE: bpe, MaxLength: 77, MaxWordLength: 8, PadToken: bpe.eos, Embeddings: emb}
}

const embeddingPrefix = "embedding:"

var embeddingSplit = regexp.MustCompile(` embedding:|\nembedding:`)

// TokenizeWithWeights turns a prompt into windows of MaxLength tokens as ComfyUI's
// tokenize_with_weights does (with word ids).
func (t *Tokenizer) TokenizeWithWeights(prompt string) ([][]Token, error) {
	groups, err := TokenGroups(prompt, func(word string) []int {
		ids := t.BPE.Encode(word)
		return ids[1 : len(ids)-1] // drop the start and end tokens
	}, t.Embeddings, t.logger())
	if err != nil {
		return nil, err
	}
	return t.chunk(groups), nil
}

// WordEncoder turns one piece of prompt text into token ids, without start or end
// tokens.
type WordEncoder func(text string) []int

// TokenGroups is the first half of ComfyUI's tokenize_with_weights, shared by every
// SDTokenizer (CLIP's BPE, T5's SentencePiece): the weight syntax parsed, escapes undone,
// each weighted segment cut before every "embedding:name" reference; every piece of text
// encoded by enc into one group of tokens carrying the segment's weight (empty groups
// kept: each one counts as a word), every embedding found through emb (nil keeps the
// text) into a group of vectors. Missing embeddings are logged and skipped.
func TokenGroups(prompt string, enc WordEncoder, emb EmbeddingLookup, log *slog.Logger) ([][]Token, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var groups [][]Token
	for _, seg := range ParseWeights(escapeImportant(prompt), 1.0) {
		text := unescapeImportant(seg.Text)
		for _, word := range splitEmbeddings(text) {
			if strings.HasPrefix(word, embeddingPrefix) && emb != nil {
				name := strings.Trim(word[len(embeddingPrefix):], "\n")
				vecs, leftover, err := tryEmbedding(emb, name)
				if err != nil {
					return nil, err
				}
				if vecs == nil {
					log.Warn("embedding does not exist, ignoring", "embedding", name)
				} else {
					g := make([]Token, len(vecs))
					for i, v := range vecs {
						g[i] = Token{ID: -1, Embed: v, Weight: seg.Weight}
					}
					groups = append(groups, g)
				}
				if leftover == "" {
					continue
				}
				word = leftover
			}
			ids := enc(word)
			g := make([]Token, len(ids))
			for i, id := range ids {
				g[i] = Token{ID: id, Weight: seg.Weight}
			}
			groups = append(groups, g)
		}
	}
	return groups, nil
}

// splitEmbeddings cuts the text before every " embedding:" so that each embedding
// reference starts a piece of its own; empty pieces are dropped.
func splitEmbeddings(text string) []string {
	parts := embeddingSplit.Split(text, -1)
	var out []string
	for i, p := range parts {
		if i > 0 {
			p = embeddingPrefix + p
		}
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// tryEmbedding resolves the first whitespace-separated word of name; the rest is
// returned as leftover text. A name with trailing commas is retried without them, the
// commas then leading the leftover (ComfyUI's _try_get_embedding).
func tryEmbedding(lookup EmbeddingLookup, name string) ([][]float32, string, error) {
	fields := strings.Fields(name)
	if len(fields) == 0 {
		return nil, "", nil
	}
	first, leftover := fields[0], strings.Join(fields[1:], " ")
	vecs, err := lookup(first)
	if err != nil {
		return nil, "", err
	}
	if vecs == nil {
		stripped := strings.Trim(first, ",")
		if len(stripped) < len(first) {
			vecs, err = lookup(stripped)
			if err != nil {
				return nil, "", err
			}
			return vecs, fmt.Sprintf("%s %s", first[len(stripped):], leftover), nil
		}
	}
	return vecs, leftover, nil
}

// chunk lays the token groups into windows: start token, tokens, end token, padding.
// A group that does not fit the current window moves to the next one, unless it is
// at least MaxWordLength long, in which case it is split at the window boundary.
func (t *Tokenizer) chunk(groups [][]Token) [][]Token {
	start := Token{ID: t.BPE.bos, Weight: 1}
	end := Token{ID: t.BPE.eos, Weight: 1}
	pad := Token{ID: t.PadToken, Weight: 1}
	batch := []Token{start}
	var windows [][]Token
	for gi, g := range groups {
		large := len(g) >= t.MaxWordLength
		for len(g) > 0 {
			if len(g)+len(batch) > t.MaxLength-1 {
				remaining := t.MaxLength - len(batch) - 1
				if large {
					for _, tok := range g[:remaining] {
						tok.WordID = gi + 1
						batch = append(batch, tok)
					}
					batch = append(batch, end)
					g = g[remaining:]
				} else {
					batch = append(batch, end)
					for range remaining {
						batch = append(batch, pad)
					}
				}
				windows = append(windows, batch)
				batch = []Token{start}
			} else {
				for _, tok := range g {
					tok.WordID = gi + 1
					batch = append(batch, tok)
				}
				g = nil
			}
		}
	}
	batch = append(batch, end)
	for len(batch) < t.MaxLength {
		batch = append(batch, pad)
	}
	return append(windows, batch)
}

func (t *Tokenizer) logger() *slog.Logger {
	if t.Logger != nil {
		return t.Logger
	}
	return slog.New(slog.DiscardHandler)
}

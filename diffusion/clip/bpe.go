package clip

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// Special token strings of the CLIP vocabulary.
const (
	StartOfText = "<|startoftext|>"
	EndOfText   = "<|endoftext|>"
)

// BPE is CLIP's byte-level BPE tokenizer. It is safe for concurrent use.
type BPE struct {
	vocab map[string]int
	ranks map[[2]string]int
	bos   int
	eos   int

	mu    sync.Mutex
	cache map[string][]string
}

// vocabFiles are the vocabulary layouts LoadBPE understands, in the order it tries them.
var vocabFiles = [][]string{
	{"vocab.json", "merges.txt"},     // Hugging Face / ComfyUI's comfy/sd1_tokenizer
	{"bpe_simple_vocab_16e6.txt.gz"}, // OpenAI CLIP
	{"bpe_simple_vocab_16e6.txt"},    // the same, uncompressed
}

// LoadBPE loads a CLIP vocabulary from dir: vocab.json + merges.txt, or OpenAI's
// bpe_simple_vocab_16e6.txt(.gz). The error of a folder that holds neither says which
// files to put there.
func LoadBPE(dir string) (*BPE, error) {
	for _, set := range vocabFiles {
		ok := true
		for _, f := range set {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		if len(set) == 2 {
			return loadHF(filepath.Join(dir, set[0]), filepath.Join(dir, set[1]))
		}
		return loadOpenAI(filepath.Join(dir, set[0]))
	}
	return nil, fmt.Errorf("clip: no CLIP vocabulary in %s: put vocab.json and merges.txt (from a ComfyUI install's comfy/sd1_tokenizer/ or a diffusers tokenizer/ folder) or bpe_simple_vocab_16e6.txt.gz there", dir)
}

func loadHF(vocabPath, mergesPath string) (*BPE, error) {
	data, err := os.ReadFile(vocabPath)
	if err != nil {
		return nil, fmt.Errorf("clip: %w", err)
	}
	vocab := map[string]int{}
	if err := json.Unmarshal(data, &vocab); err != nil {
		return nil, fmt.Errorf("clip: %s: %w", vocabPath, err)
	}
	f, err := os.Open(mergesPath)
	if err != nil {
		return nil, fmt.Errorf("clip: %w", err)
	}
	defer f.Close()
	merges, err := readMerges(f, mergesPath, -1)
	if err != nil {
		return nil, err
	}
	return newBPE(vocab, merges, vocabPath)
}

// loadOpenAI builds the vocabulary the way CLIP's simple_tokenizer does: the 256 byte
// symbols, the same with "</w>", one entry per merge (the first 48,894 merges of the
// file), then the two special tokens.
func loadOpenAI(path string) (*BPE, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("clip: %w", err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("clip: %s: %w", path, err)
		}
		defer gz.Close()
		r = gz
	}
	const nMerges = 49152 - 256 - 2
	merges, err := readMerges(r, path, nMerges)
	if err != nil {
		return nil, err
	}
	// bytes_to_unicode lists the printable bytes first, then the others, each in byte
	// order; the vocabulary follows that order.
	var syms []string
	for pass := 0; pass < 2; pass++ {
		for b := 0; b < 256; b++ {
			if printableByte(b) == (pass == 0) {
				syms = append(syms, byteSym[b])
			}
		}
	}
	vocab := map[string]int{}
	add := func(s string) { vocab[s] = len(vocab) }
	for _, s := range syms {
		add(s)
	}
	for _, s := range syms {
		add(s + "</w>")
	}
	for _, m := range merges {
		add(m[0] + m[1])
	}
	add(StartOfText)
	add(EndOfText)
	return newBPE(vocab, merges, path)
}

// readMerges reads "a b" lines after the "#version" header line; limit < 0 reads all.
func readMerges(r io.Reader, name string, limit int) ([][2]string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var merges [][2]string
	line := 0
	for sc.Scan() {
		line++
		if line == 1 {
			continue // "#version: 0.2"
		}
		if limit >= 0 && len(merges) == limit {
			break
		}
		text := sc.Text()
		if text == "" {
			continue
		}
		a, b, ok := strings.Cut(text, " ")
		if !ok {
			return nil, fmt.Errorf("clip: %s:%d: merge line %q is not two symbols", name, line, text)
		}
		merges = append(merges, [2]string{a, b})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("clip: %s: %w", name, err)
	}
	return merges, nil
}

func newBPE(vocab map[string]int, merges [][2]string, name string) (*BPE, error) {
	bos, ok1 := vocab[StartOfText]
	eos, ok2 := vocab[EndOfText]
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("clip: %s: vocabulary lacks %s or %s", name, StartOfText, EndOfText)
	}
	ranks := make(map[[2]string]int, len(merges))
	for i, m := range merges {
		if _, dup := ranks[m]; !dup {
			ranks[m] = i
		}
	}
	return &BPE{vocab: vocab, ranks: ranks, bos: bos, eos: eos, cache: map[string][]string{}}, nil
}

// byteSymbols is CLIP's bytes_to_unicode table: printable Latin-1 bytes map to
// themselves, the other bytes to code points from 256 upwards, in byte order.
func byteSymbols() [256]string {
	var out [256]string
	n := 0
	for b := 0; b < 256; b++ {
		if printableByte(b) {
			out[b] = string(rune(b))
		} else {
			out[b] = string(rune(256 + n))
			n++
		}
	}
	return out
}

var byteSym = byteSymbols()

// printableByte reports whether CLIP maps byte b to the character of the same code.
func printableByte(b int) bool {
	return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
}

// pretokenize is CLIP's word pattern, case-insensitive.
var pretokenize = regexp.MustCompile(`(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+`)

// Encode returns the token ids of text with the start and end tokens around them, as
// the Hugging Face tokenizer's input_ids.
func (t *BPE) Encode(text string) []int {
	ids := []int{t.bos}
	for _, word := range pretokenize.FindAllString(cleanText(text), -1) {
		if word == StartOfText || word == EndOfText {
			ids = append(ids, t.vocab[word])
			continue
		}
		var sb strings.Builder
		for _, b := range []byte(word) {
			sb.WriteString(byteSym[b])
		}
		for _, piece := range t.bpe(sb.String()) {
			id, ok := t.vocab[piece]
			if !ok {
				id = t.eos // the unknown token is <|endoftext|>
			}
			ids = append(ids, id)
		}
	}
	return append(ids, t.eos)
}

// bpe merges the symbols of one pre-token, lowest merge rank first; the last symbol
// carries the end-of-word marker.
func (t *BPE) bpe(token string) []string {
	t.mu.Lock()
	if v, ok := t.cache[token]; ok {
		t.mu.Unlock()
		return v
	}
	t.mu.Unlock()
	var word []string
	for _, r := range token {
		word = append(word, string(r))
	}
	if len(word) == 0 {
		return nil
	}
	word[len(word)-1] += "</w>"
	for len(word) > 1 {
		best, bestRank := -1, int(^uint(0)>>1)
		for i := 0; i+1 < len(word); i++ {
			if r, ok := t.ranks[[2]string{word[i], word[i+1]}]; ok && r < bestRank {
				best, bestRank = i, r
			}
		}
		if best < 0 {
			break
		}
		first, second := word[best], word[best+1]
		merged := make([]string, 0, len(word))
		for i := 0; i < len(word); i++ {
			if i+1 < len(word) && word[i] == first && word[i+1] == second {
				merged = append(merged, first+second)
				i++
			} else {
				merged = append(merged, word[i])
			}
		}
		word = merged
	}
	t.mu.Lock()
	t.cache[token] = word
	t.mu.Unlock()
	return word
}

// cleanText is the basic cleaning of Hugging Face's slow CLIPTokenizer when ftfy is
// absent (BasicTokenizer without accent stripping or punctuation splitting): drop NUL,
// U+FFFD and control/format characters, turn whitespace into spaces, put spaces around
// CJK ideographs, NFC-normalise, lower-case, and join the whitespace-separated words with
// single spaces.
func cleanText(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == 0 || r == 0xFFFD:
		case r == '\t' || r == '\n' || r == '\r' || unicode.Is(unicode.Zs, r):
			b.WriteByte(' ')
		case unicode.In(r, unicode.Cc, unicode.Cf):
		case isCJK(r):
			b.WriteByte(' ')
			b.WriteRune(r)
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
	}
	words := strings.Fields(norm.NFC.String(b.String()))
	for i, w := range words {
		words[i] = strings.ToLower(w)
	}
	return strings.Join(words, " ")
}

// isCJK reports whether r is in one of the CJK ideograph blocks BERT's basic tokenizer
// isolates.
func isCJK(r rune) bool {
	return (r >= 0x4E00 && r <= 0x9FFF) || (r >= 0x3400 && r <= 0x4DBF) ||
		(r >= 0x20000 && r <= 0x2A6DF) || (r >= 0x2A700 && r <= 0x2B73F) ||
		(r >= 0x2B740 && r <= 0x2B81F) || (r >= 0x2B820 && r <= 0x2CEAF) ||
		(r >= 0xF900 && r <= 0xFAFF) || (r >= 0x2F800 && r <= 0x2FA1F)
}

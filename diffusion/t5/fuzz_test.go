package t5

import (
	"testing"
	"unicode/utf8"
)

// FuzzParseSpieceModel: any bytes as a spiece.model give a vocabulary or an error, never
// a panic; a vocabulary that loads tokenizes text into ids it has, ending in </s>.
func FuzzParseSpieceModel(f *testing.F) {
	good := tinySpieceModel(f, true)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte{0x0a, 0x05, 0x0a, 0x03, 'a', 'b', 'c'})
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := ParseSpieceModel(data)
		if err != nil {
			return
		}
		for _, s := range []string{"a cat", "\uff41 xyz </s> \ufb01", "\xff\xfe", "  "} {
			checkIDs(t, v, s)
		}
	})
}

// FuzzVocabEncode: any text tokenizes into ids of the vocabulary, ending in </s>, and a
// prompt into tokens padded to min_length.
func FuzzVocabEncode(f *testing.F) {
	for _, s := range []string{"a cat", "  the cats \t", "a</s>cat<pad>", "\uff41\ufb01\u200b", "(a:1.2) \\(b\\) embedding:x", "\xff", ""} {
		f.Add(s)
	}
	vs := map[string]*Vocab{}
	for _, bf := range []bool{false, true} {
		v, err := ParseTokenizerJSON(tinyTokenizerJSON(f, bf))
		if err != nil {
			f.Fatal(err)
		}
		vs[map[bool]string{false: "plain", true: "bytes"}[bf]] = v
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, v := range vs {
			checkIDs(t, v, s)
			toks, err := NewTokenizer(v, 8).TokenizeWithWeights(s)
			if err != nil {
				t.Fatal(err)
			}
			if len(toks) < 8 {
				t.Fatalf("%d tokens, min_length 8", len(toks))
			}
		}
	})
}

func checkIDs(t *testing.T, v *Vocab, s string) {
	t.Helper()
	ids := v.Encode(s)
	if len(ids) == 0 || ids[len(ids)-1] != v.EndID() {
		t.Fatalf("Encode(%q) = %v: no end token %d", s, ids, v.EndID())
	}
	for _, id := range ids {
		if id < 0 || id >= v.Size() {
			t.Fatalf("Encode(%q) = %v: id %d outside the %d ids", s, ids, id, v.Size())
		}
	}
	// Every character becomes at least part of a piece: no more ids than bytes + 2
	// (▁ and </s>) per special-free text.
	if len(ids) > len(s)+2*utf8.RuneCountInString(s)+2 {
		t.Fatalf("Encode(%q): %d ids", s, len(ids))
	}
}

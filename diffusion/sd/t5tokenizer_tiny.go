package sd

import (
	"encoding/json"
	"strconv"
)

// TinyT5TokenizerJSON is a small T5 tokenizer.json (Hugging Face's Unigram layout, the
// one t5.LoadVocab reads) for tests with tiny models, whose embedding tables hold a few
// hundred rows: <pad> 0, </s> 1, <unk> 2, "▁", the lowercase letters and some words, all
// ids below 64. Real prompts need the real tokenizer (models/tokenizers/t5).
func TinyT5TokenizerJSON() []byte {
	vocab := [][]any{{"<pad>", 0.0}, {"</s>", 0.0}, {"<unk>", 0.0}, {"▁", -8.0}}
	for c := 'a'; c <= 'z'; c++ {
		vocab = append(vocab, []any{string(c), -10.0})
	}
	for _, w := range []string{"a", "an", "the", "of", "in", "on", "cat", "dog", "photo", "red", "blue", "tree", "house", "sky", "sunset", "painting", "portrait", "city"} {
		vocab = append(vocab, []any{"▁" + w, -5.0})
	}
	added := []map[string]any{}
	for i, s := range []string{"<pad>", "</s>", "<unk>"} {
		added = append(added, map[string]any{"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true})
	}
	doc := map[string]any{
		"version":      "1.0",
		"added_tokens": added,
		"normalizer":   nil,
		"pre_tokenizer": map[string]any{"type": "Sequence", "pretokenizers": []any{
			map[string]any{"type": "WhitespaceSplit"},
			map[string]any{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
		}},
		"post_processor": map[string]any{"type": "TemplateProcessing",
			"single":         []any{map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}}, map[string]any{"SpecialToken": map[string]any{"id": "</s>", "type_id": 0}}},
			"special_tokens": map[string]any{"</s>": map[string]any{"id": "</s>", "ids": []int{1}, "tokens": []string{"</s>"}}}},
		"model": map[string]any{"type": "Unigram", "unk_id": 2, "vocab": vocab, "byte_fallback": false},
	}
	b, err := json.Marshal(doc)
	if err != nil {
		panic("sd: tiny T5 tokenizer: " + strconv.Quote(err.Error())) // a literal document always marshals
	}
	return b
}

package sd

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/weights/folders"
)

// tinyT5TokenizerJSON is a minimal Unigram tokenizer.json in T5's shape.
const tinyT5TokenizerJSON = `{"version": "1.0",
 "added_tokens": [{"id": 0, "content": "<pad>", "special": true}, {"id": 1, "content": "</s>", "special": true}, {"id": 2, "content": "<unk>", "special": true}],
 "normalizer": null,
 "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first"},
 "post_processor": {"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A"}}, {"SpecialToken": {"id": "</s>"}}],
   "special_tokens": {"</s>": {"id": "</s>", "ids": [1]}}},
 "model": {"type": "Unigram", "unk_id": 2, "vocab": [["<pad>", 0], ["</s>", 0], ["<unk>", 0], ["▁", -2], ["▁cat", -3]]}}`

func TestT5TokenizerSearch(t *testing.T) {
	base := t.TempDir()
	comfy := t.TempDir()
	if err := os.MkdirAll(filepath.Join(comfy, "models", "clip"), 0o755); err != nil {
		t.Fatal(err)
	}
	yml := filepath.Join(base, "extra_model_paths.yaml")
	if err := os.WriteFile(yml, []byte("comfyui:\n    base_path: "+comfy+"\n    clip: models/clip\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := folders.New(folders.Options{BaseDir: base, ExtraConfigs: []string{yml}})
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	CheckT5Tokenizer(p, log)
	if !strings.Contains(logged.String(), "level=WARN") || !strings.Contains(logged.String(), "T5 tokenizer") {
		t.Errorf("no startup warning without a tokenizer: %s", logged.String())
	}
	install := filepath.Join(comfy, "comfy", "text_encoders", "t5_tokenizer")
	_, err = FindT5Tokenizer(p)
	if me, ok := err.(*MissingT5TokenizerError); !ok || !strings.Contains(me.Error(), "tokenizer.json") ||
		!slices.Contains(me.Searched, install) || me.Searched[0] != filepath.Join(base, "models", "tokenizers", "t5") {
		t.Fatalf("FindT5Tokenizer without a tokenizer: %v", err)
	}
	var v T5Vocabulary
	if _, err := v.Load(p); err == nil {
		t.Fatal("loaded a tokenizer that is not there")
	}

	write := func(dir, name, body string) string {
		t.Helper()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	fromInstall := write(install, "tokenizer.json", tinyT5TokenizerJSON)
	if got, err := FindT5Tokenizer(p); err != nil || got != fromInstall {
		t.Fatalf("FindT5Tokenizer = %q, %v; want the install's %s", got, err, fromInstall)
	}
	logged.Reset()
	CheckT5Tokenizer(p, log)
	if strings.Contains(logged.String(), "level=WARN") || !strings.Contains(logged.String(), fromInstall) {
		t.Errorf("startup log with a tokenizer: %s", logged.String())
	}
	v1, err := v.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if v2, _ := v.Load(p); v1 != v2 {
		t.Error("the tokenizer was parsed twice")
	}
	if ids := v1.Encode("cat"); !slices.Equal(ids, []int{4, 1}) {
		t.Errorf("Encode(cat) = %v", ids)
	}

	// models/tokenizers/t5 of the base directory comes first; in a folder
	// tokenizer.json wins over spiece.model.
	own := filepath.Join(base, "models", "tokenizers", "t5")
	spiece := write(own, "spiece.model", "not read by the search")
	if got, _ := FindT5Tokenizer(p); got != spiece {
		t.Fatalf("FindT5Tokenizer = %q, want %s", got, spiece)
	}
	js := write(own, "tokenizer.json", tinyT5TokenizerJSON)
	if got, _ := FindT5Tokenizer(p); got != js {
		t.Fatalf("FindT5Tokenizer = %q, want %s", got, js)
	}
	// A damaged file says which file it is.
	write(own, "tokenizer.json", `{"model": {"type": "BPE"}}`)
	if _, err := v.Load(p); err == nil || !strings.Contains(err.Error(), js) {
		t.Fatalf("damaged tokenizer: %v", err)
	}
}

package sd

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/forgeflow/forgeflow/diffusion/t5"
	"github.com/forgeflow/forgeflow/weights/folders"
)

// The T5 tokenizer (Flux, SD3) is a model asset like the CLIP vocabulary: ComfyUI ships
// it in its source tree (comfy/text_encoders/t5_tokenizer/tokenizer.json), forgeflow
// looks for it where a user keeps models.

// t5TokenizerFiles are the files that make a T5 tokenizer, preferred first.
var t5TokenizerFiles = []string{t5.TokenizerJSON, t5.SpieceModel}

// T5TokenizerDirs lists, in search order, the directories where a T5 tokenizer is
// looked for:
//   - tokenizers/t5/ next to every model directory's folder (models/tokenizers/t5/ of the
//     base directory and of every extra model path), and the t5/ subfolder of every
//     directory of a "tokenizers" folder an extra config names;
//   - comfy/text_encoders/t5_tokenizer/ of a ComfyUI install whose models/ an extra
//     config names.
func T5TokenizerDirs(p *folders.Paths) []string {
	var out []string
	add := func(d string) {
		d = filepath.Clean(d)
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	modelsDirs := modelsDirsOf(p)
	for _, m := range modelsDirs {
		add(filepath.Join(m, "tokenizers", "t5"))
	}
	if p.Has("tokenizers") {
		if dirs, err := p.Dirs("tokenizers"); err == nil {
			for _, d := range dirs {
				add(filepath.Join(d, "t5"))
			}
		}
	}
	for _, m := range modelsDirs {
		add(filepath.Join(filepath.Dir(m), "comfy", "text_encoders", "t5_tokenizer"))
	}
	return out
}

// MissingT5TokenizerError says that no T5 tokenizer was found and where to put one.
type MissingT5TokenizerError struct {
	Searched []string
}

func (e *MissingT5TokenizerError) Error() string {
	where := filepath.Join("models", "tokenizers", "t5")
	if len(e.Searched) > 0 {
		where = e.Searched[0]
	}
	shown := e.Searched
	if len(shown) > 6 {
		shown = shown[:6]
	}
	return fmt.Sprintf("sd: no T5 tokenizer found (Flux and SD3 prompts need it): run `forgeflow models pull tokenizers`, or put tokenizer.json "+
		"(from a ComfyUI install's comfy/text_encoders/t5_tokenizer/) or a T5 spiece.model in %s, "+
		"or name a ComfyUI install in extra_model_paths.yaml (searched: %s)", where, strings.Join(shown, ", "))
}

// FindT5Tokenizer returns the first tokenizer file of T5TokenizerDirs (tokenizer.json
// before spiece.model in each), or a MissingT5TokenizerError.
func FindT5Tokenizer(p *folders.Paths) (string, error) {
	dirs := T5TokenizerDirs(p)
	for _, d := range dirs {
		for _, f := range t5TokenizerFiles {
			path := filepath.Join(d, f)
			if st, err := os.Stat(path); err == nil && st.Mode().IsRegular() {
				return path, nil
			}
		}
	}
	return "", &MissingT5TokenizerError{Searched: dirs}
}

// CheckT5Tokenizer logs a warning when no T5 tokenizer can be found, for a server to call
// at start: Flux and SD3 prompts will fail until one is put in place.
func CheckT5Tokenizer(p *folders.Paths, log *slog.Logger) {
	if log == nil {
		return
	}
	if path, err := FindT5Tokenizer(p); err != nil {
		log.Warn("Flux and SD3 text encoding will fail until a T5 tokenizer is installed", "error", err)
	} else {
		log.Info("T5 tokenizer", "file", path)
	}
}

// T5Vocabulary loads the T5 tokenizer once per file and keeps it (T5's tokenizer.json is
// 2.4 MB of JSON). The zero value is ready; it is safe for concurrent use.
type T5Vocabulary struct {
	mu    sync.Mutex
	path  string
	vocab *t5.Vocab
}

// Load finds the tokenizer through p and returns it, parsed once per file.
func (v *T5Vocabulary) Load(p *folders.Paths) (*t5.Vocab, error) {
	if p == nil {
		return nil, errors.New("sd: no model folders to find the T5 tokenizer in")
	}
	path, err := FindT5Tokenizer(p)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.vocab != nil && v.path == path {
		return v.vocab, nil
	}
	vocab, err := t5.LoadVocab(path)
	if err != nil {
		return nil, err
	}
	v.path, v.vocab = path, vocab
	return vocab, nil
}

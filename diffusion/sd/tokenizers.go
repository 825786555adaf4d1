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

	"github.com/forgeflow/forgeflow/diffusion/clip"
	"github.com/forgeflow/forgeflow/weights/folders"
)

// The CLIP vocabulary is a model asset like the weights: ComfyUI ships it in its source
// tree (comfy/sd1_tokenizer/), forgeflow looks for it where a user keeps models.

// vocabSet are the file sets that make a vocabulary (clip.LoadBPE reads either).
var vocabSets = [][]string{
	{"vocab.json", "merges.txt"},
	{"bpe_simple_vocab_16e6.txt.gz"},
	{"bpe_simple_vocab_16e6.txt"},
}

// VocabDirs lists, in search order, the directories where a CLIP vocabulary is looked
// for:
//   - tokenizers/clip/ next to every model directory's folder (models/tokenizers/clip/ of
//     the base directory and of every extra model path), and the directories of a
//     "tokenizers" folder if an extra config names one (and their clip/ subfolder);
//   - comfy/sd1_tokenizer/ of a ComfyUI install whose models/ an extra config names;
//   - tokenizer/ of every diffusers-style model folder (models/diffusers/NAME/tokenizer).
func VocabDirs(p *folders.Paths) []string {
	var out []string
	add := func(d string) {
		d = filepath.Clean(d)
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	modelsDirs := modelsDirsOf(p)
	for _, m := range modelsDirs {
		add(filepath.Join(m, "tokenizers", "clip"))
	}
	if p.Has("tokenizers") {
		if dirs, err := p.Dirs("tokenizers"); err == nil {
			for _, d := range dirs {
				add(filepath.Join(d, "clip"))
				add(d)
			}
		}
	}
	for _, m := range modelsDirs {
		// A ComfyUI install keeps its models/ next to comfy/.
		add(filepath.Join(filepath.Dir(m), "comfy", "sd1_tokenizer"))
	}
	if dirs, err := p.Dirs("diffusers"); err == nil {
		for _, d := range dirs {
			entries, err := os.ReadDir(d)
			if err != nil {
				continue
			}
			for _, e := range entries {
				if e.IsDir() {
					add(filepath.Join(d, e.Name(), "tokenizer"))
				}
			}
		}
	}
	return out
}

// modelsDirsOf returns the "models" directories holding the model folders, the main
// one (BaseDir/models or --models-directory) first: the parents of every folder's directories.
func modelsDirsOf(p *folders.Paths) []string {
	var out []string
	add := func(d string) {
		d = filepath.Clean(d)
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	add(p.ModelsDir())
	for _, f := range p.Folders() {
		if f == "custom_nodes" || f == "tokenizers" {
			continue
		}
		dirs, err := p.Dirs(f)
		if err != nil {
			continue
		}
		for _, d := range dirs {
			add(filepath.Dir(d))
		}
	}
	return out
}

// hasVocab reports whether dir holds one of the vocabulary file sets.
func hasVocab(dir string) bool {
	for _, set := range vocabSets {
		ok := true
		for _, f := range set {
			if st, err := os.Stat(filepath.Join(dir, f)); err != nil || !st.Mode().IsRegular() {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// MissingVocabError says that no CLIP vocabulary was found and where to put one.
type MissingVocabError struct {
	Searched []string
}

func (e *MissingVocabError) Error() string {
	where := "models/tokenizers/clip/"
	if len(e.Searched) > 0 {
		where = e.Searched[0]
	}
	shown := e.Searched
	if len(shown) > 6 {
		shown = shown[:6]
	}
	return fmt.Sprintf("sd: no CLIP tokenizer vocabulary found: run `forgeflow models pull tokenizers`, or put vocab.json and merges.txt "+
		"(from a ComfyUI install's comfy/sd1_tokenizer/ or a diffusers model's tokenizer/ folder) "+
		"or OpenAI's bpe_simple_vocab_16e6.txt.gz in %s, or name a ComfyUI install in "+
		"extra_model_paths.yaml (searched: %s)", where, strings.Join(shown, ", "))
}

// FindVocab returns the first directory of VocabDirs that holds a vocabulary, or a
// MissingVocabError.
func FindVocab(p *folders.Paths) (string, error) {
	dirs := VocabDirs(p)
	for _, d := range dirs {
		if hasVocab(d) {
			return d, nil
		}
	}
	return "", &MissingVocabError{Searched: dirs}
}

// CheckVocab logs a warning when no CLIP vocabulary can be found, for a server to call
// at start: text prompts will fail until one is put in place.
func CheckVocab(p *folders.Paths, log *slog.Logger) {
	if log == nil {
		return
	}
	if dir, err := FindVocab(p); err != nil {
		log.Warn("text encoding will fail until a CLIP vocabulary is installed", "error", err)
	} else {
		log.Info("CLIP vocabulary", "dir", dir)
	}
}

// Vocabulary loads the CLIP vocabulary once per directory and keeps it: a
// vocabulary is about 1.5 MB of text and takes a while to parse, and every checkpoint
// shares it. The zero value is ready; it is safe for concurrent use.
type Vocabulary struct {
	mu  sync.Mutex
	dir string
	bpe *clip.BPE
}

// Load finds the vocabulary through p and returns it, parsed once per directory.
func (v *Vocabulary) Load(p *folders.Paths) (*clip.BPE, error) {
	if p == nil {
		return nil, errors.New("sd: no model folders to find the CLIP vocabulary in")
	}
	dir, err := FindVocab(p)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.bpe != nil && v.dir == dir {
		return v.bpe, nil
	}
	bpe, err := clip.LoadBPE(dir)
	if err != nil {
		return nil, err
	}
	v.dir, v.bpe = dir, bpe
	return bpe, nil
}

package clip

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// DirEmbeddings returns an EmbeddingLookup over textual-inversion files in dirs (the
// embeddings model folders), as ComfyUI's load_embedding finds them: the name as given,
// else with .safetensors, .pt or .bin added; names that would leave their folder are
// ignored. Vectors of another width than size are refused. key selects the tensor of a
// multi-encoder file ("clip_l", "clip_g"); otherwise the file's first tensor is used.
func DirEmbeddings(dirs []string, size int, key string) EmbeddingLookup {
	return func(name string) ([][]float32, error) {
		path := findEmbedding(dirs, name)
		if path == "" {
			return nil, nil
		}
		if !strings.HasSuffix(path, ".safetensors") {
			return nil, fmt.Errorf("clip: embedding %s: only safetensors embeddings are supported", path)
		}
		return readEmbedding(path, size, key)
	}
}

func findEmbedding(dirs []string, name string) string {
	for _, dir := range dirs {
		base, err := filepath.Abs(dir)
		if err != nil {
			continue
		}
		p := filepath.Join(base, name)
		if rel, err := filepath.Rel(base, p); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			continue
		}
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
		for _, ext := range []string{".safetensors", ".pt", ".bin"} {
			if st, err := os.Stat(p + ext); err == nil && st.Mode().IsRegular() {
				return p + ext
			}
		}
	}
	return ""
}

func readEmbedding(path string, size int, key string) ([][]float32, error) {
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, fmt.Errorf("clip: embedding: %w", err)
	}
	defer f.Close()
	infos := f.Tensors()
	if len(infos) == 0 {
		return nil, fmt.Errorf("clip: embedding %s holds no tensor", path)
	}
	name := ""
	if _, ok := f.Info(key); ok && key != "" {
		name = key
	} else {
		names := make([]string, len(infos))
		for i, in := range infos {
			names[i] = in.Name
		}
		sort.Strings(names)
		name = names[0]
	}
	t, err := f.Tensor(name)
	if err != nil {
		return nil, fmt.Errorf("clip: embedding: %w", err)
	}
	vals, err := t.Float32()
	if err != nil {
		return nil, fmt.Errorf("clip: embedding: %w", err)
	}
	shape := t.Shape
	if len(shape) == 0 || len(shape) > 2 || int(shape[len(shape)-1]) != size {
		return nil, fmt.Errorf("clip: embedding %s: tensor %q has shape %v, want [n, %d]", path, name, shape, size)
	}
	var out [][]float32
	for i := 0; i+size <= len(vals); i += size {
		out = append(out, vals[i:i+size])
	}
	return out, nil
}

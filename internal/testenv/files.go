package testenv

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// HeaderTensor is one tensor entry of a safetensors header.
type HeaderTensor struct {
	DType   string   `json:"dtype"`
	Shape   []int    `json:"shape"`
	Offsets [2]int64 `json:"data_offsets"`
}

// maxHeader bounds the JSON header read (the golden files' headers are a few KiB).
const maxHeader = 64 << 20

// ReadSafetensorsHeader reads the header of a .safetensors file: each tensor's dtype,
// shape and data offsets, and the __metadata__ strings. It is a small reader for tests
// (weights/safetensors is the real one, which testenv must not import); it returns the
// header's size in bytes (8 + JSON length) too.
func ReadSafetensorsHeader(path string) (tensors map[string]HeaderTensor, meta map[string]string, size int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, 0, err
	}
	defer f.Close()
	var n uint64
	if err := binary.Read(f, binary.LittleEndian, &n); err != nil {
		return nil, nil, 0, fmt.Errorf("%s: header length: %w", path, err)
	}
	if n > maxHeader {
		return nil, nil, 0, fmt.Errorf("%s: header of %d bytes", path, n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(f, buf); err != nil {
		return nil, nil, 0, fmt.Errorf("%s: header: %w", path, err)
	}
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(buf, &hdr); err != nil {
		return nil, nil, 0, fmt.Errorf("%s: header: %w", path, err)
	}
	tensors = map[string]HeaderTensor{}
	for name, raw := range hdr {
		if name == "__metadata__" {
			if err := json.Unmarshal(raw, &meta); err != nil {
				return nil, nil, 0, fmt.Errorf("%s: __metadata__: %w", path, err)
			}
			continue
		}
		var ti HeaderTensor
		if err := json.Unmarshal(raw, &ti); err != nil {
			return nil, nil, 0, fmt.Errorf("%s: tensor %q: %w", path, name, err)
		}
		tensors[name] = ti
	}
	return tensors, meta, int64(8 + n), nil
}

// RawTensor is one tensor of a safetensors file as stored: dtype, shape and the
// little-endian bytes.
type RawTensor struct {
	DType string
	Shape []int
	Data  []byte
}

// Float32 returns the values of an F32 tensor.
func (r RawTensor) Float32() ([]float32, error) {
	if r.DType != "F32" {
		return nil, fmt.Errorf("testenv: tensor of dtype %s, want F32", r.DType)
	}
	out := make([]float32, len(r.Data)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(r.Data[4*i:]))
	}
	return out, nil
}

// ReadSafetensors reads a whole (small) .safetensors file: every tensor's dtype, shape
// and bytes, and the __metadata__ strings. It is for the tests of packages that must
// not import weights/ (gpu/ and below); the offsets are checked against the file.
func ReadSafetensors(path string) (map[string]RawTensor, map[string]string, error) {
	hdr, meta, size, err := ReadSafetensorsHeader(path)
	if err != nil {
		return nil, nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	data := b[size:]
	out := make(map[string]RawTensor, len(hdr))
	for name, ti := range hdr {
		if ti.Offsets[0] < 0 || ti.Offsets[1] < ti.Offsets[0] || ti.Offsets[1] > int64(len(data)) {
			return nil, nil, fmt.Errorf("%s: tensor %q: bad offsets %v", path, name, ti.Offsets)
		}
		out[name] = RawTensor{DType: ti.DType, Shape: ti.Shape, Data: data[ti.Offsets[0]:ti.Offsets[1]]}
	}
	return out, meta, nil
}

// Weights returns the names of the case file's weight tensors (those that are neither
// in. nor out. tensors), sorted.
func (c *Case) Weights() ([]string, error) {
	tensors, _, _, err := ReadSafetensorsHeader(c.Path())
	if err != nil {
		return nil, err
	}
	var out []string
	for name := range tensors {
		if !strings.HasPrefix(name, "in.") && !strings.HasPrefix(name, "out.") {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out, nil
}

// WeightPrefix returns the prefix of the case file's weight keys that end in suffix:
// how a test finds where a model sits in a checkpoint-layout file (the part of the key
// before "embeddings.token_embedding.weight", say) when the manifest does not say it.
// Exactly one key must end in suffix.
func (c *Case) WeightPrefix(suffix string) (string, error) {
	names, err := c.Weights()
	if err != nil {
		return "", err
	}
	var found []string
	for _, n := range names {
		if strings.HasSuffix(n, suffix) {
			found = append(found, strings.TrimSuffix(n, suffix))
		}
	}
	if len(found) != 1 {
		return "", fmt.Errorf("testenv: %s: %d weight keys end in %q (%v), want one", c.Path(), len(found), suffix, found)
	}
	return found[0], nil
}

// GoldenVocabDir returns a folder holding the golden tokenizer family's CLIP vocabulary
// as clip.LoadBPE wants it (vocab.json and merges.txt). The family folder's data files
// are found by content, not by name: the one JSON object of more than 256 integer ids is
// the vocabulary, the one text file that starts with "#version" the merges. Where they
// carry other names, the returned folder is a temporary one linking to them.
func GoldenVocabDir(t testing.TB) string {
	t.Helper()
	dir, cases := GoldenCases[Case](t, "tokenizer")
	caseFiles := map[string]bool{"manifest.json": true}
	for _, c := range cases {
		caseFiles[c.File] = true
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	var vocab, merges []string
	for _, e := range ents {
		if e.IsDir() || caseFiles[e.Name()] || strings.EqualFold(filepath.Ext(e.Name()), ".md") {
			continue
		}
		switch kind, err := vocabKind(filepath.Join(dir, e.Name())); {
		case err != nil:
			t.Fatalf("testenv: tokenizer: %v", err)
		case kind == "vocab":
			vocab = append(vocab, e.Name())
		case kind == "merges":
			merges = append(merges, e.Name())
		}
	}
	if len(vocab) != 1 || len(merges) != 1 {
		t.Fatalf("testenv: tokenizer folder %s holds %d vocabularies %v and %d merge lists %v, want one of each", dir, len(vocab), vocab, len(merges), merges)
	}
	if vocab[0] == "vocab.json" && merges[0] == "merges.txt" {
		return dir
	}
	out := t.TempDir()
	for src, dst := range map[string]string{vocab[0]: "vocab.json", merges[0]: "merges.txt"} {
		if err := os.Symlink(filepath.Join(dir, src), filepath.Join(out, dst)); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	return out
}

// vocabKind tells a CLIP vocabulary ("vocab") and merge list ("merges") from other
// files ("").
func vocabKind(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, 16)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", err
	}
	if strings.HasPrefix(string(head[:n]), "#version") {
		return "merges", nil
	}
	if !strings.HasPrefix(strings.TrimSpace(string(head[:n])), "{") {
		return "", nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var ids map[string]int
	if json.Unmarshal(data, &ids) == nil && len(ids) > 256 {
		return "vocab", nil
	}
	return "", nil
}

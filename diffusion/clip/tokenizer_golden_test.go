package clip

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

type tokCase struct {
	testenv.Case
	Prompt string `json:"prompt"`
	Config struct {
		MaxLength     int    `json:"max_length"`
		MaxWordLength int    `json:"max_word_length"`
		Start         int    `json:"start_token"`
		End           int    `json:"end_token"`
		Pad           int    `json:"pad_token"`
		EmbeddingDir  string `json:"embedding_directory"`
	} `json:"config"`
}

// goldenTokenizer returns the golden tokenizer family's vocabulary folder, the BPE read
// from it and the family's cases.
func goldenTokenizer(t *testing.T) (string, *BPE, []tokCase) {
	t.Helper()
	dir := testenv.GoldenVocabDir(t)
	_, cases := testenv.GoldenCases[tokCase](t, "tokenizer")
	bpe, err := LoadBPE(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, bpe, cases
}

// embeddingFileRE reads the file an embedding_directory description adds to the empty
// folder: "empty dir (+ present_emb.safetensors)" (family README).
var embeddingFileRE = regexp.MustCompile(`\(\+ ([^)/\\]+)\)`)

// TestGoldenTokenizer runs every case of golden/tokenizer: the plain BPE ids and
// ComfyUI's weighted, chunked windows (ids, weights, word ids, embedding vectors), all
// exact, with the case's window length, word-split length and special tokens.
func TestGoldenTokenizer(t *testing.T) {
	_, bpe, cases := goldenTokenizer(t)
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			for _, field := range []string{"prompt", "config.max_length", "config.max_word_length", "config.start_token", "config.end_token", "config.pad_token"} {
				if !c.Has(field) {
					t.Fatal(c.FieldError(field, "missing"))
				}
			}
			if c.Config.Start != bpe.bos || c.Config.End != bpe.eos {
				t.Fatal(c.FieldError("config", "start/end tokens %d/%d, the vocabulary's are %d/%d", c.Config.Start, c.Config.End, bpe.bos, bpe.eos))
			}
			f, err := tensorfile.Open(c.Path())
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			embDir := t.TempDir()
			size := 0
			if spec, ok := c.IO["in.embedding"]; ok {
				m := embeddingFileRE.FindStringSubmatch(c.Config.EmbeddingDir)
				if m == nil || len(spec.Shape) != 2 {
					t.Fatal(c.FieldError("config.embedding_directory", "%q names no embedding file for in.embedding %v", c.Config.EmbeddingDir, spec.Shape))
				}
				size = spec.Shape[1]
				writeEmbedding(t, f, filepath.Join(embDir, m[1]))
			}
			raw := readInts(t, f, "out.raw_ids")
			got := bpe.Encode(c.Prompt)
			if !equalInts(got, raw) {
				t.Errorf("raw ids\n got %v\nwant %v", got, raw)
			}
			tok := NewSD1Tokenizer(bpe, DirEmbeddings([]string{embDir}, size, "clip_l"))
			tok.MaxLength, tok.MaxWordLength, tok.PadToken = c.Config.MaxLength, c.Config.MaxWordLength, c.Config.Pad
			windows, err := tok.TokenizeWithWeights(c.Prompt)
			if err != nil {
				t.Fatal(err)
			}
			n := c.Config.MaxLength
			ids := readInts(t, f, "out.ids")
			wids := readInts(t, f, "out.word_ids")
			ws := readF64(t, f, "out.weights")
			if len(windows)*n != len(ids) {
				t.Fatalf("%d windows, want %d", len(windows), len(ids)/n)
			}
			var vectors [][]float32
			for wi, w := range windows {
				if len(w) != n {
					t.Fatalf("window %d holds %d tokens, want %d", wi, len(w), n)
				}
				for i, tk := range w {
					k := wi*n + i
					id := tk.ID
					if tk.Embed != nil {
						id = -1
						vectors = append(vectors, tk.Embed)
					}
					if id != ids[k] || tk.WordID != wids[k] || tk.Weight != ws[k] {
						t.Errorf("window %d slot %d: (id %d, word %d, weight %v), want (%d, %d, %v)", wi, i, id, tk.WordID, tk.Weight, ids[k], wids[k], ws[k])
					}
				}
			}
			if _, ok := c.IO["out.embed_vectors"]; ok {
				want := readF32(t, f, "out.embed_vectors")
				var flat []float32
				for _, v := range vectors {
					flat = append(flat, v...)
				}
				if len(flat) != len(want) {
					t.Fatalf("%d embedding values, want %d", len(flat), len(want))
				}
				for i := range want {
					if flat[i] != want[i] {
						t.Fatalf("embedding value %d = %v, want %v", i, flat[i], want[i])
					}
				}
			} else if len(vectors) > 0 {
				t.Errorf("%d embedding slots, want none", len(vectors))
			}
		})
	}
}

func writeEmbedding(t *testing.T, f *tensorfile.File, path string) {
	t.Helper()
	tn, err := f.Tensor("in.embedding")
	if err != nil {
		t.Fatal(err)
	}
	vals, err := tn.Float32()
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
	}
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := safetensors.Write(out, []safetensors.Entry{{Name: "emb_params", DType: weights.F32, Shape: tn.Shape, Data: data}}, nil); err != nil {
		t.Fatal(err)
	}
}

func readRaw(t *testing.T, f *tensorfile.File, name string) tensorfile.Tensor {
	t.Helper()
	tn, err := f.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	return tn
}

func readInts(t *testing.T, f *tensorfile.File, name string) []int {
	tn := readRaw(t, f, name)
	if tn.DType != weights.I64 {
		t.Fatalf("%s: dtype %s, want I64", name, tn.DType)
	}
	out := make([]int, len(tn.Data)/8)
	for i := range out {
		out[i] = int(int64(binary.LittleEndian.Uint64(tn.Data[8*i:])))
	}
	return out
}

func readF64(t *testing.T, f *tensorfile.File, name string) []float64 {
	tn := readRaw(t, f, name)
	if tn.DType != weights.F64 {
		t.Fatalf("%s: dtype %s, want F64", name, tn.DType)
	}
	out := make([]float64, len(tn.Data)/8)
	for i := range out {
		out[i] = math.Float64frombits(binary.LittleEndian.Uint64(tn.Data[8*i:]))
	}
	return out
}

func readF32(t *testing.T, f *tensorfile.File, name string) []float32 {
	v, err := readRaw(t, f, name).Float32()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

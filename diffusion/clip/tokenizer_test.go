package clip

import (
	"compress/gzip"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseWeights(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []Segment
	}{
		{"plain text", []Segment{{"plain text", 1}}},
		{"(a)", []Segment{{"a", 1.1}}},
		{"((a))", []Segment{{"a", 1.1 * 1.1}}},
		{"(a:1.5) b", []Segment{{"a", 1.5}, {" b", 1}}},
		{"(a (b:2) c:0.5)", []Segment{{"a ", 0.5}, {"b", 2}, {" c", 0.5}}},
		{"(d:)", []Segment{{"d:", 1.1}}},
		{"(e:abc)", []Segment{{"e:abc", 1.1}}},
		{"[x]", []Segment{{"[x]", 1}}},
		{"a) (b", []Segment{{"a) (b", 1}}},
		{"(unclosed", []Segment{{"(unclosed", 1}}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got := ParseWeights(tc.in, 1)
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i].Text != tc.want[i].Text || math.Abs(got[i].Weight-tc.want[i].Weight) > 1e-12 {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestPythonFloat(t *testing.T) {
	for _, tc := range []struct {
		in string
		v  float64
		ok bool
	}{
		{"1.5", 1.5, true}, {" 2 ", 2, true}, {"1_000", 1000, true}, {"1e-1", 0.1, true},
		{".5", 0.5, true}, {"-inf", math.Inf(-1), true}, {"", 0, false}, {"abc", 0, false},
		{"1__0", 0, false}, {"_1", 0, false}, {"0x10", 0, false},
	} {
		v, ok := pythonFloat(tc.in)
		if ok != tc.ok || (ok && v != tc.v) {
			t.Errorf("pythonFloat(%q) = %v, %v; want %v, %v", tc.in, v, ok, tc.v, tc.ok)
		}
	}
}

func TestLoadBPEMissingSaysWhatToPutWhere(t *testing.T) {
	_, err := LoadBPE(t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "vocab.json") || !strings.Contains(err.Error(), "bpe_simple_vocab_16e6.txt.gz") {
		t.Fatalf("error %v does not name the vocabulary files", err)
	}
}

// OpenAI's bpe_simple_vocab_16e6.txt.gz builds its vocabulary from the merges alone; a
// file made from the golden merges.txt must tokenize exactly like vocab.json+merges.txt.
func TestOpenAIVocabularyMatchesHF(t *testing.T) {
	dir, hf, cases := goldenTokenizer(t)
	merges, err := os.ReadFile(filepath.Join(dir, "merges.txt"))
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	f, err := os.Create(filepath.Join(tmp, "bpe_simple_vocab_16e6.txt.gz"))
	if err != nil {
		t.Fatal(err)
	}
	gz := gzip.NewWriter(f)
	if _, err := gz.Write(merges); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	oa, err := LoadBPE(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		if a, b := hf.Encode(c.Prompt), oa.Encode(c.Prompt); !equalInts(a, b) {
			t.Errorf("%s: OpenAI vocabulary gives %v, HF %v", c.Name, b, a)
		}
	}
}

package loratest

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
)

// Expected is the fixture: ComfyUI's patched weights and key maps, digested.
type Expected struct {
	Comment string                  `json:"comment"`
	Cases   map[string]ExpectedCase `json:"cases"`
}

// ExpectedCase is one case's digest.
type ExpectedCase struct {
	KeyMap  KeyMapDigest           `json:"key_map"`
	Weights map[string]WeightStats `json:"weights"`
}

// KeyMapDigest is the size of ComfyUI's key map and the sha256 of its entries, one
// "module\ttarget key\tstart\tlength\n" line each, sorted.
type KeyMapDigest struct {
	Entries int    `json:"entries"`
	SHA256  string `json:"sha256"`
}

// WeightStats digests one patched weight.
type WeightStats struct {
	Numel   int          `json:"numel"`
	Sum     float64      `json:"sum"`
	SumSq   float64      `json:"sum_sq"`
	Samples [][2]float64 `json:"samples"` // [index, value]
}

// DigestLines is the sha256 of the sorted lines, concatenated.
func DigestLines(lines []string) string {
	sort.Strings(lines)
	h := sha256.New()
	for _, l := range lines {
		h.Write([]byte(l))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Stats digests values: count, sum, sum of squares, and 16 values spread evenly.
func Stats(v []float32) WeightStats {
	s := WeightStats{Numel: len(v)}
	for _, x := range v {
		s.Sum += float64(x)
		s.SumSq += float64(x) * float64(x)
	}
	n := min(16, len(v))
	for i := 0; i < n; i++ {
		j := i * len(v) / n
		s.Samples = append(s.Samples, [2]float64{float64(j), float64(v[j])})
	}
	return s
}

package sd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/clip"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// writeSD3Parts makes the text encoder files tools/refpeer/sd3_clip_ref.py loads into
// ComfyUI to write testdata/sd3_clip_refpeer.safetensors.
var writeSD3Parts = flag.String("sd.parts", "", "write the tiny SD3 text encoder files to this folder")

// sd3PartFile is one text encoder file of the tiny SD3 (float16, seed 21) with CLIP's
// full 49408-token vocabulary, which ComfyUI's CLIP hard-codes.
func sd3PartFile(t testing.TB, part string) []byte {
	t.Helper()
	spec := TinySD3RandomSpec(false)
	spec.DType, spec.Seed = weights.F16, 21
	spec.CLIPL.Vocab, spec.CLIPG.Vocab = 49408, 49408
	var buf bytes.Buffer
	if err := WriteRandomSD3Part(&buf, spec, part); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestWriteSD3Parts(t *testing.T) {
	if *writeSD3Parts == "" {
		t.Skip("set -sd.parts DIR to write the tiny SD3 text encoder files")
	}
	for _, p := range []string{SD3PartCLIPL, SD3PartCLIPG, SD3PartT5} {
		if err := os.WriteFile(filepath.Join(*writeSD3Parts, "sd3_"+p+".safetensors"), sd3PartFile(t, p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// refProbes is the number of ±1 projections the fixture keeps of each token.
const refProbes = 16

// project returns row's refProbes projections, as sd3_clip_ref.py's probes make them:
// element j of probe k is +1 when bit 16 of (j·refProbes+k+1)·2654435761 mod 2³² is
// set, −1 otherwise; sums in float64.
func project(row []float32) []float64 {
	out := make([]float64, refProbes)
	for j, v := range row {
		for k := range out {
			x := uint32(j*refProbes+k+1) * 2654435761
			if x>>16&1 == 1 {
				out[k] += float64(v)
			} else {
				out[k] -= float64(v)
			}
		}
	}
	return out
}

// TestSD3TextEncodersRefpeer compares the SD3 and Flux text encoders with ComfyUI
// 0.3.64's own (SD3ClipModel with each combination of CLIP-L, CLIP-G and T5; Flux's
// CLIP-L + T5), loaded from the same files, on the fixture's token lists: prompt
// weights, two windows, empty token lists (ComfyUI's empty-sequence encodes, the
// zero conditioning), a lone CLIP-G's left padding, zero pooled halves.
func TestSD3TextEncodersRefpeer(t *testing.T) {
	f, err := tensorfile.Open(filepath.Join("testdata", "sd3_clip_refpeer.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []struct {
		Name     string                    `json:"name"`
		Kind     string                    `json:"kind"`
		Encoders []string                  `json:"encoders"`
		Tokens   map[string][][][2]float64 `json:"tokens"`
	}
	if err := json.Unmarshal([]byte(f.Metadata()["cases"]), &cases); err != nil {
		t.Fatal(err)
	}
	var sums map[string]string
	if err := json.Unmarshal([]byte(f.Metadata()["sha256"]), &sums); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, p := range []string{SD3PartCLIPL, SD3PartCLIPG, SD3PartT5} {
		data := sd3PartFile(t, p)
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != sums[p] {
			t.Fatalf("%s: sha256 %s, the fixture was made from %s", p, got, sums[p])
		}
		if err := os.WriteFile(filepath.Join(dir, p+".safetensors"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rt := ckRuntime(t)
	if len(cases) == 0 {
		t.Fatal("the fixture lists no cases")
	}
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			var paths []string
			for _, e := range tc.Encoders {
				paths = append(paths, filepath.Join(dir, e+".safetensors"))
			}
			ck, err := LoadTextEncoders(rt, paths, tc.Kind, LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			toks := Tokens{}
			for k, wins := range tc.Tokens {
				out := make([][]clip.Token, len(wins))
				for i, w := range wins {
					for _, p := range w {
						out[i] = append(out[i], clip.Token{ID: int(p[0]), Weight: p[1]})
					}
				}
				toks[k] = out
			}
			enc, err := ck.CLIP.EncodeTokens(context.Background(), toks)
			if err != nil {
				t.Fatal(err)
			}
			defer enc.Release()
			cond, err := enc.Cond.Float32()
			if err != nil {
				t.Fatal(err)
			}
			pooled, err := enc.Pooled.Float32()
			if err != nil {
				t.Fatal(err)
			}
			n, w := enc.Cond.Dim(1), enc.Cond.Dim(2)
			head := make([]float64, 0, n*8)
			proj := make([]float64, 0, n*refProbes)
			for i := 0; i < n; i++ {
				row := cond[i*w : (i+1)*w]
				for j := 0; j < 8; j++ {
					head = append(head, float64(row[j]))
				}
				proj = append(proj, project(row)...)
			}
			pv := make([]float64, len(pooled))
			for i, v := range pooled {
				pv[i] = float64(v)
			}
			for _, part := range []struct {
				name  string
				got   []float64
				shape []int
				// scale is what an element's error is measured against: a projection
				// sums w elements of ±1.
				scale float64
			}{
				{"cond.head", head, []int{1, n, 8}, 1},
				{"cond.proj", proj, []int{1, n, refProbes}, math.Sqrt(float64(w))},
				{"pooled", pv, enc.Pooled.Shape(), 1},
			} {
				want, err := f.Tensor(tc.Name + "." + part.name)
				if err != nil {
					t.Fatal(err)
				}
				if len(want.Shape) != len(part.shape) {
					t.Fatalf("%s %v, want %v", part.name, part.shape, want.Shape)
				}
				for i := range part.shape {
					if int64(part.shape[i]) != want.Shape[i] {
						t.Fatalf("%s %v, want %v", part.name, part.shape, want.Shape)
					}
				}
				wv, _ := want.Float32()
				maxErr, maxRef := 0.0, 0.0
				for i := range part.got {
					maxErr = math.Max(maxErr, math.Abs(part.got[i]-float64(wv[i])))
					maxRef = math.Max(maxRef, math.Abs(float64(wv[i])))
				}
				if maxErr > 1e-4*part.scale*math.Max(1, maxRef/part.scale) {
					t.Errorf("%s: max |Δ| %.3g (values up to %.3g)", part.name, maxErr, maxRef)
				}
				t.Logf("%s %v: max |Δ| %.3g, values up to %.3g", part.name, part.shape, maxErr, maxRef)
			}
		})
	}
}

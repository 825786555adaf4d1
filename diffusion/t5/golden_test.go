package t5

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"math"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/clip"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// goldenCase is one case of golden/t5's manifest. Pointers mark the fields a case must
// carry: the test fails naming any that is missing rather than assuming a value.
type goldenCase struct {
	Case   string `json:"case"`
	File   string `json:"file"`
	Config struct {
		LayerNormEps  *float64 `json:"layer_norm_eps"`
		MaxDistance   *int     `json:"relative_attention_max_distance"`
		NumBuckets    *int     `json:"relative_attention_num_buckets"`
		SpecialTokens struct {
			End *int `json:"end"`
			Pad *int `json:"pad"`
		} `json:"special_tokens"`
		// ModelOptions holds "<name>_model_config" (t5xxl_model_config): the sizes passed
		// to ComfyUI.
		ModelOptions map[string]json.RawMessage `json:"model_options"`
	} `json:"config"`
	WeightPrefix *string `json:"weight_prefix"`
	IOTensors    map[string]struct {
		DType string `json:"dtype"`
		Shape []int  `json:"shape"`
	} `json:"io_tensors"`
	Tolerance *struct{ Abs, Rel float64 } `json:"tolerance"`
}

// modelConfig is ComfyUI's T5 config dict as the case overrides it.
type modelConfig struct {
	DFF        *int    `json:"d_ff"`
	DKV        *int    `json:"d_kv"`
	DModel     *int    `json:"d_model"`
	Act        *string `json:"dense_act_fn"`
	Gated      *bool   `json:"is_gated_act"`
	ModelType  *string `json:"model_type"`
	NumHeads   *int    `json:"num_heads"`
	NumLayers  *int    `json:"num_layers"`
	VocabSize  *int    `json:"vocab_size"`
	NumBuckets *int    `json:"relative_attention_num_buckets"`
}

// TestGoldenT5 runs every case of golden/t5: T5XXLModel's output with and without the
// attention mask (and the mask itself), and the raw T5.forward outputs (final, and the
// un-normed hidden state after any block the case records as out.raw_layerN), within
// each case's tolerance. Names, shapes, sizes and settings all come from the manifest.
func TestGoldenT5(t *testing.T) {
	dir, cases := testenv.GoldenCases[goldenCase](t, "t5")
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.Case, func(t *testing.T) { runGoldenCase(t, rt, dir, c) })
	}
}

func need[T any](t *testing.T, field string, v *T) T {
	t.Helper()
	if v == nil {
		t.Fatalf("manifest: case lacks %s", field)
	}
	return *v
}

func runGoldenCase(t *testing.T, rt *gpu.Runtime, dir string, c goldenCase) {
	tol := need(t, "tolerance", c.Tolerance)
	prefix := need(t, "weight_prefix", c.WeightPrefix)
	if c.File == "" {
		t.Fatal("manifest: case lacks file")
	}
	f, err := tensorfile.Open(filepath.Join(dir, c.File))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, rep, err := Load(rt, statedict.NewFileSource(rt, f), prefix)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Release()
	for _, k := range rep.Unused {
		if !strings.HasPrefix(k, "in.") && !strings.HasPrefix(k, "out.") {
			t.Errorf("weight %s not used", k)
		}
	}
	m.Eps = need(t, "config.layer_norm_eps", c.Config.LayerNormEps)
	m.MaxDistance = need(t, "config.relative_attention_max_distance", c.Config.MaxDistance)
	checkConfig(t, m, c)

	tokens := readInts(t, f, "in.tokens", c.IOTensors["in.tokens"].Shape)
	if len(tokens) != 1 {
		t.Fatalf("manifest: in.tokens has %d rows; T5XXLModel encodes one sequence", len(tokens))
	}
	enc := NewEncoder(m)
	enc.End = need(t, "config.special_tokens.end", c.Config.SpecialTokens.End)
	enc.Pad = need(t, "config.special_tokens.pad", c.Config.SpecialTokens.Pad)
	toks := make([]clip.Token, len(tokens[0]))
	for i, id := range tokens[0] {
		toks[i] = clip.Token{ID: id, Weight: 1}
	}
	ctx := context.Background()

	var outs []string
	for name := range c.IOTensors {
		if strings.HasPrefix(name, "out.") {
			outs = append(outs, name)
		}
	}
	sort.Strings(outs)
	if len(outs) == 0 {
		t.Fatal("manifest: case lists no out.* tensors")
	}
	for _, name := range outs {
		want := c.IOTensors[name]
		var got *gpu.Tensor
		switch {
		case name == "out.last" || name == "out.last_masked":
			enc.AttentionMask = name == "out.last_masked"
			e, err := enc.Encode(ctx, toks)
			if err != nil {
				t.Fatal(err)
			}
			got = e.Cond
		case name == "out.attention_mask":
			enc.AttentionMask = true
			e, err := enc.Encode(ctx, toks)
			if err != nil {
				t.Fatal(err)
			}
			e.Release()
			wantMask := readInts(t, f, name, want.Shape)
			if len(wantMask) != 1 || !slices.Equal(e.Mask, wantMask[0]) {
				t.Errorf("%s = %v, want %v", name, e.Mask, wantMask)
			}
			continue
		case name == "out.raw_last" || strings.HasPrefix(name, "out.raw_layer"):
			inter := NoIntermediate
			if s, ok := strings.CutPrefix(name, "out.raw_layer"); ok {
				if inter, err = strconv.Atoi(s); err != nil {
					t.Fatalf("manifest: output %s: block index %q is not a number", name, s)
				}
			}
			x, err := m.Embed(tokens)
			if err != nil {
				t.Fatal(err)
			}
			o, err := m.Forward(ctx, x, Params{Intermediate: inter})
			x.Release()
			if err != nil {
				t.Fatal(err)
			}
			got = o.Last
			if inter != NoIntermediate {
				got = o.Intermediate
				o.Last.Release()
			}
		default:
			t.Fatalf("manifest: output %s is not one this test knows (out.last, out.last_masked, out.attention_mask, out.raw_last, out.raw_layerN)", name)
		}
		compare(t, name, got, readF32(t, f, name), want.Shape, tol.Abs, tol.Rel)
		got.Release()
	}
}

// checkConfig compares the hyper-parameters read off the shapes with the sizes the case
// passed to ComfyUI, and refuses settings forgeflow does not implement.
func checkConfig(t *testing.T, m *Model, c goldenCase) {
	t.Helper()
	var key string
	for k := range c.Config.ModelOptions {
		if strings.HasSuffix(k, "_model_config") {
			if key != "" {
				t.Fatalf("manifest: config.model_options has both %s and %s", key, k)
			}
			key = k
		}
	}
	if key == "" {
		t.Fatal("manifest: config.model_options has no <name>_model_config")
	}
	var mc modelConfig
	if err := json.Unmarshal(c.Config.ModelOptions[key], &mc); err != nil {
		t.Fatalf("manifest: config.model_options.%s: %v", key, err)
	}
	field := func(name string) string { return "config.model_options." + key + "." + name }
	if act := need(t, field("dense_act_fn"), mc.Act); act != "gelu_pytorch_tanh" {
		t.Fatalf("manifest: %s = %q; only gelu_pytorch_tanh (T5 v1.1) is implemented", field("dense_act_fn"), act)
	}
	if !need(t, field("is_gated_act"), mc.Gated) {
		t.Fatalf("manifest: %s = false; only the gated feed-forward is implemented", field("is_gated_act"))
	}
	sizes := []struct {
		name      string
		want      *int
		got       int
		mandatory bool
	}{
		{"d_model", mc.DModel, m.DModel, true},
		{"d_ff", mc.DFF, m.DFF, true},
		{"d_kv", mc.DKV, m.DKV, true},
		{"num_heads", mc.NumHeads, m.Heads, true},
		{"num_layers", mc.NumLayers, m.Layers, true},
		{"vocab_size", mc.VocabSize, m.Vocab, true},
		{"relative_attention_num_buckets", mc.NumBuckets, m.NumBuckets, false},
	}
	for _, s := range sizes {
		if s.want == nil {
			if s.mandatory {
				t.Fatalf("manifest: case lacks %s", field(s.name))
			}
			continue
		}
		if *s.want != s.got {
			t.Errorf("%s: shapes say %d, manifest %d", s.name, s.got, *s.want)
		}
	}
	if nb := need(t, "config.relative_attention_num_buckets", c.Config.NumBuckets); nb != m.NumBuckets {
		t.Errorf("relative attention buckets: shapes say %d, manifest %d", m.NumBuckets, nb)
	}
	// T5 keeps one bias table in block 0; UMT5 has one per block.
	perBlock := need(t, field("model_type"), mc.ModelType) == "umt5"
	for i, b := range m.Blocks {
		if has := b.Attn.RelativeBias != nil; has != (i == 0 || perBlock) {
			t.Errorf("block %d: relative_attention_bias present = %v for model_type %s", i, has, *mc.ModelType)
		}
	}
}

func compare(t *testing.T, name string, got *gpu.Tensor, want []float32, shape []int, abs, rel float64) {
	t.Helper()
	if !slices.Equal(got.Shape(), shape) {
		t.Errorf("%s: shape %v, manifest %v", name, got.Shape(), shape)
		return
	}
	g, err := got.Float32()
	if err != nil {
		t.Fatal(err)
	}
	if len(g) != len(want) {
		t.Fatalf("%s: %d values, file has %d", name, len(g), len(want))
	}
	worst, at := 0.0, -1
	for i := range want {
		d := math.Abs(float64(g[i]) - float64(want[i]))
		lim := abs + rel*math.Abs(float64(want[i]))
		if !(d <= lim) {
			t.Errorf("%s[%d] = %v, want %v (|Δ| %.3g > %.3g)", name, i, g[i], want[i], d, lim)
			return
		}
		if d > worst {
			worst, at = d, i
		}
	}
	t.Logf("%s: max |Δ| %.3g at %d", name, worst, at)
}

func readF32(t *testing.T, f *tensorfile.File, name string) []float32 {
	t.Helper()
	tn, err := f.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	v, err := tn.Float32()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// readInts reads an I64 tensor of the manifest's shape (…, T) as rows of T.
func readInts(t *testing.T, f *tensorfile.File, name string, shape []int) [][]int {
	t.Helper()
	tn, err := f.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	if tn.DType != weights.I64 {
		t.Fatalf("%s: dtype %s, want I64", name, tn.DType)
	}
	if len(shape) == 0 {
		t.Fatalf("manifest: io_tensors[%s] has no shape", name)
	}
	width := shape[len(shape)-1]
	n := len(tn.Data) / 8
	if width == 0 || n%width != 0 {
		t.Fatalf("%s: %d values do not make rows of %d", name, n, width)
	}
	var rows [][]int
	for r := 0; r < n/width; r++ {
		row := make([]int, width)
		for i := range row {
			row[i] = int(int64(binary.LittleEndian.Uint64(tn.Data[8*(r*width+i):])))
		}
		rows = append(rows, row)
	}
	return rows
}

package builtin

import (
	"encoding/json"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/rng"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/nodes"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

func TestImageAddNoise(t *testing.T) {
	src := filled(1, 4, 5, 3, 0.5) // 60 values: torch's 16-wide block path with a tail
	noise := make([]float32, 60)
	rng.New(42).Randn(noise)
	want := make([]float32, 60)
	for i, n := range noise {
		want[i] = clamp01(0.5 + 0.25*n)
	}
	got := mustRun(t, "ImageAddNoise", nodes.Inputs{"image": src, "seed": int64(42), "strength": 0.25}).Outputs[0].(*Image)
	checkPix(t, got.Pix, want, 0)
	t.Run("same seed, same noise", func(t *testing.T) {
		again := mustRun(t, "ImageAddNoise", nodes.Inputs{"image": src, "seed": int64(42), "strength": 0.25}).Outputs[0].(*Image)
		checkPix(t, again.Pix, got.Pix, 0)
	})
	t.Run("other seed differs", func(t *testing.T) {
		other := mustRun(t, "ImageAddNoise", nodes.Inputs{"image": src, "seed": int64(43), "strength": 0.25}).Outputs[0].(*Image)
		same := 0
		for i := range other.Pix {
			if other.Pix[i] == got.Pix[i] {
				same++
			}
		}
		if same > 6 {
			t.Fatalf("%d of 60 values equal across seeds", same)
		}
	})
	t.Run("zero strength is the image", func(t *testing.T) {
		im := mustRun(t, "ImageAddNoise", nodes.Inputs{"image": src, "seed": int64(1), "strength": 0.0}).Outputs[0].(*Image)
		checkPix(t, im.Pix, src.Pix, 0)
	})
	t.Run("clipped to [0, 1]", func(t *testing.T) {
		im := mustRun(t, "ImageAddNoise", nodes.Inputs{"image": filled(1, 8, 8, 3, 0.99), "seed": int64(7), "strength": 1.0}).Outputs[0].(*Image)
		for i, v := range im.Pix {
			if v < 0 || v > 1 {
				t.Fatalf("value %d = %v", i, v)
			}
		}
	})
}

// TestSeedInputs: every form a seed reaches a node in decodes to the same uint64, up to
// 2^64-1; anything else is refused.
func TestSeedInputs(t *testing.T) {
	tests := []struct {
		v    any
		want uint64
		ok   bool
	}{
		{int64(5), 5, true}, {int64(-1), 0, false}, {float64(1 << 63), 1 << 63, true}, {1.5, 0, false},
		{math.Inf(1), 0, false}, {json.Number("18446744073709551615"), math.MaxUint64, true},
		{uint64(math.MaxUint64), math.MaxUint64, true}, {"x", 0, false}, {nil, 0, false},
	}
	src := filled(1, 2, 2, 3, 0.5)
	for _, tc := range tests {
		in := nodes.Inputs{"image": src, "seed": tc.v, "strength": 0.25}
		if tc.v == nil {
			delete(in, "seed")
		}
		res, err := run(t, Options{}, nil, "ImageAddNoise", in)
		if (err == nil) != tc.ok {
			t.Errorf("seed %#v: err = %v, want ok %v", tc.v, err, tc.ok)
			continue
		}
		if !tc.ok {
			continue
		}
		want := make([]float32, len(src.Pix))
		rng.New(tc.want).Randn(want)
		for i, n := range want {
			want[i] = clamp01(0.5 + 0.25*n)
		}
		checkPix(t, res.Outputs[0].(*Image).Pix, want, 0)
	}
}

// TestSeedsPast2p63 runs seed nodes with seeds from 2^63 to 2^64-1 the way a prompt
// brings them: a JSON number, coerced by the node's schema (graph.Coerce, as the
// executor does), decoded into the node's uint64. These failed at run time when
// coercion wrapped them into negative int64s.
func TestSeedsPast2p63(t *testing.T) {
	r := newTestRegistry(t, Options{Runtime: testRuntime(t)})
	for _, text := range []string{"9223372036854775808", "18446744073709551615"} {
		want, err := strconv.ParseUint(text, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct{ class, input string }{
			{"RandomNoise", "noise_seed"}, {"ImageAddNoise", "seed"}, {"KSampler", "seed"},
			{"KSamplerAdvanced", "noise_seed"}, {"SamplerCustom", "noise_seed"},
		} {
			n, _ := r.Lookup(tc.class)
			spec, _ := n.Schema().Input(tc.input)
			v, err := graph.Coerce(spec, json.Number(text))
			if err != nil {
				t.Fatalf("%s.%s: Coerce(%s) = %v", tc.class, tc.input, text, err)
			}
			if v != want {
				t.Fatalf("%s.%s: Coerce(%s) = %#v, want uint64 %d", tc.class, tc.input, text, v, want)
			}
		}
		spec, _ := mustSchema(t, r, "RandomNoise").Input("noise_seed")
		v, _ := graph.Coerce(spec, json.Number(text))
		res := mustRunIn(t, r, "RandomNoise", nodes.Inputs{"noise_seed": v})
		if got := res.Outputs[0].(sd.Noise); got.Seed != want || got.Disabled {
			t.Errorf("RandomNoise(%s) = %+v", text, got)
		}
		im := mustRunIn(t, r, "ImageAddNoise", nodes.Inputs{"image": filled(1, 4, 4, 3, 0.5), "seed": v, "strength": 0.25})
		noise := make([]float32, 48)
		rng.New(want).Randn(noise)
		for i, n := range noise {
			noise[i] = clamp01(0.5 + 0.25*n)
		}
		checkPix(t, im.Outputs[0].(*Image).Pix, noise, 0)
	}
}

// TestRandomNoiseGolden: RandomNoise's NOISE, fed its seed as a prompt would (the
// manifest's seed number through graph.Coerce), draws ComfyUI's prepare_noise for every
// case of the rng family that has one (../shared/golden/rng; the public set includes
// seed 2^64-1, which torch takes modulo 2^64 as a uint64).
func TestRandomNoiseGolden(t *testing.T) {
	type noiseCase struct {
		Case      string      `json:"case"`
		File      string      `json:"file"`
		Function  string      `json:"function"`
		Seed      json.Number `json:"seed"`
		Shape     []int       `json:"shape"`
		NoiseInds []int       `json:"noise_inds"`
		Tolerance struct {
			Abs, Rel float64
		} `json:"tolerance"`
	}
	dir, cases := testenv.GoldenCases[noiseCase](t, "rng")
	r := newTestRegistry(t, Options{Runtime: testRuntime(t)})
	spec, _ := mustSchema(t, r, "RandomNoise").Input("noise_seed")
	ran := 0
	for _, c := range cases {
		if !strings.HasPrefix(c.Function, "comfy.sample.prepare_noise") || len(c.NoiseInds) > 0 {
			continue
		}
		t.Run(c.Case, func(t *testing.T) {
			if c.Seed == "" || len(c.Shape) == 0 {
				t.Fatalf("manifest case %s: a prepare_noise case needs \"seed\" and \"shape\"", c.Case)
			}
			seed, err := graph.Coerce(spec, c.Seed)
			if err != nil {
				t.Fatalf("manifest \"seed\" %s: %v", c.Seed, err)
			}
			noise := mustRunIn(t, r, "RandomNoise", nodes.Inputs{"noise_seed": seed}).Outputs[0].(sd.Noise)
			got, err := noise.Generate(c.Shape, nil)
			if err != nil {
				t.Fatal(err)
			}
			f, err := safetensors.Open(filepath.Join(dir, c.File))
			if err != nil {
				t.Fatalf("manifest \"file\": %v", err)
			}
			defer f.Close()
			tn, err := f.Tensor("out.noise")
			if err != nil {
				t.Fatal(err)
			}
			want, err := tn.Float32()
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("%d values, want %d", len(got), len(want))
			}
			// The case's tolerance plus the family's allowance for float32 log/cos/sin (the
			// README's ~2e-6; diffusion/rng's golden test says why).
			for i := range got {
				if d := math.Abs(float64(got[i] - want[i])); d > c.Tolerance.Abs+c.Tolerance.Rel*math.Abs(float64(want[i]))+2e-6 {
					t.Fatalf("value %d = %v, want %v", i, got[i], want[i])
				}
			}
		})
		ran++
	}
	if ran == 0 {
		t.Fatal("the rng manifest has no comfy.sample.prepare_noise case without noise_inds")
	}
}

func mustSchema(t *testing.T, r *nodes.Registry, class string) *graph.Schema {
	t.Helper()
	s, ok := r.Schema(class)
	if !ok {
		t.Fatalf("no class %s", class)
	}
	return s
}

// mustRunIn runs class of registry r and fails the test on error.
func mustRunIn(t *testing.T, r *nodes.Registry, class string, in nodes.Inputs) nodes.Result {
	t.Helper()
	n, err := r.Lookup(class)
	if err != nil {
		t.Fatal(err)
	}
	res, err := n.Run(t.Context(), &nodes.Env{}, in)
	if err != nil {
		t.Fatalf("%s: %v", class, err)
	}
	return res
}

package rng

import (
	"encoding/json"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

type goldenCase struct {
	Case      string                     `json:"case"`
	File      string                     `json:"file"`
	Seed      json.Number                `json:"seed"`
	Shape     []int                      `json:"shape"`
	Sizes     []int                      `json:"sizes"`
	N         int                        `json:"n"`
	NoiseInds []int                      `json:"noise_inds"`
	Tolerance struct{ Abs, Rel float64 } `json:"tolerance"`
}

// TestGoldenNoSIMD checks every case of golden/rng_nosimd, produced by torch's portable
// kernel. The engine, the uniforms and the double path are bit-exact; in the float32
// block path glibc's sinf/cosf are not always correctly rounded while ours are, so about
// 1.5 % of values differ by one float32 ulp (the fixture README's allowance for exactly
// this; the product radius·sin can turn one ulp of sin into two of the result). The check is
// therefore: at most two ulps of the expected value.
func TestGoldenNoSIMD(t *testing.T) { runGolden(t, "rng_nosimd", twoULPs) }

// TestGoldenSIMD checks golden/rng, produced by torch's vectorised kernel (SLEEF float32
// log/cos/sin). Our kernel differs from it by at most a float32 ulp or two of the
// transcendental functions; the fixture's README allows ~2e-6 for exactly that.
func TestGoldenSIMD(t *testing.T) {
	runGolden(t, "rng", func(want float32) float64 { return 2e-6 })
}

// limitFunc gives the allowed |got − want| for an expected normal value.
type limitFunc func(want float32) float64

// twoULPs allows two float32 ulps of the expected value.
func twoULPs(want float32) float64 {
	w := float32(math.Abs(float64(want)))
	return 2 * (float64(math.Nextafter32(w, float32(math.Inf(1)))) - float64(w))
}

func runGolden(t *testing.T, family string, normals limitFunc) {
	dir, cases := testenv.GoldenCases[goldenCase](t, family)
	for _, c := range cases {
		t.Run(c.Case, func(t *testing.T) {
			f, err := safetensors.Open(filepath.Join(dir, c.File))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			seed, err := strconv.ParseUint(c.Seed.String(), 10, 64)
			if err != nil {
				t.Fatalf("seed %q: %v", c.Seed, err)
			}
			want := func(name string) []float32 {
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
			// The fixture's own {abs, rel} tolerance plus the family's allowance for the
			// float32 transcendental functions; uniforms are checked exactly.
			limit := func(want float32) float64 {
				return c.Tolerance.Abs + c.Tolerance.Rel*math.Abs(float64(want)) + normals(want)
			}
			exact := func(want float32) float64 { return c.Tolerance.Abs + c.Tolerance.Rel*math.Abs(float64(want)) }
			switch {
			case strings.HasPrefix(c.Case, "prepare_noise"):
				got, err := PrepareNoise(seed, c.Shape, c.NoiseInds)
				if err != nil {
					t.Fatal(err)
				}
				compare(t, "out.noise", got, want("out.noise"), limit)
			case strings.HasPrefix(c.Case, "noise_sampler"):
				g := New(seed)
				n := 1
				for _, d := range c.Shape {
					n *= d
				}
				var got []float32
				for range 4 {
					draw := make([]float32, n)
					g.Randn(draw)
					got = append(got, draw...)
				}
				compare(t, "out.draws", got, want("out.draws"), limit)
			case strings.HasPrefix(c.Case, "randn_sequence"):
				g := New(seed)
				for i, n := range c.Sizes {
					got := make([]float32, n)
					g.Randn(got)
					name := "out.seq" + strconv.Itoa(i)
					compare(t, name, got, want(name), limit)
				}
			case strings.HasPrefix(c.Case, "randn_seed"):
				for _, n := range c.Sizes {
					g := New(seed)
					got := make([]float32, n)
					g.Randn(got)
					name := "out.n" + strconv.Itoa(n)
					compare(t, name, got, want(name), limit)
				}
			case strings.HasPrefix(c.Case, "rand_"):
				got := make([]float32, c.N)
				New(seed).Rand(got)
				compare(t, "out.rand", got, want("out.rand"), exact)
			default:
				t.Fatalf("case %s: no rule for this kind of case", c.Case)
			}
		})
	}
}

func compare(t *testing.T, name string, got, want []float32, limit limitFunc) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", name, len(got), len(want))
	}
	bad, worst := 0, 0.0
	for i := range got {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		worst = max(worst, d)
		if !(d <= limit(want[i])) { // also catches NaN
			if bad < 3 {
				t.Errorf("%s[%d] = %.9g, want %.9g (diff %.3g)", name, i, got[i], want[i], d)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d values out of tolerance; worst diff %.3g", name, bad, len(got), worst)
	}
}

package sampling

import (
	"context"
	"encoding/json"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

type samplerCase struct {
	Case          string                     `json:"case"`
	File          string                     `json:"file"`
	Sampler       string                     `json:"sampler"`
	Variant       string                     `json:"variant"`
	CFG           float64                    `json:"cfg"`
	Seed          json.Number                `json:"seed"`
	ModelSampling string                     `json:"model_sampling"`
	Tolerance     struct{ Abs, Rel float64 } `json:"tolerance"`
}

// toyModel is the golden family's deterministic CFG denoiser:
// cond = 0.8·tanh(x)/(1+0.1σ) + 0.05x, uncond = 0.5·tanh(x)/(1+0.2σ) + 0.1x,
// denoised = uncond + (cond − uncond)·cfg, in float32.
type toyModel struct{ cfg float32 }

func (m toyModel) Denoise(_ context.Context, x []float32, sigma float32) ([]float32, []float32, error) {
	den := make([]float32, len(x))
	unc := make([]float32, len(x))
	c1, c2 := 1+float32(0.1)*sigma, 1+float32(0.2)*sigma
	for i, v := range x {
		th := float32(math.Tanh(float64(v)))
		cond := float32(0.8)*th/c1 + float32(0.05)*v
		u := float32(0.5)*th/c2 + float32(0.1)*v
		unc[i] = u
		den[i] = u + (cond-u)*m.cfg
	}
	return den, unc, nil
}

func TestGoldenSamplers(t *testing.T) {
	dir, cases := testenv.GoldenCases[samplerCase](t, "samplers")
	for _, c := range cases {
		t.Run(c.Case, func(t *testing.T) {
			if _, err := LookupSampler(c.Sampler); err != nil {
				t.Fatalf("sampler %s is not registered", c.Sampler)
			}
			f, err := safetensors.Open(filepath.Join(dir, c.File))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var ms ModelSampling
			switch {
			case strings.Contains(c.ModelSampling, "Discrete+EPS"):
				ms = NewSD(EPS)
			case strings.Contains(c.ModelSampling, "Flux"):
				ms = NewFlux(1.15)
			default:
				t.Fatalf("unknown model sampling %q", c.ModelSampling)
			}
			var seed uint64
			if err := json.Unmarshal([]byte(c.Seed.String()), &seed); err != nil {
				t.Fatal(err)
			}
			read := func(name string) []float32 {
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
			noise, latent, sigmas := read("in.noise"), read("in.latent_image"), read("in.sigmas")
			var stepsX, stepsD []float32
			var stepsI []float32
			o := &Options{ModelSampling: ms, Seed: seed, Callback: func(i int, den, x []float32) {
				stepsI = append(stepsI, float32(i))
				stepsX = append(stepsX, x...)
				stepsD = append(stepsD, den...)
			}}
			if strings.HasSuffix(c.Case, "+gaussian") {
				o.Noise = GaussianNoise(seed, len(noise))
			}
			x, err := Sample(context.Background(), c.Sampler, toyModel{cfg: float32(c.CFG)}, sigmas, noise, latent, o)
			if err != nil {
				t.Fatal(err)
			}
			tol := func(name string, got []float32) {
				t.Helper()
				want := read(name)
				if len(got) != len(want) {
					t.Fatalf("%s: %d values, want %d", name, len(got), len(want))
				}
				for i := range want {
					d := math.Abs(float64(got[i]) - float64(want[i]))
					if d > c.Tolerance.Abs+c.Tolerance.Rel*math.Abs(float64(want[i])) || math.IsNaN(float64(got[i])) != math.IsNaN(float64(want[i])) {
						t.Fatalf("%s[%d] = %.7g, want %.7g", name, i, got[i], want[i])
					}
				}
			}
			tol("out.steps_i", stepsI)
			tol("out.steps_denoised", stepsD)
			tol("out.steps_x", stepsX)
			tol("out.x", x)
		})
	}
}

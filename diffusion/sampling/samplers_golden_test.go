package sampling

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

type samplerCase struct {
	testenv.Case
	Sampler string      `json:"sampler"`
	Variant string      `json:"variant"`
	CFG     float64     `json:"cfg"`
	Seed    json.Number `json:"seed"`
	Toy     struct {
		Cond   string `json:"cond_pred"`
		Uncond string `json:"uncond_pred"`
	} `json:"toy_denoiser"`
}

// toyModel is the golden family's deterministic CFG denoiser (the manifest's
// toy_denoiser): cond = a·tanh(x)/(1 + b·σ) + c·x, uncond likewise with its own
// constants, denoised = uncond + (cond − uncond)·cfg, in float32 with the Python
// constants entering as float32.
type toyModel struct {
	cfg          float32
	cond, uncond toyPred
}

// toyPred holds a, b and c of a·tanh(x)/(1 + b·s) + c·x.
type toyPred struct{ a, b, c float32 }

var toyPredRE = regexp.MustCompile(`^\s*([0-9.eE+-]+) \* tanh\(x\) / \(1 \+ ([0-9.eE+-]+) \* s\) \+ ([0-9.eE+-]+) \* x\s*$`)

func parseToyPred(expr string) (toyPred, error) {
	m := toyPredRE.FindStringSubmatch(expr)
	if m == nil {
		return toyPred{}, fmt.Errorf("%q is not of the form a * tanh(x) / (1 + b * s) + c * x", expr)
	}
	var v [3]float32
	for i := range v {
		f, err := strconv.ParseFloat(m[i+1], 64)
		if err != nil {
			return toyPred{}, fmt.Errorf("%q: %v", expr, err)
		}
		v[i] = float32(f)
	}
	return toyPred{v[0], v[1], v[2]}, nil
}

func (m toyModel) Denoise(_ context.Context, x []float32, sigma float32) ([]float32, []float32, error) {
	den := make([]float32, len(x))
	unc := make([]float32, len(x))
	c1, c2 := 1+m.cond.b*sigma, 1+m.uncond.b*sigma
	for i, v := range x {
		th := float32(math.Tanh(float64(v)))
		cond := m.cond.a*th/c1 + m.cond.c*v
		u := m.uncond.a*th/c2 + m.uncond.c*v
		unc[i] = u
		den[i] = u + (cond-u)*m.cfg
	}
	return den, unc, nil
}

// TestGoldenSamplers runs every case of golden/samplers: the case's sampler on its
// sigmas, noise and latent with the toy denoiser and the model sampling it describes,
// with ComfyUI's default noise or (variant "gaussian") a plain gaussian noise sampler,
// comparing what the callback saw at each step and the result.
func TestGoldenSamplers(t *testing.T) {
	_, cases := testenv.GoldenCases[samplerCase](t, "samplers")
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			if _, err := LookupSampler(c.Sampler); err != nil {
				t.Fatal(c.FieldError("sampler", "%v", err))
			}
			f, err := safetensors.Open(c.Path())
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			ms := goldenModelSampling(t, &c.Case, "model_sampling")
			var seed uint64
			if err := json.Unmarshal([]byte(c.Seed.String()), &seed); err != nil {
				t.Fatal(c.FieldError("seed", "%v", err))
			}
			model := toyModel{cfg: float32(c.CFG)}
			if !c.Has("cfg") {
				t.Fatal(c.FieldError("cfg", "missing"))
			}
			if model.cond, err = parseToyPred(c.Toy.Cond); err != nil {
				t.Fatal(c.FieldError("toy_denoiser.cond_pred", "%v", err))
			}
			if model.uncond, err = parseToyPred(c.Toy.Uncond); err != nil {
				t.Fatal(c.FieldError("toy_denoiser.uncond_pred", "%v", err))
			}
			read := func(name string) []float32 {
				t.Helper()
				if _, err := c.Tensor(name); err != nil {
					t.Fatal(err)
				}
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
			switch c.Variant {
			case "default":
			case "gaussian":
				// default_noise_sampler(in.noise, seed) in place of the Brownian tree.
				o.Noise = GaussianNoise(seed, len(noise))
			default:
				t.Fatal(c.FieldError("variant", "unknown noise variant %q (default, gaussian)", c.Variant))
			}
			x, err := Sample(context.Background(), c.Sampler, model, sigmas, noise, latent, o)
			if err != nil {
				t.Fatal(err)
			}
			// The callback's record is absent where ComfyUI's steps were not all of x's
			// shape (family README).
			if _, ok := c.IO["out.steps_x"]; ok {
				testenv.Close(t, "out.steps_i", stepsI, read("out.steps_i"), c.Tolerance)
				testenv.Close(t, "out.steps_denoised", stepsD, read("out.steps_denoised"), c.Tolerance)
				testenv.Close(t, "out.steps_x", stepsX, read("out.steps_x"), c.Tolerance)
			}
			testenv.Close(t, "out.x", x, read("out.x"), c.Tolerance)
		})
	}
}

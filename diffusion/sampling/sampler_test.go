package sampling

import (
	"context"
	"slices"
	"testing"
)

// shrinkModel is a denoiser whose guided estimate shrinks x towards 0 and whose
// unconditional estimate, when it has one, shrinks it less: a CFG++ sampler's result
// depends on the second, the others' on the first only.
type shrinkModel struct{ uncond bool }

func (m shrinkModel) Denoise(_ context.Context, x []float32, sigma float32) ([]float32, []float32, error) {
	den := make([]float32, len(x))
	for i, v := range x {
		den[i] = v / (1 + sigma*sigma)
	}
	if !m.uncond {
		return den, nil, nil
	}
	unc := make([]float32, len(x))
	for i, v := range x {
		unc[i] = v * 0.9 / (1 + 0.5*sigma*sigma)
	}
	return den, unc, nil
}

func runSampler(t *testing.T, s Sampler, m Model, o *Options) []float32 {
	t.Helper()
	sigmas, err := KSamplerSigmas(o.ModelSampling, "karras", s.Name, 6, 1)
	if err != nil {
		t.Fatal(err)
	}
	noise := GaussianNoise(99, 32)(0, 0)
	out, err := s.Sample(context.Background(), m, sigmas, noise, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSamplerDescriptors checks that every descriptor says what its sampler does: a
// CFGPP sampler is the only kind whose result depends on the unconditional prediction;
// a sampler without step noise gives the same result for every seed; one with Gaussian
// step noise draws exactly GaussianNoise(seed), one with Brownian noise something else.
func TestSamplerDescriptors(t *testing.T) {
	ms := NewSD(EPS)
	for _, name := range SamplerNames() {
		s, err := LookupSampler(name)
		if err != nil || s.Name != name || s.Func == nil {
			t.Fatalf("%s: %+v, %v", name, s, err)
		}
		t.Run(name, func(t *testing.T) {
			seeded := func(seed uint64) *Options { return &Options{ModelSampling: ms, Seed: seed} }
			guided := runSampler(t, s, shrinkModel{}, seeded(1))
			withUncond := runSampler(t, s, shrinkModel{uncond: true}, seeded(1))
			if usesUncond := !slices.Equal(guided, withUncond); usesUncond != s.CFGPP {
				t.Errorf("CFGPP %v, but the unconditional prediction changes the result: %v", s.CFGPP, usesUncond)
			}
			other := runSampler(t, s, shrinkModel{}, seeded(2))
			if seedDependent := !slices.Equal(guided, other); seedDependent != (s.Noise != NoStepNoise) {
				t.Errorf("Noise %d, but the seed changes the result: %v", s.Noise, seedDependent)
			}
			o := seeded(1)
			o.Noise = GaussianNoise(1, 32)
			gaussian := slices.Equal(guided, runSampler(t, s, shrinkModel{}, o))
			switch s.Noise {
			case GaussianStepNoise:
				if !gaussian {
					t.Error("GaussianStepNoise, but GaussianNoise(seed) does not reproduce the default noise")
				}
			case BrownianStepNoise:
				if gaussian {
					t.Error("BrownianStepNoise, but the default noise is GaussianNoise(seed)")
				}
			}
		})
	}
	if _, err := LookupSampler("nope"); err == nil {
		t.Error("unknown sampler found")
	}
	if _, err := (Sampler{Name: "empty"}).Sample(context.Background(), shrinkModel{}, []float32{1, 0}, []float32{1}, nil, &Options{ModelSampling: ms}); err == nil {
		t.Error("a descriptor without a function ran")
	}
}

// TestKSamplerSigmasDiscardPenultimate: a sampler marked DiscardPenultimate gets the
// schedule of one step more without its second-to-last sigma, the others the plain one.
func TestKSamplerSigmasDiscardPenultimate(t *testing.T) {
	ms := NewSD(EPS)
	plain, err := KSamplerSigmas(ms, "normal", "euler", 5, 1)
	if err != nil {
		t.Fatal(err)
	}
	longer, err := KSamplerSigmas(ms, "normal", "euler", 6, 1)
	if err != nil {
		t.Fatal(err)
	}
	dropped := append(slices.Clone(longer[:len(longer)-2]), longer[len(longer)-1])
	discarding := 0
	for _, name := range SamplerNames() {
		s, _ := LookupSampler(name)
		got, err := KSamplerSigmas(ms, "normal", name, 5, 1)
		if err != nil {
			t.Fatal(err)
		}
		want := plain
		if s.DiscardPenultimate {
			want = dropped
			discarding++
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s (DiscardPenultimate %v): %v, want %v", name, s.DiscardPenultimate, got, want)
		}
	}
	if discarding == 0 {
		t.Error("no sampler discards the penultimate sigma")
	}
	if _, err := KSamplerSigmas(ms, "normal", "nope", 5, 1); err == nil {
		t.Error("unknown sampler accepted")
	}
}

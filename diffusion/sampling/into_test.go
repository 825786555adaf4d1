package sampling

import (
	"context"
	"slices"
	"testing"
)

// intoModel is shrinkModel as an IntoModel: it writes the same estimate into the
// sampler's buffer, allocating nothing, and reports a buffer that aliases x.
type intoModel struct {
	shrinkModel
	t *testing.T
}

func (m intoModel) DenoiseInto(_ context.Context, dst, x []float32, sigma float32) ([]float32, error) {
	if len(dst) != len(x) || &dst[0] == &x[0] {
		m.t.Errorf("DenoiseInto got a buffer of %d values for %d, aliasing x: %v", len(dst), len(x), &dst[0] == &x[0])
	}
	for i, v := range x {
		dst[i] = v / (1 + sigma*sigma)
	}
	return nil, nil
}

// TestIntoModel: every sampler gives the same result, bit for bit, whether the model
// writes into the sampler's buffers or returns its own slices; and the samplers written
// for IntoModel make no allocation per step: a run of 2N steps allocates what a run of
// N steps does.
func TestIntoModel(t *testing.T) {
	ms := NewSD(EPS)
	noAllocs := map[string]bool{"euler": true, "ddim": true, "heun": true, "dpmpp_2m": true, "euler_ancestral": true, "lcm": true, "ddpm": true,
		"dpm_2": true, "dpm_2_ancestral": true, "dpmpp_2s_ancestral": true,
		"euler_cfg_pp": true, "euler_ancestral_cfg_pp": true}
	for _, name := range SamplerNames() {
		s, _ := LookupSampler(name)
		t.Run(name, func(t *testing.T) {
			o := &Options{ModelSampling: ms, Seed: 5}
			plain := runSampler(t, s, shrinkModel{}, o)
			into := runSampler(t, s, intoModel{t: t}, o)
			if !slices.Equal(plain, into) {
				t.Fatalf("with DenoiseInto %v, with Denoise %v", into[:4], plain[:4])
			}
			if !noAllocs[name] {
				return
			}
			noise := GaussianNoise(99, 32)(0, 0)
			allocs := func(steps int) float64 {
				sigmas, err := KSamplerSigmas(ms, "karras", name, steps, 1)
				if err != nil {
					t.Fatal(err)
				}
				return testing.AllocsPerRun(5, func() {
					if _, err := s.Sample(context.Background(), intoModel{t: t}, sigmas, noise, nil, o); err != nil {
						t.Fatal(err)
					}
				})
			}
			if short, long := allocs(4), allocs(8); long != short {
				t.Errorf("4 steps allocate %v times, 8 steps %v: steps allocate", short, long)
			}
		})
	}
}

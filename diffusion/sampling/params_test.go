package sampling

import (
	"context"
	"math"
	"strings"
	"testing"
)

// TestParamsRefused: settings on which ComfyUI would loop for ever or raise are errors.
func TestParamsRefused(t *testing.T) {
	ms := NewSD(EPS)
	sigmas := karrasSigmas(4, 0.03, 14.6, 7)
	noise := make([]float32, 8)
	for i := range noise {
		noise[i] = float32(i)/8 - 0.5
	}
	model := toyModel{cfg: 2, cond: toyPred{0.8, 0.1, 0.05}, uncond: toyPred{0.5, 0.2, 0.1}}
	set := func(name string, f func(p *Params)) Sampler {
		s, err := LookupSampler(name)
		if err != nil {
			t.Fatal(err)
		}
		p := DefaultParams()
		f(&p)
		return s.WithParams(p)
	}
	for _, c := range []struct {
		s    Sampler
		want string
	}{
		{set("dpm_adaptive", func(p *Params) { p.Adaptive.HInit = 0 }), "h_init"},
		{set("dpm_adaptive", func(p *Params) { p.Adaptive.AcceptSafety = 3 }), "accept_safety"},
		{set("dpm_adaptive", func(p *Params) { p.Adaptive.Order = 4 }), "order"},
		{set("dpmpp_sde", func(p *Params) { p.R = 0 }), "r must not be 0"},
		{set("sa_solver", func(p *Params) { p.SA.PredictorOrder = 0 }), "orders"},
	} {
		_, err := c.s.Sample(context.Background(), model, sigmas, noise, nil, &Options{ModelSampling: ms, Seed: 1})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one about %q", c.s.Name, err, c.want)
		}
	}
}

// TestLMSCoeffExpanded: the expanded-polynomial integral (orders above 8) agrees with
// Gauss–Legendre where that is exact.
func TestLMSCoeffExpanded(t *testing.T) {
	ts := karrasSigmas(10, 0.03, 14.6, 7)
	for order := 1; order <= 8; order++ {
		i := order + 1
		for j := 0; j < order; j++ {
			a, b := lmsCoeff(order, ts, i, j), lmsCoeffExpanded(order, ts, i, j)
			if math.Abs(a-b) > 1e-9*max(1, math.Abs(a)) {
				t.Errorf("order %d, j %d: Gauss–Legendre %v, expanded %v", order, j, a, b)
			}
		}
	}
}

// TestTabulatedSigmas checks the table paths against the tables themselves: steps+1
// entries are the table (last set to 0), denoise keeps the tail.
func TestTabulatedSigmas(t *testing.T) {
	s, err := AYSSigmas("SD1", 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range aysLevels["SD1"][:10] {
		if s[i] != float32(v) {
			t.Fatalf("AYS SD1 10 steps [%d] = %v, want the table's %v", i, s[i], v)
		}
	}
	if s[10] != 0 {
		t.Fatalf("last sigma %v", s[10])
	}
	half, _ := AYSSigmas("SD1", 10, 0.5)
	if len(half) != 6 || half[0] != s[5] {
		t.Fatalf("denoise 0.5 = %v, want the last 6 of %v", half, s)
	}
	g, err := GITSSigmas(1.2, 20, 1)
	if err != nil || len(g) != 21 || g[1] != float32(gitsLevels[120][18][1]) {
		t.Fatalf("GITS 1.2/20 = %v, %v", g, err)
	}
	if _, err := GITSSigmas(0.845, 10, 1); err == nil { // round(0.845, 2) is 0.84
		t.Fatal("GITS coeff 0.845: no error")
	}
	// Interpolation at the table's own step count is the identity.
	in := []float64{10, 5, 2, 1, 0.5}
	for i, v := range loglinearInterp(in, len(in)) {
		if math.Abs(v-in[i]) > 1e-12*in[i] {
			t.Fatalf("loglinearInterp identity [%d] = %v, want %v", i, v, in[i])
		}
	}
}

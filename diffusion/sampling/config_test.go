package sampling

import (
	"math"
	"strings"
	"testing"
)

// TestNewDiscreteSchedules checks New against ComfyUI 0.3.64's ModelSamplingDiscrete
// built with these sampling_settings (refpeer kit, torch 2.6 CPU): table size and
// entries, percent_to_sigma(0.3) and timestep(2.5).
func TestNewDiscreteSchedules(t *testing.T) {
	for _, c := range []struct {
		name    string
		cfg     Config
		at      map[int]float64
		pct, ts float64
	}{
		{"cosine", Config{Kind: "discrete", BetaSchedule: "cosine"},
			map[int]float64{0: 0.006425412837415934, 1: 0.009350492618978024, 500: 1.0155504941940308, 998: 641.662353515625, 999: 20291.169921875},
			1.9830031394958496, 755},
		{"sqrt_linear", Config{Kind: "discrete", BetaSchedule: "sqrt_linear", LinearStart: 0.0001, LinearEnd: 0.02},
			map[int]float64{0: 0.01000049989670515, 1: 0.01483092363923788, 500: 3.442967176437378, 998: 155.8251953125, 999: 157.40728759765625},
			11.965051651000977, 440},
		{"sqrt 500", Config{Kind: "discrete", BetaSchedule: "sqrt", LinearStart: 0.0001, LinearEnd: 0.02, Timesteps: 500},
			map[int]float64{0: 0.10050377994775772, 1: 0.14896488189697266, 250: 6652.7431640625, 498: 68823785472.0, 499: 74276003840.0},
			74275987456.0, 57},
		{"linear 700 zsnr", Config{Kind: "discrete", Prediction: "v_prediction", LinearStart: 0.001, LinearEnd: 0.015, Timesteps: 700, ZSNR: true},
			map[int]float64{0: 0.031638599932193756, 1: 0.04604692384600639, 350: 1.594881296157837, 698: 1222.9188232421875, 699: 4518.763671875},
			4518.763671875, 434},
		{"cosine zsnr", Config{Kind: "discrete", BetaSchedule: "cosine", ZSNR: true},
			map[int]float64{0: 0.006425412837415934, 1: 0.009350614622235298, 500: 1.0155924558639526, 998: 662.58349609375, 999: 4518.763671875},
			1.9831528663635254, 755},
	} {
		t.Run(c.name, func(t *testing.T) {
			ms, err := New(c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			want := c.cfg.Timesteps
			if want == 0 {
				want = 1000
			}
			if len(ms.Sigmas()) != want {
				t.Fatalf("%d sigmas, want %d", len(ms.Sigmas()), want)
			}
			for i, want := range c.at {
				if got := float64(ms.Sigmas()[i]); math.Abs(got-want) > 2e-6*want {
					t.Errorf("sigma[%d] = %v, ComfyUI %v", i, got, want)
				}
			}
			if got := ms.PercentToSigma(0.3); math.Abs(got-c.pct) > 2e-6*c.pct {
				t.Errorf("percent_to_sigma(0.3) = %v, ComfyUI %v", got, c.pct)
			}
			if got := ms.Timestep(2.5); float64(got) != c.ts {
				t.Errorf("timestep(2.5) = %v, ComfyUI %v", got, c.ts)
			}
		})
	}
}

// TestNewMatchesConstructors: the defaults of each kind are the tables NewSD, NewFlux and
// NewFlowShift build, bit for bit.
func TestNewMatchesConstructors(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want ModelSampling
	}{
		{Config{Kind: "discrete"}, NewSD(EPS)},
		{Config{Kind: "discrete", Prediction: "v_prediction", BetaSchedule: "linear", LinearStart: 0.00085, LinearEnd: 0.012, Timesteps: 1000}, NewSD(VPrediction)},
		{Config{Kind: "flux"}, NewFlux(1.15)},
		{Config{Kind: "flux", Shift: 0.7, Prediction: "const"}, NewFlux(0.7)},
		{Config{Kind: "discrete_flow", Shift: 3}, NewFlowShift(3, 1000, 1000)},
	} {
		got, err := New(c.cfg)
		if err != nil {
			t.Fatal(err)
		}
		g, w := got.Sigmas(), c.want.Sigmas()
		if len(g) != len(w) || got.Prediction() != c.want.Prediction() {
			t.Fatalf("%+v: %d sigmas (%v), want %d (%v)", c.cfg, len(g), got.Prediction(), len(w), c.want.Prediction())
		}
		for i := range w {
			if math.Float32bits(g[i]) != math.Float32bits(w[i]) {
				t.Fatalf("%+v: sigma[%d] = %v, want %v", c.cfg, i, g[i], w[i])
			}
		}
	}
	z, err := NewDiscreteZSNR(VPrediction, 0.00085, 0.012, 1000)
	if err != nil {
		t.Fatal(err)
	}
	n, err := New(Config{Kind: "discrete", Prediction: "v_prediction", ZSNR: true})
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range z.Sigmas() {
		if math.Float32bits(n.Sigmas()[i]) != math.Float32bits(w) {
			t.Fatalf("zsnr sigma[%d] = %v, want %v", i, n.Sigmas()[i], w)
		}
	}
}

func TestNewErrors(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "unknown model sampling kind"},
		{Config{Kind: "edm"}, "unknown model sampling kind"},
		{Config{Kind: "discrete", Prediction: "x0"}, `"x0" prediction`},
		{Config{Kind: "discrete", BetaSchedule: "squaredcos_cap_v2"}, "unknown beta schedule"},
		{Config{Kind: "discrete", Timesteps: 1}, "at least 2 timesteps"},
		{Config{Kind: "flux", Prediction: "eps"}, "velocity"},
		{Config{Kind: "discrete_flow", BetaSchedule: "linear"}, "no beta schedule"},
		{Config{Kind: "flux", Timesteps: -3}, "at least 1 timestep"},
	} {
		if _, err := New(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want %q", c.cfg, err, c.want)
		}
	}
}

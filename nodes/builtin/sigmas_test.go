package builtin

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/rng"
	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/nodes"
)

// The expected values in comfyRef (sigmas_ref_test.go) were produced by ComfyUI 0.3.64's
// own node classes in the refpeer chroot (CPU, float32): each node's get_sigmas /
// execute / get_sampler called with the inputs named in the key; samplers run through
// KSAMPLER.sample on the golden `samplers` family's toy CFG denoiser.

// refClose reports whether got matches want within abs + rel·|want| element-wise.
func refClose(t *testing.T, name string, got []float32, want []float64, abs, rel float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values %v, want %d %v", name, len(got), got, len(want), want)
	}
	for i := range got {
		g, w := float64(got[i]), want[i]
		if math.IsNaN(w) && math.IsNaN(g) {
			continue
		}
		if math.Abs(g-w) > abs+rel*math.Abs(w) {
			t.Fatalf("%s: [%d] = %v, want %v (all: %v)", name, i, g, w, got)
		}
	}
}

func ref(t *testing.T, key string) []float64 {
	t.Helper()
	v, ok := comfyRef[key]
	if !ok {
		t.Fatalf("no reference %q", key)
	}
	return v
}

// epsModel and fluxModel are networkless MODELs: what the scheduler and sampler nodes
// read is the model sampling and the latent format.
func epsModel() *sd.Model {
	rt, _ := cpuRuntime()
	return &sd.Model{Runtime: rt, Sampling: sampling.NewSD(sampling.EPS), Latent: sd.SD15Latent}
}

func fluxModel() *sd.Model {
	rt, _ := cpuRuntime()
	return &sd.Model{Runtime: rt, Sampling: sampling.NewFlux(1.15), Latent: sd.FluxLatent}
}

func TestSchedulerNodesMatchComfyUI(t *testing.T) {
	type tc struct {
		key, class string
		in         nodes.Inputs
	}
	var cases []tc
	for _, c := range []struct {
		mt    string
		steps int64
		dn    float64
	}{{"SD1", 10, 1.0}, {"SD1", 7, 1.0}, {"SDXL", 25, 1.0}, {"SDXL", 15, 0.6}, {"SVD", 5, 1.0}, {"SD1", 1, 0.4}} {
		cases = append(cases, tc{fmt.Sprintf("ays/%s/%d/%s", c.mt, c.steps, py(c.dn)), "AlignYourStepsScheduler",
			nodes.Inputs{"model_type": c.mt, "steps": c.steps, "denoise": c.dn}})
	}
	for _, c := range []struct {
		coeff float64
		steps int64
		dn    float64
	}{{1.2, 10, 1.0}, {0.85, 25, 1.0}, {1.5, 20, 0.5}, {0.8, 2, 1.0}, {1.05, 3, 1.0}} {
		cases = append(cases, tc{fmt.Sprintf("gits/%s/%d/%s", py(c.coeff), c.steps, py(c.dn)), "GITSScheduler",
			nodes.Inputs{"coeff": c.coeff, "steps": c.steps, "denoise": c.dn}})
	}
	for _, c := range []struct {
		mt    string
		steps int64
		dn    float64
	}{{"FLUX", 20, 1.0}, {"Wan", 8, 0.75}, {"Chroma", 40, 1.0}, {"FLUX", 10, 1.0}, {"Wan", 30, 0.5}} {
		cases = append(cases, tc{fmt.Sprintf("opt/%s/%d/%s", c.mt, c.steps, py(c.dn)), "OptimalStepsScheduler",
			nodes.Inputs{"model_type": c.mt, "steps": c.steps, "denoise": c.dn}})
	}
	for _, c := range [][4]float64{{8, 14.614642, 0.0291675, 1.0}, {5, 80.0, 0.002, 2.5}, {1, 10.0, 0.5, 0.7}} {
		cases = append(cases, tc{fmt.Sprintf("poly/%d/%s/%s/%s", int(c[0]), py(c[1]), py(c[2]), py(c[3])), "PolyexponentialScheduler",
			nodes.Inputs{"steps": int64(c[0]), "sigma_max": c[1], "sigma_min": c[2], "rho": c[3]}})
	}
	for _, c := range [][5]float64{{8, 14.614642, 0.0291675, 0.0, 0.5}, {5, 80.0, 0.002, 1.3, 2.0}, {1, 10.0, 0.5, -0.5, 0.3}, {6, 3.0, 0.5, 0.0, 0.0}} {
		cases = append(cases, tc{fmt.Sprintf("laplace/%d/%s/%s/%s/%s", int(c[0]), py(c[1]), py(c[2]), py(c[3]), py(c[4])), "LaplaceScheduler",
			nodes.Inputs{"steps": int64(c[0]), "sigma_max": c[1], "sigma_min": c[2], "mu": c[3], "beta": c[4]}})
	}
	for _, c := range [][4]float64{{10, 19.9, 0.1, 0.001}, {5, 10.0, 0.5, 0.01}, {1, 19.9, 0.1, 0.001}} {
		cases = append(cases, tc{fmt.Sprintf("vp/%d/%s/%s/%s", int(c[0]), py(c[1]), py(c[2]), py(c[3])), "VPScheduler",
			nodes.Inputs{"steps": int64(c[0]), "beta_d": c[1], "beta_min": c[2], "eps_s": c[3]}})
	}
	for _, c := range []struct {
		kind  string
		steps int64
		a, b  float64
	}{{"eps", 12, 0.5, 0.7}, {"flux", 9, 0.6, 0.6}, {"eps", 30, 2.0, 1.3}} {
		m := epsModel()
		if c.kind == "flux" {
			m = fluxModel()
		}
		cases = append(cases, tc{fmt.Sprintf("beta/%s/%d/%s/%s", c.kind, c.steps, py(c.a), py(c.b)), "BetaSamplingScheduler",
			nodes.Inputs{"model": m, "steps": c.steps, "alpha": c.a, "beta": c.b}})
	}
	base := Sigmas(f32(ref(t, "base")))
	cases = append(cases, tc{"flip", "FlipSigmas", nodes.Inputs{"sigmas": base}})
	for _, c := range []struct {
		steps  int64
		s0, s1 float64
		sp     string
	}{{3, -1, 1, "linear"}, {3, -1, 1, "cosine"}, {4, 5, 0.5, "sine"}, {2, -1, 12, "linear"}} {
		cases = append(cases, tc{fmt.Sprintf("extend/%d/%s/%s/%s", c.steps, py(c.s0), py(c.s1), c.sp), "ExtendIntermediateSigmas",
			nodes.Inputs{"sigmas": base, "steps": c.steps, "start_at_sigma": c.s0, "end_at_sigma": c.s1, "spacing": c.sp}})
	}
	for _, c := range cases {
		t.Run(c.key, func(t *testing.T) {
			got := mustRun(t, c.class, c.in).Outputs[0].(Sigmas)
			refClose(t, c.key, got, ref(t, c.key), 1e-6, 1e-5)
		})
	}
}

// py formats a float as Python's repr does for these inputs.
func py(v float64) string {
	s := fmt.Sprint(v)
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		s += ".0"
	}
	return s
}

func f32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

func TestSigmaNodesEdges(t *testing.T) {
	if got := mustRun(t, "FlipSigmas", nodes.Inputs{"sigmas": Sigmas{}}).Outputs[0].(Sigmas); len(got) != 0 {
		t.Fatalf("FlipSigmas of nothing = %v", got)
	}
	got := mustRun(t, "SetFirstSigma", nodes.Inputs{"sigmas": Sigmas{3, 2, 0}, "sigma": 136.0}).Outputs[0].(Sigmas)
	if fmt.Sprint(got) != "[136 2 0]" {
		t.Fatalf("SetFirstSigma = %v", got)
	}
	if _, err := run(t, Options{}, nil, "SetFirstSigma", nodes.Inputs{"sigmas": Sigmas{}, "sigma": 1.0}); err == nil {
		t.Fatal("SetFirstSigma of an empty schedule: no error")
	}
	if got := mustRun(t, "ExtendIntermediateSigmas", nodes.Inputs{"sigmas": Sigmas{}, "steps": int64(3), "start_at_sigma": -1.0,
		"end_at_sigma": 0.0, "spacing": "linear"}).Outputs[0].(Sigmas); len(got) != 0 {
		t.Fatalf("ExtendIntermediateSigmas of nothing = %v", got)
	}
	for _, c := range []struct {
		class string
		in    nodes.Inputs
	}{
		{"GITSScheduler", nodes.Inputs{"coeff": 0.83, "steps": int64(10), "denoise": 1.0}},
		{"PolyexponentialScheduler", nodes.Inputs{"steps": int64(3), "sigma_max": 0.0, "sigma_min": 1.0, "rho": 1.0}},
		{"BetaSamplingScheduler", nodes.Inputs{"model": epsModel(), "steps": int64(3), "alpha": 0.0, "beta": 1.0}},
	} {
		if _, err := run(t, Options{}, nil, c.class, c.in); err == nil {
			t.Errorf("%s %v: no error", c.class, c.in)
		}
	}
	// denoise 0 is an empty schedule, as in ComfyUI.
	for _, class := range []string{"AlignYourStepsScheduler", "OptimalStepsScheduler"} {
		mt := "SD1"
		if class == "OptimalStepsScheduler" {
			mt = "FLUX"
		}
		if got := mustRun(t, class, nodes.Inputs{"model_type": mt, "steps": int64(10), "denoise": 0.0}).Outputs[0].(Sigmas); len(got) != 0 {
			t.Errorf("%s denoise 0 = %v", class, got)
		}
	}
}

func TestSamplingPercentToSigmaMatchesComfyUI(t *testing.T) {
	for _, kind := range []string{"eps", "flux"} {
		m := epsModel()
		if kind == "flux" {
			m = fluxModel()
		}
		for _, p := range []float64{0, 0.3, 1} {
			for _, act := range []bool{false, true} {
				key := fmt.Sprintf("pct/%s/%s/%s", kind, py(p), map[bool]string{false: "False", true: "True"}[act])
				got := mustRun(t, "SamplingPercentToSigma", nodes.Inputs{"model": m, "sampling_percent": p, "return_actual_sigma": act}).Outputs[0].(float64)
				want := ref(t, key)[0]
				if math.Abs(got-want) > 1e-6*math.Abs(want)+1e-7 {
					t.Errorf("%s = %v, want %v", key, got, want)
				}
			}
		}
	}
}

func TestAddNoiseMatchesComfyUI(t *testing.T) {
	rt := testRuntime(t)
	for _, c := range []struct {
		kind   string
		sigmas Sigmas
		key    string
		shape  [4]int
	}{
		{"eps", Sigmas{14.6, 3.0, 0.0}, "addnoise/eps/[14.6, 3.0, 0.0]/False", [4]int{1, 4, 2, 3}},
		{"eps", Sigmas{2.5}, "addnoise/eps/[2.5]/True", [4]int{1, 4, 2, 3}},
		{"flux", Sigmas{1.0, 0.4}, "addnoise/flux/[1.0, 0.4]/False", [4]int{1, 16, 1, 2}},
	} {
		t.Run(c.key, func(t *testing.T) {
			m := epsModel()
			if c.kind == "flux" {
				m = fluxModel()
			}
			samples, err := rt.FromFloat32(f32(ref(t, c.key+"/in")), c.shape[:]...)
			if err != nil {
				t.Fatal(err)
			}
			l := &sd.Latent{Samples: samples}
			out := mustRun(t, "AddNoise", nodes.Inputs{"model": m, "noise": sd.Noise{Seed: 42}, "sigmas": c.sigmas, "latent_image": l}).Outputs[0].(*sd.Latent)
			got, _, err := sd.LatentData(out)
			if err != nil {
				t.Fatal(err)
			}
			// The noise is torch's float32 randn (within 2e-6 of ours, codex/sampling.md),
			// scaled by up to 14.6.
			refClose(t, c.key, got, ref(t, c.key), 5e-5, 1e-5)
		})
	}
	l := &sd.Latent{Samples: mustTensor(t, rt, []float32{1, 2}, 1, 2, 1, 1)}
	if got := mustRun(t, "AddNoise", nodes.Inputs{"model": epsModel(), "noise": sd.Noise{Seed: 1}, "sigmas": Sigmas{}, "latent_image": l}).Outputs[0]; got != l {
		t.Fatal("AddNoise with no sigmas must return the latent unchanged")
	}
}

func mustTensor(t *testing.T, rt *gpu.Runtime, v []float32, shape ...int) *gpu.Tensor {
	t.Helper()
	x, err := rt.FromFloat32(v, shape...)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// toyDenoiser is the golden `samplers` family's CFG denoiser: cond = 0.8·tanh(x)/(1 +
// 0.1σ) + 0.05x, uncond = 0.5·tanh(x)/(1 + 0.2σ) + 0.1x, uncond + (cond − uncond)·cfg,
// in float32.
type toyDenoiser struct{ cfg float32 }

func (m toyDenoiser) Denoise(_ context.Context, x []float32, sigma float32) ([]float32, []float32, error) {
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

// toySample runs a SAMPLER on the toy denoiser from seed 7's noise and an empty latent,
// over the scheduler's sigmas (karras for eps, simple for flux).
func toySample(t *testing.T, s *Sampler, kind string, steps int) []float32 {
	t.Helper()
	ms, shape, sched := sampling.ModelSampling(sampling.NewSD(sampling.EPS)), []int{1, 4, 2, 2}, "karras"
	if kind == "flux" {
		ms, shape, sched = sampling.NewFlux(1.15), []int{1, 16, 1, 1}, "simple"
	}
	fn, err := sampling.LookupScheduler(sched)
	if err != nil {
		t.Fatal(err)
	}
	noise, err := rng.PrepareNoise(7, shape, nil)
	if err != nil {
		t.Fatal(err)
	}
	x, err := s.Sample(context.Background(), toyDenoiser{cfg: 2}, fn(ms, steps), noise, nil, &sampling.Options{ModelSampling: ms, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	return x
}

var samplerNodeCases = []struct {
	key, class, kind string
	in               nodes.Inputs
}{
	{"euler_ancestral/eps", "SamplerEulerAncestral", "eps", nodes.Inputs{"eta": 0.5, "s_noise": 0.8}},
	{"euler_ancestral/flux", "SamplerEulerAncestral", "flux", nodes.Inputs{"eta": 0.5, "s_noise": 0.8}},
	{"euler_ancestral_cfgpp", "SamplerEulerAncestralCFGPP", "eps", nodes.Inputs{"eta": 0.6, "s_noise": 1.3}},
	{"euler_cfgpp_alt", "SamplerEulerCFGpp", "eps", nodes.Inputs{"version": "alternative"}},
	{"lms2", "SamplerLMS", "eps", nodes.Inputs{"order": int64(2)}},
	{"dpmpp_2m_sde_heun", "SamplerDPMPP_2M_SDE", "eps", nodes.Inputs{"solver_type": "heun", "eta": 0.7, "s_noise": 0.9, "noise_device": "cpu"}},
	{"dpmpp_2m_sde_mid_eta0", "SamplerDPMPP_2M_SDE", "eps", nodes.Inputs{"solver_type": "midpoint", "eta": 0.0, "s_noise": 1.0, "noise_device": "gpu"}},
	{"dpmpp_3m_sde", "SamplerDPMPP_3M_SDE", "eps", nodes.Inputs{"eta": 0.5, "s_noise": 1.2, "noise_device": "cpu"}},
	{"dpmpp_sde", "SamplerDPMPP_SDE", "eps", nodes.Inputs{"eta": 0.8, "s_noise": 0.9, "r": 0.3, "noise_device": "cpu"}},
	{"dpmpp_2s/eps", "SamplerDPMPP_2S_Ancestral", "eps", nodes.Inputs{"eta": 0.4, "s_noise": 1.1}},
	{"dpmpp_2s/flux", "SamplerDPMPP_2S_Ancestral", "flux", nodes.Inputs{"eta": 0.4, "s_noise": 1.1}},
	{"er_sde_reverse", "SamplerER_SDE", "eps", nodes.Inputs{"solver_type": "Reverse-time SDE", "max_stage": int64(2), "eta": 0.5, "s_noise": 1.0}},
	{"er_sde_ode", "SamplerER_SDE", "eps", nodes.Inputs{"solver_type": "ODE", "max_stage": int64(3), "eta": 1.0, "s_noise": 1.0}},
	{"er_sde_er", "SamplerER_SDE", "eps", nodes.Inputs{"solver_type": "ER-SDE", "max_stage": int64(1), "eta": 3.0, "s_noise": 0.7}},
	{"sa_pece_simple", "SamplerSASolver", "eps", nodes.Inputs{"model": epsModel(), "eta": 0.7, "sde_start_percent": 0.1, "sde_end_percent": 0.9,
		"s_noise": 0.9, "predictor_order": int64(2), "corrector_order": int64(2), "use_pece": true, "simple_order_2": true}},
	{"sa_p4_c0", "SamplerSASolver", "eps", nodes.Inputs{"model": epsModel(), "eta": 1.5, "sde_start_percent": 0.0, "sde_end_percent": 0.5,
		"s_noise": 1.0, "predictor_order": int64(4), "corrector_order": int64(0), "use_pece": false, "simple_order_2": false}},
	{"dpm_adaptive", "SamplerDPMAdaptative", "eps", nodes.Inputs{"order": int64(2), "rtol": 0.1, "atol": 0.01, "h_init": 0.2, "pcoeff": 0.1,
		"icoeff": 0.8, "dcoeff": 0.05, "accept_safety": 0.7, "eta": 0.5, "s_noise": 0.9}},
}

// TestSamplerNodesMatchComfyUI runs each Sampler* node with non-default settings on the
// toy denoiser against ComfyUI's node on the same inputs.
func TestSamplerNodesMatchComfyUI(t *testing.T) {
	for _, c := range samplerNodeCases {
		t.Run(c.key, func(t *testing.T) {
			s := mustRun(t, c.class, c.in).Outputs[0].(*Sampler)
			refClose(t, c.key, toySample(t, s, c.kind, 6), ref(t, "sampler/"+c.key), 1e-4, 1e-4)
		})
	}
	t.Run("lms10", func(t *testing.T) {
		s := mustRun(t, "SamplerLMS", nodes.Inputs{"order": int64(10)}).Outputs[0].(*Sampler)
		refClose(t, "lms10", toySample(t, s, "eps", 12), ref(t, "sampler/lms10"), 1e-4, 1e-4)
	})
}

// TestSamplerNodeDefaultsEqualKSampler: a Sampler* node at its schema defaults samples
// bit for bit as its sampler_name does (the KSampler path), on eps and flow models.
func TestSamplerNodeDefaultsEqualKSampler(t *testing.T) {
	r := newTestRegistry(t, Options{})
	for _, c := range []struct{ class, name string }{
		{"SamplerEulerAncestral", "euler_ancestral"}, {"SamplerEulerAncestralCFGPP", "euler_ancestral_cfg_pp"},
		{"SamplerEulerCFGpp", "euler_cfg_pp"}, {"SamplerLMS", "lms"}, {"SamplerDPMPP_2M_SDE", "dpmpp_2m_sde_gpu"},
		{"SamplerDPMPP_3M_SDE", "dpmpp_3m_sde_gpu"}, {"SamplerDPMPP_SDE", "dpmpp_sde_gpu"},
		{"SamplerDPMPP_2S_Ancestral", "dpmpp_2s_ancestral"}, {"SamplerER_SDE", "er_sde"},
		{"SamplerSASolver", "sa_solver"}, {"SamplerDPMAdaptative", "dpm_adaptive"},
	} {
		t.Run(c.class, func(t *testing.T) {
			n, err := r.Lookup(c.class)
			if err != nil {
				t.Fatal(err)
			}
			plain, err := sampling.LookupSampler(c.name)
			if err != nil {
				t.Fatal(err)
			}
			for _, kind := range []string{"eps", "flux"} {
				// SamplerSASolver reads its SDE interval from its own model.
				model := epsModel()
				if kind == "flux" {
					model = fluxModel()
				}
				in := nodes.Inputs{}
				for _, i := range n.Schema().Inputs {
					switch d := i.Default.(type) {
					case int:
						in[i.Name] = int64(d)
					case nil:
					default:
						in[i.Name] = d
					}
					switch {
					case i.Default != nil:
					case i.Type == "MODEL":
						in[i.Name] = model
					case i.Choices != nil:
						in[i.Name] = i.Choices()[0]
					case i.Type == "BOOLEAN":
						in[i.Name] = false
					}
				}
				res, err := n.Run(context.Background(), &nodes.Env{}, in)
				if err != nil {
					t.Fatal(err)
				}
				node := res.Outputs[0].(*Sampler)
				got, want := toySample(t, node, kind, 6), toySample(t, &Sampler{plain}, kind, 6)
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("%s: [%d] = %v, %s gives %v", kind, i, got[i], c.name, want[i])
					}
				}
			}
		})
	}
}

// TestSamplerNodeThroughSamplerCustomAdvanced: a Sampler* node's SAMPLER reaches the
// sampler through the custom-sampling nodes with its settings: at its defaults it equals
// KSampler with the sampler_name, with other settings it samples differently.
func TestSamplerNodeThroughSamplerCustomAdvanced(t *testing.T) {
	model, c := tinySD(t)
	pos, neg := encodeNode(t, c, "a fox"), encodeNode(t, c, "blurry")
	empty := out0(t, "EmptyLatentImage", nodes.Inputs{"width": int64(64), "height": int64(64), "batch_size": int64(1)})
	ks := out0(t, "KSampler", nodes.Inputs{"model": model, "seed": int64(9), "steps": int64(3), "cfg": 4.0, "sampler_name": "euler_ancestral",
		"scheduler": "simple", "positive": pos, "negative": neg, "latent_image": empty, "denoise": 1.0})
	kv, _ := latentValues(t, ks)
	noise := out0(t, "RandomNoise", nodes.Inputs{"noise_seed": int64(9)})
	guider := out0(t, "CFGGuider", nodes.Inputs{"model": model, "positive": pos, "negative": neg, "cfg": 4.0})
	sigmas := out0(t, "BasicScheduler", nodes.Inputs{"model": model, "scheduler": "simple", "steps": int64(3), "denoise": 1.0})
	sample := func(eta, sNoise float64) []float32 {
		s := out0(t, "SamplerEulerAncestral", nodes.Inputs{"eta": eta, "s_noise": sNoise})
		res := mustRun(t, "SamplerCustomAdvanced", nodes.Inputs{"noise": noise, "guider": guider, "sampler": s, "sigmas": sigmas, "latent_image": empty})
		v, _ := latentValues(t, res.Outputs[0])
		return v
	}
	if d := diffMax(sample(1, 1), kv); d != 0 {
		t.Fatalf("SamplerEulerAncestral at its defaults differs from KSampler euler_ancestral by %g", d)
	}
	if d := diffMax(sample(0.5, 0.8), kv); d < 1e-4 {
		t.Fatalf("SamplerEulerAncestral eta 0.5 s_noise 0.8 gives KSampler's result (max difference %g)", d)
	}
}

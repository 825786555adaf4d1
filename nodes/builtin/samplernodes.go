package builtin

import (
	"context"

	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// The Sampler* nodes of comfy_extras/nodes_custom_sampler.py and
// nodes_advanced_samplers.py: a SAMPLER of the registry's algorithm with the settings
// ComfyUI passes as extra_options (sampling.Params). Each starts from
// sampling.DefaultParams, so a node left at its defaults samples exactly as the
// sampler_name does through KSampler.

func samplerSchema(name string, inputs ...graph.Input) graph.Schema {
	return graph.Schema{Name: name, DisplayName: name, Category: "sampling/custom_sampling/samplers", PythonModule: customSamplerModule,
		Inputs: inputs, Outputs: outputs("SAMPLER")}
}

// knob is a sampler's float setting: 0 … max, step 0.01, not rounded.
func knob(name string, def, max float64) graph.Input {
	return graph.Input{Name: name, Type: graph.TypeFloat, Default: def, Min: graph.Num(0.0), Max: graph.Num(max), Step: graph.Num(0.01), NoRound: true}
}

func noiseDeviceInput() graph.Input { return combo("noise_device", "gpu", "cpu") }

// configured returns the named sampler set to p.
func configured(name string, p sampling.Params) (*Sampler, error) {
	s, err := sampling.LookupSampler(name)
	if err != nil {
		return nil, err
	}
	return &Sampler{s.WithParams(p)}, nil
}

// deviceName is the sampler_name a noise_device picks: the _gpu twin draws its
// Brownian tree on the model's device (the same tree on a CPU device).
func deviceName(name, device string) string {
	if device == "cpu" {
		return name
	}
	return name + "_gpu"
}

// etaNoise holds the eta and s_noise inputs most sampler nodes share.
type etaNoise struct {
	Eta    float64 `input:"eta"`
	SNoise float64 `input:"s_noise"`
}

func (e etaNoise) params() sampling.Params {
	p := sampling.DefaultParams()
	p.Eta, p.SNoise = e.Eta, e.SNoise
	return p
}

// SamplerEulerAncestral is ComfyUI's SamplerEulerAncestral.
type SamplerEulerAncestral struct{ etaNoise }

// Schema implements nodes.Typed.
func (*SamplerEulerAncestral) Schema() graph.Schema {
	return samplerSchema("SamplerEulerAncestral", knob("eta", 1, 100), knob("s_noise", 1, 100))
}

// Run implements nodes.Typed.
func (n *SamplerEulerAncestral) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(configured("euler_ancestral", n.params()))
}

// SamplerEulerAncestralCFGPP is ComfyUI's SamplerEulerAncestralCFGPP.
type SamplerEulerAncestralCFGPP struct{ etaNoise }

// Schema implements nodes.Typed.
func (*SamplerEulerAncestralCFGPP) Schema() graph.Schema {
	s := samplerSchema("SamplerEulerAncestralCFGPP", knob("eta", 1, 1), knob("s_noise", 1, 10))
	s.DisplayName = "SamplerEulerAncestralCFG++"
	return s
}

// Run implements nodes.Typed.
func (n *SamplerEulerAncestralCFGPP) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(configured("euler_ancestral_cfg_pp", n.params()))
}

// SamplerDPMPP_2S_Ancestral is ComfyUI's SamplerDPMPP_2S_Ancestral.
type SamplerDPMPP_2S_Ancestral struct{ etaNoise }

// Schema implements nodes.Typed.
func (*SamplerDPMPP_2S_Ancestral) Schema() graph.Schema {
	return samplerSchema("SamplerDPMPP_2S_Ancestral", knob("eta", 1, 100), knob("s_noise", 1, 100))
}

// Run implements nodes.Typed.
func (n *SamplerDPMPP_2S_Ancestral) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(configured("dpmpp_2s_ancestral", n.params()))
}

// SamplerDPMPP_SDE is ComfyUI's SamplerDPMPP_SDE.
type SamplerDPMPP_SDE struct {
	etaNoise
	R           float64 `input:"r"`
	NoiseDevice string  `input:"noise_device"`
}

// Schema implements nodes.Typed.
func (*SamplerDPMPP_SDE) Schema() graph.Schema {
	return samplerSchema("SamplerDPMPP_SDE", knob("eta", 1, 100), knob("s_noise", 1, 100), knob("r", 0.5, 100), noiseDeviceInput())
}

// Run implements nodes.Typed.
func (n *SamplerDPMPP_SDE) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	p := n.params()
	p.R = n.R
	return nodes.One(configured(deviceName("dpmpp_sde", n.NoiseDevice), p))
}

// SamplerDPMPP_2M_SDE is ComfyUI's SamplerDPMPP_2M_SDE.
type SamplerDPMPP_2M_SDE struct {
	SolverType string `input:"solver_type"`
	etaNoise
	NoiseDevice string `input:"noise_device"`
}

// Schema implements nodes.Typed.
func (*SamplerDPMPP_2M_SDE) Schema() graph.Schema {
	return samplerSchema("SamplerDPMPP_2M_SDE", combo("solver_type", "midpoint", "heun"),
		knob("eta", 1, 100), knob("s_noise", 1, 100), noiseDeviceInput())
}

// Run implements nodes.Typed: dpmpp_2m_sde(_gpu) with solver_type heun runs the Heun
// correction, which dpmpp_2m_sde_heun names.
func (n *SamplerDPMPP_2M_SDE) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	s, err := configured(deviceName("dpmpp_2m_sde", n.NoiseDevice), n.params())
	if err != nil || n.SolverType != "heun" {
		return nodes.One(s, err)
	}
	heun, err := sampling.LookupSampler("dpmpp_2m_sde_heun")
	s.Func = heun.Func
	return nodes.One(s, err)
}

// SamplerDPMPP_3M_SDE is ComfyUI's SamplerDPMPP_3M_SDE.
type SamplerDPMPP_3M_SDE struct {
	etaNoise
	NoiseDevice string `input:"noise_device"`
}

// Schema implements nodes.Typed.
func (*SamplerDPMPP_3M_SDE) Schema() graph.Schema {
	return samplerSchema("SamplerDPMPP_3M_SDE", knob("eta", 1, 100), knob("s_noise", 1, 100), noiseDeviceInput())
}

// Run implements nodes.Typed.
func (n *SamplerDPMPP_3M_SDE) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(configured(deviceName("dpmpp_3m_sde", n.NoiseDevice), n.params()))
}

// SamplerLMS is ComfyUI's SamplerLMS.
type SamplerLMS struct {
	Order int `input:"order"`
}

// Schema implements nodes.Typed.
func (*SamplerLMS) Schema() graph.Schema {
	return samplerSchema("SamplerLMS", graph.Input{Name: "order", Type: graph.TypeInt, Default: 4, Min: graph.Num(1), Max: graph.Num(100)})
}

// Run implements nodes.Typed.
func (n *SamplerLMS) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	p := sampling.DefaultParams()
	p.Order = n.Order
	return nodes.One(configured("lms", p))
}

// SamplerDPMAdaptative is ComfyUI's SamplerDPMAdaptative (sic).
type SamplerDPMAdaptative struct {
	Order        int     `input:"order"`
	RTol         float64 `input:"rtol"`
	ATol         float64 `input:"atol"`
	HInit        float64 `input:"h_init"`
	PCoeff       float64 `input:"pcoeff"`
	ICoeff       float64 `input:"icoeff"`
	DCoeff       float64 `input:"dcoeff"`
	AcceptSafety float64 `input:"accept_safety"`
	Eta          float64 `input:"eta"`
	SNoise       float64 `input:"s_noise"`
}

// Schema implements nodes.Typed.
func (*SamplerDPMAdaptative) Schema() graph.Schema {
	return samplerSchema("SamplerDPMAdaptative",
		graph.Input{Name: "order", Type: graph.TypeInt, Default: 3, Min: graph.Num(2), Max: graph.Num(3)},
		knob("rtol", 0.05, 100), knob("atol", 0.0078, 100), knob("h_init", 0.05, 100),
		knob("pcoeff", 0.0, 100), knob("icoeff", 1.0, 100), knob("dcoeff", 0.0, 100),
		knob("accept_safety", 0.81, 100), knob("eta", 0.0, 100), knob("s_noise", 1.0, 100))
}

// Run implements nodes.Typed.
func (n *SamplerDPMAdaptative) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	p := sampling.DefaultParams()
	p.Adaptive = sampling.AdaptiveParams{Order: n.Order, RTol: n.RTol, ATol: n.ATol, HInit: n.HInit,
		PCoeff: n.PCoeff, ICoeff: n.ICoeff, DCoeff: n.DCoeff, AcceptSafety: n.AcceptSafety, Eta: n.Eta, SNoise: n.SNoise}
	return nodes.One(configured("dpm_adaptive", p))
}

// SamplerER_SDE is ComfyUI's SamplerER_SDE.
type SamplerER_SDE struct {
	SolverType string `input:"solver_type"`
	MaxStage   int    `input:"max_stage"`
	etaNoise
}

// Schema implements nodes.Typed.
func (*SamplerER_SDE) Schema() graph.Schema {
	eta := knob("eta", 1, 100)
	eta.Tooltip = "Stochastic strength of reverse-time SDE.\nWhen eta=0, it reduces to deterministic ODE. This setting doesn't apply to ER-SDE solver type."
	return samplerSchema("SamplerER_SDE",
		graph.Input{Name: "solver_type", Type: graph.TypeCombo, ComboV3: true, Choices: fixed([]string{"ER-SDE", "Reverse-time SDE", "ODE"})},
		graph.Input{Name: "max_stage", Type: graph.TypeInt, Default: 3, Min: graph.Num(1), Max: graph.Num(3)},
		eta, knob("s_noise", 1, 100))
}

// Run implements nodes.Typed (SamplerER_SDE.get_sampler): "ODE", and "Reverse-time
// SDE" at eta 0, add no noise; the reverse-time types scale noise by x^(eta+1).
func (n *SamplerER_SDE) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	eta, sNoise := n.Eta, n.SNoise
	if n.SolverType == "ODE" || (n.SolverType == "Reverse-time SDE" && eta == 0) {
		eta, sNoise = 0, 0
	}
	p := sampling.DefaultParams()
	p.ERSDE = sampling.ERSDEParams{MaxStage: n.MaxStage, ReverseTimeEta: eta, SNoise: sNoise}
	if n.SolverType == "ER-SDE" {
		p.ERSDE.ReverseTimeEta = -1
	}
	return nodes.One(configured("er_sde", p))
}

// SamplerSASolver is ComfyUI's SamplerSASolver: the SDE interval is taken from its
// model's schedule at sde_start_percent and sde_end_percent.
type SamplerSASolver struct {
	Model           *sd.Model `input:"model"`
	Eta             float64   `input:"eta"`
	SDEStartPercent float64   `input:"sde_start_percent"`
	SDEEndPercent   float64   `input:"sde_end_percent"`
	SNoise          float64   `input:"s_noise"`
	PredictorOrder  int       `input:"predictor_order"`
	CorrectorOrder  int       `input:"corrector_order"`
	UsePECE         bool      `input:"use_pece"`
	SimpleOrder2    bool      `input:"simple_order_2"`
}

// Schema implements nodes.Typed.
func (*SamplerSASolver) Schema() graph.Schema {
	percent := func(name string, def float64) graph.Input {
		return graph.Input{Name: name, Type: graph.TypeFloat, Default: def, Min: graph.Num(0.0), Max: graph.Num(1.0), Step: graph.Num(0.001)}
	}
	return samplerSchema("SamplerSASolver", socketV3("model", "MODEL"), knob("eta", 1, 10),
		percent("sde_start_percent", 0.2), percent("sde_end_percent", 0.8), knob("s_noise", 1, 100),
		graph.Input{Name: "predictor_order", Type: graph.TypeInt, Default: 3, Min: graph.Num(1), Max: graph.Num(6)},
		graph.Input{Name: "corrector_order", Type: graph.TypeInt, Default: 4, Min: graph.Num(0), Max: graph.Num(6)},
		socketV3("use_pece", graph.TypeBoolean), socketV3("simple_order_2", graph.TypeBoolean))
}

// Run implements nodes.Typed.
func (n *SamplerSASolver) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	ms := n.Model.Sampling
	p := sampling.DefaultParams()
	p.SA = sampling.SAParams{PredictorOrder: n.PredictorOrder, CorrectorOrder: n.CorrectorOrder,
		UsePECE: n.UsePECE, SimpleOrder2: n.SimpleOrder2, Interval: true,
		StartSigma: ms.PercentToSigma(n.SDEStartPercent), EndSigma: ms.PercentToSigma(n.SDEEndPercent),
		Eta: n.Eta, SNoise: n.SNoise}
	return nodes.One(configured("sa_solver", p))
}

// SamplerEulerCFGpp is ComfyUI's experimental SamplerEulerCFGpp: "regular" is
// euler_cfg_pp, "alternative" the x − denoised + uncond variant.
type SamplerEulerCFGpp struct {
	Version string `input:"version"`
}

// Schema implements nodes.Typed.
func (*SamplerEulerCFGpp) Schema() graph.Schema {
	name := "SamplerEulerCFG++"
	return graph.Schema{Name: "SamplerEulerCFGpp", DisplayName: name, Category: "_for_testing", PythonModule: "comfy_extras.nodes_advanced_samplers",
		Inputs: []graph.Input{comboV3("version", "regular", "alternative")}, Outputs: outputs("SAMPLER"),
		Extra: experimentalNamed(1, &name)}
}

// Run implements nodes.Typed.
func (n *SamplerEulerCFGpp) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if n.Version == "alternative" {
		return nodes.One(&Sampler{sampling.EulerPP()}, nil)
	}
	s, err := sampling.LookupSampler("euler_cfg_pp")
	return nodes.One(&Sampler{s}, err)
}

// Interface guards.
var (
	_ nodes.Typed = (*SamplerEulerAncestral)(nil)
	_ nodes.Typed = (*SamplerEulerAncestralCFGPP)(nil)
	_ nodes.Typed = (*SamplerDPMPP_2S_Ancestral)(nil)
	_ nodes.Typed = (*SamplerDPMPP_SDE)(nil)
	_ nodes.Typed = (*SamplerDPMPP_2M_SDE)(nil)
	_ nodes.Typed = (*SamplerDPMPP_3M_SDE)(nil)
	_ nodes.Typed = (*SamplerLMS)(nil)
	_ nodes.Typed = (*SamplerDPMAdaptative)(nil)
	_ nodes.Typed = (*SamplerER_SDE)(nil)
	_ nodes.Typed = (*SamplerSASolver)(nil)
	_ nodes.Typed = (*SamplerEulerCFGpp)(nil)
)

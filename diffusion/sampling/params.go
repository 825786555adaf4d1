package sampling

// Params are a sampler's settings: what ComfyUI's Sampler* nodes pass to KSAMPLER as
// extra_options (comfy_extras/nodes_custom_sampler.py). A descriptor without Params
// runs with DefaultParams, k-diffusion's keyword defaults, which is what every
// sampler_name of KSampler uses. Each sampler reads only the fields it has.
type Params struct {
	// Eta scales the fresh noise of the ancestral and SDE samplers (0: no noise).
	Eta float64
	// SNoise multiplies the fresh noise.
	SNoise float64
	// R is dpmpp_sde's intermediate point, as a fraction of the step in log SNR.
	R float64
	// Order is lms's number of derivatives (1 … 100).
	Order int
	// Adaptive holds dpm_adaptive's settings.
	Adaptive AdaptiveParams
	// ERSDE holds er_sde's settings.
	ERSDE ERSDEParams
	// SA holds sa_solver's settings.
	SA SAParams
}

// AdaptiveParams are sample_dpm_adaptive's keyword arguments: the embedded
// DPM-Solver-2/3 pair, its error tolerances, the first step size in t = −log σ, the PID
// controller's coefficients and acceptance threshold, and ancestral noise.
type AdaptiveParams struct {
	Order                  int // 2 or 3
	RTol, ATol, HInit      float64
	PCoeff, ICoeff, DCoeff float64
	AcceptSafety           float64
	Eta, SNoise            float64
}

// ERSDEParams are sample_er_sde's: the number of stages (1 … 3) and the noise scaler.
// ReverseTimeEta ≥ 0 selects the reverse-time SDE scaler x^(eta+1) (the
// SamplerER_SDE node's "Reverse-time SDE" and "ODE" solver types); a negative value keeps
// ER-SDE's own scaler x·(exp(x^0.3) + 10).
type ERSDEParams struct {
	MaxStage       int
	ReverseTimeEta float64
	SNoise         float64
}

// SAParams are sample_sa_solver's: predictor and corrector orders, PECE mode, the
// simple order-2 coefficients, and the stochasticity τ(σ) = Eta for sigmas within
// [EndSigma, StartSigma] and 0 outside (get_tau_interval_func). Interval false takes
// the interval from the run's model sampling at 20 % and 80 % of its range, with
// Eta 1, as sa_solver does by default.
type SAParams struct {
	PredictorOrder, CorrectorOrder int
	UsePECE, SimpleOrder2          bool
	Interval                       bool
	StartSigma, EndSigma, Eta      float64
	SNoise                         float64
}

// DefaultParams returns k-diffusion's defaults, with which ComfyUI runs every
// sampler_name.
func DefaultParams() Params {
	return Params{
		Eta: 1, SNoise: 1, R: 0.5, Order: 4,
		Adaptive: AdaptiveParams{Order: 3, RTol: 0.05, ATol: 0.0078, HInit: 0.05, ICoeff: 1, AcceptSafety: 0.81, SNoise: 1},
		ERSDE:    ERSDEParams{MaxStage: 3, ReverseTimeEta: -1, SNoise: 1},
		SA:       SAParams{PredictorOrder: 3, CorrectorOrder: 4, SNoise: 1},
	}
}

// WithParams returns the sampler set to run with p (a Sampler* node's SAMPLER).
func (s Sampler) WithParams(p Params) Sampler {
	s.Params = &p
	return s
}

// params returns the settings of this run.
func (o *Options) params() Params {
	if o.run != nil {
		return *o.run
	}
	return DefaultParams()
}

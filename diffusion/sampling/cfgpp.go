package sampling

import "context"

// The CFG++ samplers (Chung et al. 2024) as ComfyUI 0.3.64 ships them: they step with the
// unconditional prediction where the plain samplers use the guided one, which the Model
// returns as its second result.

// denoiseBoth calls the model and requires the unconditional prediction.
func denoiseBoth(ctx context.Context, m Model, x []float32, sigma float32) (den, uncond []float32, err error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	den, uncond, err = m.Denoise(ctx, x, sigma)
	if err == nil && uncond == nil {
		uncond = den // without guidance the two predictions coincide
	}
	return den, uncond, err
}

// denoiseBothInto is denoiseBoth writing the estimate into dst when m is an IntoModel
// (then the unconditional prediction is the model's step buffer, valid until its next
// call); another Model returns new slices of its own.
func denoiseBothInto(ctx context.Context, m Model, dst, x []float32, sigma float32) (den, uncond []float32, err error) {
	im, ok := m.(IntoModel)
	if !ok {
		return denoiseBoth(ctx, m, x, sigma)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if uncond, err = im.DenoiseInto(ctx, dst, x, sigma); err != nil {
		return nil, nil, err
	}
	if uncond == nil {
		uncond = dst // without guidance the two predictions coincide
	}
	return dst, uncond, nil
}

func sampleEulerCFGPP(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	return eulerAncestralCFGPP(ctx, m, x, sigmas, o, 0, 0)
}

func sampleEulerAncestralCFGPP(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	p := o.params()
	return eulerAncestralCFGPP(ctx, m, x, sigmas, o, float32(p.Eta), float32(p.SNoise))
}

// eulerAncestralCFGPP is a DDIM-style step in the α-scaled space: the noise direction
// comes from the unconditional prediction; eta 0 is euler_cfg_pp. x steps in place; the
// denoised estimates and the default noise come in buffers made once.
func eulerAncestralCFGPP(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options, eta, sNoise float32) ([]float32, error) {
	flow := o.isFlow()
	var noise NoiseSampler
	if eta > 0 && sNoise > 0 {
		noise = o.gaussianReused(len(x))
	}
	buf := make([]float32, len(x))
	for i := 0; i+1 < len(sigmas); i++ {
		s, sNext := sigmas[i], sigmas[i+1]
		den, unc, err := denoiseBothInto(ctx, m, buf, x, s)
		if err != nil {
			return nil, err
		}
		o.step(i, den, x)
		if sNext == 0 {
			copy(x, den)
			continue
		}
		alphaS := s * exp32(halfLogSNR(s, flow))
		alphaT := sNext * exp32(halfLogSNR(sNext, flow))
		down, up := ancestralStep(s/alphaS, sNext/alphaT, eta)
		down = alphaT * down
		for k := range x {
			scaled := alphaS * unc[k]
			d := (x[k] - scaled) / s // toD
			x[k] = alphaT*den[k] + down*d
		}
		if eta > 0 && sNoise > 0 {
			n := noise(s, sNext)
			for k := range x {
				x[k] = x[k] + alphaT*n[k]*sNoise*up
			}
		}
	}
	return x, nil
}

// sampleDPMPP2SAncestralCFGPP is DPM-Solver++(2S) ancestral with the CFG++ correction
// (x shifted by denoised − uncond before each stage).
func sampleDPMPP2SAncestralCFGPP(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	noise := o.gaussian(len(x))
	for i := 0; i+1 < len(sigmas); i++ {
		s, sNext := sigmas[i], sigmas[i+1]
		den, unc, err := denoiseBoth(ctx, m, x, s)
		if err != nil {
			return nil, err
		}
		down, up := ancestralStep(s, sNext, 1)
		o.step(i, den, x)
		out := make([]float32, len(x))
		if down == 0 {
			d := toD(x, unc, s)
			for k := range x {
				out[k] = den[k] + d[k]*down
			}
		} else {
			t, tNext := -log32(s), -log32(down)
			h := tNext - t
			st := t + 0.5*h
			c1, c2 := exp32(-st)/exp32(-t), expm132(-h*0.5)
			x2 := make([]float32, len(x))
			for k := range x {
				x2[k] = c1*(x[k]+(den[k]-unc[k])) - c2*den[k]
			}
			// Upstream keeps the uncond of the latest model call: from here on it is
			// the second stage's.
			den2, unc2, err := denoiseBoth(ctx, m, x2, exp32(-st))
			if err != nil {
				return nil, err
			}
			unc = unc2
			c1, c2 = exp32(-tNext)/exp32(-t), expm132(-h)
			for k := range x {
				out[k] = c1*(x[k]+(den[k]-unc[k])) - c2*den2[k]
			}
		}
		if sNext > 0 {
			n := noise(s, sNext)
			for k := range out {
				out[k] = out[k] + n[k]*up
			}
		}
		x = out
	}
	return x, nil
}

// sampleDPMPP2MCFGPP is DPM-Solver++(2M) with the CFG++ correction.
func sampleDPMPP2MCFGPP(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	var oldUnc []float32
	for i := 0; i+1 < len(sigmas); i++ {
		den, unc, err := denoiseBoth(ctx, m, x, sigmas[i])
		if err != nil {
			return nil, err
		}
		o.step(i, den, x)
		t, tNext := -log32(sigmas[i]), -log32(sigmas[i+1])
		h := tNext - t
		e := exp32(-h)
		out := make([]float32, len(x))
		if oldUnc == nil || sigmas[i+1] == 0 {
			for k := range x {
				mix := -e * unc[k]
				out[k] = den[k] + mix + e*x[k]
			}
		} else {
			hLast := t - (-log32(sigmas[i-1]))
			r := hLast / h
			c := expm132(-h) * (1 / (2 * r))
			for k := range x {
				mix := -e*unc[k] - c*(den[k]-oldUnc[k])
				out[k] = den[k] + mix + e*x[k]
			}
		}
		x, oldUnc = out, unc
	}
	return x, nil
}

// EulerPP is the SamplerEulerCFGpp node's "alternative" version (sample_euler_pp in
// comfy_extras/nodes_advanced_samplers.py), a sampler no sampler_name selects: Euler
// whose derivative is taken from x − denoised + uncond.
func EulerPP() Sampler {
	return Sampler{Name: "euler_pp", Func: sampleEulerPP, CFGPP: true}
}

func sampleEulerPP(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	for i := 0; i+1 < len(sigmas); i++ {
		s := sigmas[i]
		den, unc, err := denoiseBoth(ctx, m, x, s)
		if err != nil {
			return nil, err
		}
		o.step(i, den, x)
		dt := sigmas[i+1] - s
		out := make([]float32, len(x))
		for k := range x {
			d := ((x[k] - den[k] + unc[k]) - den[k]) / s
			out[k] = x[k] + d*dt
		}
		x = out
	}
	return x, nil
}

package sampling

import (
	"context"
	"errors"
	"math"
)

// DPM-Solver++ samplers (Lu et al. 2022) as ComfyUI 0.3.64 ships them, in half-log-SNR
// time λ = log(α/σ): −log σ for eps/v models, −logit σ for flow models.

// halfLogSNR maps sigma to λ.
func halfLogSNR(sigma float32, flow bool) float32 {
	if flow {
		return -log32(sigma / (1 - sigma))
	}
	return -log32(sigma)
}

// sigmaFromHalfLogSNR maps λ back to sigma.
func sigmaFromHalfLogSNR(l float32, flow bool) float32 {
	if flow {
		return float32(1 / (1 + math.Exp(float64(l))))
	}
	return exp32(-l)
}

// offsetFirstSigma replaces a first sigma of 1 (infinite λ) for flow models by the sigma
// at 0.01 % of the run, as ComfyUI's offset_first_sigma_for_snr does.
func offsetFirstSigma(sigmas []float32, o *Options) []float32 {
	if len(sigmas) <= 1 || !o.isFlow() || sigmas[0] < 1 {
		return sigmas
	}
	s := append([]float32(nil), sigmas...)
	s[0] = float32(o.ModelSampling.PercentToSigma(1e-4))
	return s
}

// sampleDPMPP2SAncestral is DPM-Solver++(2S) with ancestral noise; flow models take the
// rectified-flow variant.
func sampleDPMPP2SAncestral(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	// x steps in place; the denoised estimates (the second stage's after the first's
	// last use), the intermediate point and the default noise live in buffers made once.
	noise := o.gaussianReused(len(x))
	buf, mid := make([]float32, len(x)), make([]float32, len(x))
	flow := o.isFlow()
	p := o.params()
	eta, sNoise := float32(p.Eta), float32(p.SNoise)
	for i := 0; i+1 < len(sigmas); i++ {
		s, sNext := sigmas[i], sigmas[i+1]
		den, err := denoiseInto(ctx, m, buf, x, s)
		if err != nil {
			return nil, err
		}
		var down, up float32
		var alphaNext, alphaDown float32
		if flow {
			down = sNext * (1 + (sNext/s-1)*eta)
			alphaNext, alphaDown = 1-sNext, 1-down
			up = sqrt32(sNext*sNext - down*down*alphaNext*alphaNext/(alphaDown*alphaDown))
		} else {
			down, up = ancestralStep(s, sNext, eta)
		}
		o.step(i, den, x)
		switch {
		case (flow && sNext == 0) || (!flow && down == 0):
			dt := down - s
			for k := range x {
				d := (x[k] - den[k]) / s // toD
				x[k] = x[k] + d*dt
			}
		case flow:
			var sigmaS float32
			if s == 1 {
				sigmaS = 0.9999
			} else {
				lambda := func(v float32) float32 { return log32((1 - v) / v) }
				ti, td := lambda(s), lambda(down)
				h := td - ti
				sigmaS = float32(1 / (math.Exp(float64(ti+0.5*h)) + 1))
			}
			r := sigmaS / s
			for k := range x {
				mid[k] = r*x[k] + (1-r)*den[k]
			}
			d2, err := denoiseInto(ctx, m, buf, mid, sigmaS)
			if err != nil {
				return nil, err
			}
			rd := down / s
			for k := range x {
				x[k] = rd*x[k] + (1-rd)*d2[k]
			}
		default:
			t, tNext := -log32(s), -log32(down)
			h := tNext - t
			st := t + 0.5*h
			sigS := exp32(-st)
			c1, c2 := sigS/exp32(-t), expm132(-h*0.5)
			for k := range x {
				mid[k] = c1*x[k] - c2*den[k]
			}
			d2, err := denoiseInto(ctx, m, buf, mid, sigS)
			if err != nil {
				return nil, err
			}
			c1, c2 = exp32(-tNext)/exp32(-t), expm132(-h)
			for k := range x {
				x[k] = c1*x[k] - c2*d2[k]
			}
		}
		if sNext > 0 && (!flow || eta > 0) {
			n := noise(s, sNext)
			for k := range x {
				if flow {
					x[k] = alphaNext/alphaDown*x[k] + n[k]*sNoise*up
				} else {
					x[k] = x[k] + n[k]*sNoise*up
				}
			}
		}
	}
	return x, nil
}

// sampleDPMPPSDE is the stochastic DPM-Solver++ with an intermediate stage at
// Params.R of the step (1/2 by default) and Brownian-tree noise scaled by eta and
// s_noise.
func sampleDPMPPSDE(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	if len(sigmas) <= 1 {
		return x, nil
	}
	p := o.params()
	if p.R == 0 {
		return nil, errors.New("sampling: dpmpp_sde r must not be 0") // 1/(2r) in upstream
	}
	noise, err := o.brownian(sigmas, len(x))
	if err != nil {
		return nil, err
	}
	flow := o.isFlow()
	sigmas = offsetFirstSigma(sigmas, o)
	r, eta, sNoise := float32(p.R), float32(p.Eta), float32(p.SNoise)
	fac := 1 / (2 * p.R) // a Python float; it meets the tensors as float32
	keep, take := float32(1-fac), float32(fac)
	addNoise := eta > 0 && sNoise > 0
	for i := 0; i+1 < len(sigmas); i++ {
		s, sNext := sigmas[i], sigmas[i+1]
		den, err := denoise(ctx, m, x, s)
		if err != nil {
			return nil, err
		}
		o.step(i, den, x)
		if sNext == 0 {
			x = den
			continue
		}
		ls, lt := halfLogSNR(s, flow), halfLogSNR(sNext, flow)
		h := lt - ls
		ls1 := ls + r*h
		s1 := sigmaFromHalfLogSNR(ls1, flow)
		alphaS := s * exp32(ls)
		alphaS1 := s1 * exp32(ls1)
		alphaT := sNext * exp32(lt)

		sd, su := ancestralStep(exp32(-ls), exp32(-ls1), eta)
		h1 := -log32(sd) - ls
		a, b := alphaS1/alphaS*exp32(-h1), alphaS1*expm132(-h1)
		x2 := make([]float32, len(x))
		for k := range x {
			x2[k] = a*x[k] - b*den[k]
		}
		if addNoise {
			n := noise(s, s1)
			for k := range x2 {
				x2[k] = x2[k] + alphaS1*n[k]*sNoise*su
			}
		}
		den2, err := denoise(ctx, m, x2, s1)
		if err != nil {
			return nil, err
		}
		sd, su = ancestralStep(exp32(-ls), exp32(-lt), eta)
		h2 := -log32(sd) - ls
		a, b = alphaT/alphaS*exp32(-h2), alphaT*expm132(-h2)
		out := make([]float32, len(x))
		for k := range x {
			dd := keep*den[k] + take*den2[k]
			out[k] = a*x[k] - b*dd
		}
		if addNoise {
			n := noise(s, sNext)
			for k := range out {
				out[k] = out[k] + alphaT*n[k]*sNoise*su
			}
		}
		x = out
	}
	return x, nil
}

// sampleDPMPP2M is the deterministic second-order multistep DPM-Solver++(2M).
// It steps x in place; the denoised estimates alternate between two buffers (this
// step's and the previous one), so that with an IntoModel a step allocates nothing.
func sampleDPMPP2M(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	var old []float32
	bufs := [2][]float32{make([]float32, len(x)), make([]float32, len(x))}
	for i := 0; i+1 < len(sigmas); i++ {
		den, err := denoiseInto(ctx, m, bufs[i%2], x, sigmas[i])
		if err != nil {
			return nil, err
		}
		o.step(i, den, x)
		t, tNext := -log32(sigmas[i]), -log32(sigmas[i+1])
		h := tNext - t
		c1, c2 := exp32(-tNext)/exp32(-t), expm132(-h)
		if old == nil || sigmas[i+1] == 0 {
			for k := range x {
				x[k] = c1*x[k] - c2*den[k]
			}
		} else {
			hLast := t - (-log32(sigmas[i-1]))
			r := hLast / h
			a, b := 1+1/(2*r), 1/(2*r)
			for k := range x {
				dd := a*den[k] - b*old[k]
				x[k] = c1*x[k] - c2*dd
			}
		}
		old = den
	}
	return x, nil
}

func sampleDPMPP2MSDEMidpoint(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	return sampleDPMPP2MSDE(ctx, m, x, sigmas, o, false)
}

func sampleDPMPP2MSDEHeun(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	return sampleDPMPP2MSDE(ctx, m, x, sigmas, o, true)
}

// sampleDPMPP2MSDE is DPM-Solver++(2M) SDE with the midpoint or Heun correction.
func sampleDPMPP2MSDE(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options, heun bool) ([]float32, error) {
	if len(sigmas) <= 1 {
		return x, nil
	}
	noise, err := o.brownian(sigmas, len(x))
	if err != nil {
		return nil, err
	}
	flow := o.isFlow()
	sigmas = offsetFirstSigma(sigmas, o)
	p := o.params()
	// eta + 1 is Python float arithmetic; each meets the tensors as float32.
	eta, eta1, sNoise := float32(p.Eta), float32(p.Eta+1), float32(p.SNoise)
	var old []float32
	var h, hLast float32
	haveH := false
	for i := 0; i+1 < len(sigmas); i++ {
		s, sNext := sigmas[i], sigmas[i+1]
		den, err := denoise(ctx, m, x, s)
		if err != nil {
			return nil, err
		}
		o.step(i, den, x)
		if sNext == 0 {
			x = den
		} else {
			ls, lt := halfLogSNR(s, flow), halfLogSNR(sNext, flow)
			h = lt - ls
			hEta := h * eta1
			alphaT := sNext * exp32(lt)
			a := sNext / s * exp32(-h*eta)
			b := alphaT * -expm132(-hEta)
			out := make([]float32, len(x))
			for k := range x {
				out[k] = a*x[k] + b*den[k]
			}
			if old != nil {
				r := hLast / h
				var c float32
				if heun {
					c = alphaT * (-expm132(-hEta)/(-hEta) + 1) * (1 / r)
				} else {
					c = 0.5 * alphaT * -expm132(-hEta) * (1 / r)
				}
				for k := range out {
					out[k] = out[k] + c*(den[k]-old[k])
				}
			}
			if eta > 0 && sNoise > 0 {
				n := noise(s, sNext)
				c := sNext * sqrt32(-expm132(-2*h*eta))
				for k := range out {
					out[k] = out[k] + n[k]*c*sNoise
				}
			}
			x = out
			haveH = true
		}
		old = den
		if haveH {
			hLast = h
		}
	}
	return x, nil
}

// sampleDPMPP3MSDE is DPM-Solver++(3M) SDE: third-order multistep once two previous
// estimates exist.
func sampleDPMPP3MSDE(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	if len(sigmas) <= 1 {
		return x, nil
	}
	noise, err := o.brownian(sigmas, len(x))
	if err != nil {
		return nil, err
	}
	flow := o.isFlow()
	sigmas = offsetFirstSigma(sigmas, o)
	p := o.params()
	// eta + 1 is Python float arithmetic; each meets the tensors as float32.
	eta, eta1, sNoise := float32(p.Eta), float32(p.Eta+1), float32(p.SNoise)
	var den1, den2 []float32
	var h, h1, h2 float32
	var have1, have2 bool
	for i := 0; i+1 < len(sigmas); i++ {
		s, sNext := sigmas[i], sigmas[i+1]
		den, err := denoise(ctx, m, x, s)
		if err != nil {
			return nil, err
		}
		o.step(i, den, x)
		stepped := false
		if sNext == 0 {
			x = den
		} else {
			stepped = true
			ls, lt := halfLogSNR(s, flow), halfLogSNR(sNext, flow)
			h = lt - ls
			hEta := h * eta1
			alphaT := sNext * exp32(lt)
			a := sNext / s * exp32(-h*eta)
			b := alphaT * -expm132(-hEta)
			out := make([]float32, len(x))
			for k := range x {
				out[k] = a*x[k] + b*den[k]
			}
			phi2 := expm132(-hEta)/hEta + 1
			switch {
			case have2:
				r0, r1 := h1/h, h2/h
				p3 := phi2/hEta - 0.5
				for k := range out {
					d10 := (den[k] - den1[k]) / r0
					d11 := (den1[k] - den2[k]) / r1
					d1 := d10 + (d10-d11)*r0/(r0+r1)
					d2 := (d10 - d11) / (r0 + r1)
					out[k] = out[k] + (alphaT*phi2)*d1 - (alphaT*p3)*d2
				}
			case have1:
				r := h1 / h
				for k := range out {
					out[k] = out[k] + (alphaT*phi2)*((den[k]-den1[k])/r)
				}
			}
			if eta > 0 && sNoise > 0 {
				n := noise(s, sNext)
				c := sNext * sqrt32(-expm132(-2*h*eta))
				for k := range out {
					out[k] = out[k] + n[k]*c*sNoise
				}
			}
			x = out
		}
		den1, den2 = den, den1
		// h keeps its last value on a final denoising step, as upstream.
		if stepped || have1 {
			h1, h2 = h, h1
			have1, have2 = true, have1
		}
	}
	return x, nil
}

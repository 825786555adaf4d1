package sampling

import (
	"context"
	"math"
)

// res_multistep (the second-order multistep exponential integrator of Zhang et al.,
// arXiv 2308.02157) and gradient_estimation (Permenter & Yuan), with their CFG++ and
// ancestral forms, as ComfyUI 0.3.64 ships them.

func sampleResMultistep(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	return resMultistep(ctx, m, x, sigmas, o, 0, false)
}

func sampleResMultistepCFGPP(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	return resMultistep(ctx, m, x, sigmas, o, 0, true)
}

func sampleResMultistepAncestral(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	return resMultistep(ctx, m, x, sigmas, o, 1, false)
}

func sampleResMultistepAncestralCFGPP(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	return resMultistep(ctx, m, x, sigmas, o, 1, true)
}

// nanToZero is torch.nan_to_num(v, nan=0.0) for a finite-or-NaN scalar.
func nanToZero(v float32) float32 {
	if v != v {
		return 0
	}
	return v
}

func resMultistep(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options, eta float32, cfgpp bool) ([]float32, error) {
	noise := o.gaussian(len(x))
	phi1 := func(t float32) float32 { return expm132(t) / t }
	phi2 := func(t float32) float32 { return (phi1(t) - 1) / t }
	var old []float32
	var oldDown float32
	for i := 0; i+1 < len(sigmas); i++ {
		s, sNext := sigmas[i], sigmas[i+1]
		den, unc, err := denoiseBoth(ctx, m, x, s)
		if err != nil {
			return nil, err
		}
		down, up := ancestralStep(s, sNext, eta)
		o.step(i, den, x)
		out := make([]float32, len(x))
		switch {
		case down == 0 || old == nil:
			if cfgpp {
				d := toD(x, unc, s)
				for k := range x {
					out[k] = den[k] + d[k]*down
				}
			} else {
				d := toD(x, den, s)
				for k := range x {
					out[k] = x[k] + d[k]*(down-s)
				}
			}
		default:
			t, tOld, tNext, tPrev := -log32(s), -log32(oldDown), -log32(down), -log32(sigmas[i-1])
			h := tNext - t
			c2 := (tPrev - tOld) / h
			p1, p2 := phi1(-h), phi2(-h)
			b1 := nanToZero(p1 - p2/c2)
			b2 := nanToZero(p2 / c2)
			e := exp32(-h)
			cur := den
			if cfgpp {
				cur = unc
			}
			for k := range x {
				xk := x[k]
				if cfgpp {
					xk = xk + (den[k] - unc[k])
				}
				out[k] = e*xk + h*(b1*cur[k]+b2*old[k])
			}
		}
		if sNext > 0 {
			n := noise(s, sNext)
			for k := range out {
				out[k] = out[k] + n[k]*up
			}
		}
		x = out
		if cfgpp {
			old = unc
		} else {
			old = den
		}
		oldDown = down
	}
	return x, nil
}

func sampleGradientEstimation(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	return gradientEstimation(ctx, m, x, sigmas, o, false)
}

func sampleGradientEstimationCFGPP(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	return gradientEstimation(ctx, m, x, sigmas, o, true)
}

// gradientEstimation adds (γ−1)·(d − d_prev)·dt to each Euler step after the first (γ = 2).
func gradientEstimation(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options, cfgpp bool) ([]float32, error) {
	const gamma = 2.0
	var oldD []float32
	for i := 0; i+1 < len(sigmas); i++ {
		s, sNext := sigmas[i], sigmas[i+1]
		den, unc, err := denoiseBoth(ctx, m, x, s)
		if err != nil {
			return nil, err
		}
		var d []float32
		if cfgpp {
			d = toD(x, unc, s)
		} else {
			d = toD(x, den, s)
		}
		o.step(i, den, x)
		dt := sNext - s
		if sNext == 0 {
			x = den
		} else {
			out := make([]float32, len(x))
			for k := range x {
				if cfgpp {
					out[k] = den[k] + d[k]*sNext
				} else {
					out[k] = x[k] + d[k]*dt
				}
			}
			if i >= 1 {
				for k := range out {
					out[k] = out[k] + float32(gamma-1)*(d[k]-oldD[k])*dt
				}
			}
			x = out
		}
		oldD = d
	}
	return x, nil
}

// sampleERSDE is the extended reverse-time SDE solver (VP ER-SDE-Solver-3, arXiv
// 2309.06169) with ComfyUI's default noise scaler x·(e^(x^0.3) + 10) and 200-point
// quadrature; Params.ERSDE sets the stages, s_noise and the reverse-time scaler.
func sampleERSDE(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	const points = 200
	p := o.params().ERSDE
	maxStage, sNoise := p.MaxStage, float32(p.SNoise)
	noise := o.gaussian(len(x))
	flow := o.isFlow()
	scaler := func(v float32) float32 { return v * (exp32(float32(math.Pow(float64(v), 0.3))) + 10) }
	if p.ReverseTimeEta >= 0 {
		// SamplerER_SDE's reverse-time SDE: x^(eta+1), a float32 pow.
		e := float64(float32(p.ReverseTimeEta + 1))
		scaler = func(v float32) float32 { return float32(math.Pow(float64(v), e)) }
	}
	sigmas = offsetFirstSigma(sigmas, o)
	lambdas := make([]float32, len(sigmas))
	for i, s := range sigmas {
		lambdas[i] = exp32(-halfLogSNR(s, flow))
	}
	var old, oldD []float32
	for i := 0; i+1 < len(sigmas); i++ {
		s, sNext := sigmas[i], sigmas[i+1]
		den, err := denoise(ctx, m, x, s)
		if err != nil {
			return nil, err
		}
		o.step(i, den, x)
		stage := min(maxStage, i+1)
		if sNext == 0 {
			x, old = den, den
			continue
		}
		ls, lt := lambdas[i], lambdas[i+1]
		alphaS, alphaT := s/ls, sNext/lt
		rAlpha := alphaT / alphaS
		r := scaler(lt) / scaler(ls)
		out := make([]float32, len(x))
		for k := range x {
			out[k] = rAlpha*r*x[k] + alphaT*(1-r)*den[k]
		}
		if stage >= 2 {
			dt := lt - ls
			step := -dt / points
			var sum1, sumU float64
			for p := 0; p < points; p++ {
				pos := lt + float32(p)*step
				sp := scaler(pos)
				sum1 += float64(1 / sp)
				sumU += float64((pos - ls) / sp)
			}
			s1 := float32(sum1) * step
			dd := make([]float32, len(x))
			for k := range x {
				dd[k] = (den[k] - old[k]) / (ls - lambdas[i-1])
			}
			c := alphaT * (dt + s1*scaler(lt))
			for k := range out {
				out[k] = out[k] + c*dd[k]
			}
			if stage >= 3 {
				su := float32(sumU) * step
				cu := alphaT * (dt*dt/2 + su*scaler(lt))
				den3 := (ls - lambdas[i-2]) / 2
				for k := range out {
					out[k] = out[k] + cu*((dd[k]-oldD[k])/den3)
				}
			}
			oldD = dd
		}
		if sNoise > 0 {
			n := noise(s, sNext)
			c := nanToZero(sqrt32(lt*lt - ls*ls*r*r))
			for k := range out {
				out[k] = out[k] + alphaT*n[k]*sNoise*c
			}
		}
		x, old = out, den
	}
	return x, nil
}

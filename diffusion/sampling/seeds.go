package sampling

import "context"

// SEEDS-2 and SEEDS-3 (stochastic explicit exponential derivative-free solvers, VP data
// prediction, arXiv 2305.14267) as ComfyUI 0.3.64 ships them, eta 1.

func phi1(h float32) float32 { return expm132(h) }
func phi2(h float32) float32 { return (expm132(h) - h) / h }

func sampleSEEDS2(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	const r, eta = 0.5, 1
	noise := o.gaussian(len(x))
	flow := o.isFlow()
	sigmas = offsetFirstSigma(sigmas, o)
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
		hEta := h * (eta + 1)
		ls1 := lerp32(ls, lt, r)
		s1 := sigmaFromHalfLogSNR(ls1, flow)
		alphaS1 := s1 * exp32(ls1)
		alphaT := sNext * exp32(lt)

		a, b := s1/s*exp32(-r*h*eta), alphaS1*phi1(-r*hEta)
		n1 := noise(s, s1)
		c1 := sqrt32(-expm132(-2 * r * h * eta))
		x2 := make([]float32, len(x))
		sde := make([]float32, len(x))
		for k := range x {
			x2[k] = a*x[k] - b*den[k]
			sde[k] = c1 * n1[k]
			x2[k] = x2[k] + sde[k]*s1
		}
		den2, err := denoise(ctx, m, x2, s1)
		if err != nil {
			return nil, err
		}
		a, b = sNext/s*exp32(-h*eta), alphaT*phi1(-hEta)
		seg := (r - 1) * h * eta
		es, c2 := exp32(seg), sqrt32(-expm132(seg*2))
		n2 := noise(s1, sNext)
		out := make([]float32, len(x))
		for k := range x {
			dd := lerp32(den[k], den2[k], 1/(2*r))
			out[k] = a*x[k] - b*dd
			nk := sde[k]*es + c2*n2[k]
			out[k] = out[k] + nk*sNext
		}
		x = out
	}
	return x, nil
}

func sampleSEEDS3(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	const eta = 1
	const r1, r2 = float32(1.0 / 3), float32(2.0 / 3)
	noise := o.gaussian(len(x))
	flow := o.isFlow()
	sigmas = offsetFirstSigma(sigmas, o)
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
		hEta := h * (eta + 1)
		ls1, ls2 := lerp32(ls, lt, r1), lerp32(ls, lt, r2)
		s1, s2 := sigmaFromHalfLogSNR(ls1, flow), sigmaFromHalfLogSNR(ls2, flow)
		alphaS1, alphaS2 := s1*exp32(ls1), s2*exp32(ls2)
		alphaT := sNext * exp32(lt)

		// Stage 1.
		a, b := s1/s*exp32(-r1*h*eta), alphaS1*phi1(-r1*hEta)
		n := noise(s, s1)
		c := sqrt32(-expm132(-2 * r1 * h * eta))
		x2 := make([]float32, len(x))
		sde := make([]float32, len(x))
		for k := range x {
			x2[k] = a*x[k] - b*den[k]
			sde[k] = c * n[k]
			x2[k] = x2[k] + sde[k]*s1
		}
		den2, err := denoise(ctx, m, x2, s1)
		if err != nil {
			return nil, err
		}
		// Stage 2.
		a32 := float32(2.0/3/(1.0/3)) * phi2(-r2*hEta)
		a31 := phi1(-r2*hEta) - a32
		a = s2 / s * exp32(-r2*h*eta)
		seg := (r1 - r2) * h * eta
		es, cs := exp32(seg), sqrt32(-expm132(seg*2))
		n = noise(s1, s2)
		x3 := make([]float32, len(x))
		for k := range x {
			x3[k] = a*x[k] - alphaS2*(a31*den[k]+a32*den2[k])
			sde[k] = sde[k]*es + cs*n[k]
			x3[k] = x3[k] + sde[k]*s2
		}
		den3, err := denoise(ctx, m, x3, s2)
		if err != nil {
			return nil, err
		}
		// Stage 3.
		b3 := phi2(-hEta) / r2
		b1 := phi1(-hEta) - b3
		a = sNext / s * exp32(-h*eta)
		seg = (r2 - 1) * h * eta
		es, cs = exp32(seg), sqrt32(-expm132(seg*2))
		n = noise(s2, sNext)
		out := make([]float32, len(x))
		for k := range x {
			out[k] = a*x[k] - alphaT*(b1*den[k]+b3*den3[k])
			sde[k] = sde[k]*es + cs*n[k]
			out[k] = out[k] + sde[k]*sNext
		}
		x = out
	}
	return x, nil
}

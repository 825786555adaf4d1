package sampling

import "context"

// The Euler family and the other first-order / two-stage samplers of k-diffusion as
// ComfyUI 0.3.64 ships them (comfy/k_diffusion/sampling.py): no churn; eta and s_noise
// from Params where a Sampler* node sets them.

// sampleEuler is Algorithm 2 of Karras et al. (2022) with Euler steps. ComfyUI's "ddim"
// is the same sampler (with random inpaint noise, which only matters with a mask).
// It steps x in place and reuses one buffer for the denoised estimates, so that with
// an IntoModel a step allocates nothing.
func sampleEuler(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	buf := make([]float32, len(x))
	for i := 0; i+1 < len(sigmas); i++ {
		den, err := denoiseInto(ctx, m, buf, x, sigmas[i])
		if err != nil {
			return nil, err
		}
		o.step(i, den, x)
		sigma, dt := sigmas[i], sigmas[i+1]-sigmas[i]
		for k := range x {
			d := (x[k] - den[k]) / sigma // toD
			x[k] = x[k] + d*dt
		}
	}
	return x, nil
}

// sampleEulerAncestral steps down to sigma_down with Euler and adds fresh noise up to
// the next sigma; flow models take the rectified-flow variant.
// Outside flow models it steps x in place with one reused buffer for the denoised
// estimates and one for the default noise, so that with an IntoModel a step allocates
// nothing.
func sampleEulerAncestral(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	noise := o.gaussianReused(len(x))
	buf := make([]float32, len(x))
	p := o.params()
	eta, sNoise := float32(p.Eta), float32(p.SNoise)
	for i := 0; i+1 < len(sigmas); i++ {
		den, err := denoiseInto(ctx, m, buf, x, sigmas[i])
		if err != nil {
			return nil, err
		}
		if o.isFlow() {
			o.step(i, den, x)
			if sigmas[i+1] == 0 {
				copy(x, den) // rfAncestralStep's result at the end: den itself
				continue
			}
			x = rfAncestralStep(x, den, sigmas[i], sigmas[i+1], noise, eta, sNoise)
			continue
		}
		down, up := ancestralStep(sigmas[i], sigmas[i+1], eta)
		o.step(i, den, x)
		if down == 0 {
			copy(x, den)
			continue
		}
		sigma, dt := sigmas[i], down-sigmas[i]
		n := noise(sigmas[i], sigmas[i+1])
		for k := range x {
			d := (x[k] - den[k]) / sigma // toD
			x[k] = (x[k] + d*dt) + n[k]*sNoise*up
		}
	}
	return x, nil
}

// rfAncestralStep is euler_ancestral's step for flow models: interpolate towards the
// denoised estimate down to sigma_down, then rescale and renoise to sigmaNext (eta 0:
// neither).
func rfAncestralStep(x, den []float32, sigma, sigmaNext float32, noise NoiseSampler, eta, sNoise float32) []float32 {
	if sigmaNext == 0 {
		return den
	}
	ratio := 1 + (sigmaNext/sigma-1)*eta
	down := sigmaNext * ratio
	alphaNext := 1 - sigmaNext
	alphaDown := 1 - down
	renoise := sqrt32(sigmaNext*sigmaNext - down*down*alphaNext*alphaNext/(alphaDown*alphaDown))
	r := down / sigma
	out := make([]float32, len(x))
	for k := range x {
		out[k] = r*x[k] + (1-r)*den[k]
	}
	if !(eta > 0) {
		return out
	}
	n := noise(sigma, sigmaNext)
	scale := alphaNext / alphaDown
	for k := range out {
		out[k] = scale*out[k] + n[k]*sNoise*renoise
	}
	return out
}

// sampleHeun is Algorithm 2 of Karras et al. with Heun (trapezoidal) steps and a final
// Euler step to sigma 0.
func sampleHeun(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	// x steps in place; the derivative, the Euler predictor and the denoised estimates
	// (the predictor's after the first's last use) live in buffers made once.
	buf, d, x2 := make([]float32, len(x)), make([]float32, len(x)), make([]float32, len(x))
	for i := 0; i+1 < len(sigmas); i++ {
		den, err := denoiseInto(ctx, m, buf, x, sigmas[i])
		if err != nil {
			return nil, err
		}
		for k := range x {
			d[k] = (x[k] - den[k]) / sigmas[i] // toD
		}
		o.step(i, den, x)
		dt := sigmas[i+1] - sigmas[i]
		if sigmas[i+1] == 0 {
			for k := range x {
				x[k] = x[k] + d[k]*dt
			}
			continue
		}
		for k := range x {
			x2[k] = x[k] + d[k]*dt
		}
		den2, err := denoiseInto(ctx, m, buf, x2, sigmas[i+1])
		if err != nil {
			return nil, err
		}
		s2 := sigmas[i+1]
		for k := range x {
			d2 := (x2[k] - den2[k]) / s2 // toD
			x[k] = x[k] + (d[k]+d2)/2*dt
		}
	}
	return x, nil
}

// sampleDPM2 takes a DPM-Solver-2 step through the log-midpoint sigma.
// It steps x in place with buffers made once (dpm2Buffers).
func sampleDPM2(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	b := newDPM2Buffers(len(x))
	for i := 0; i+1 < len(sigmas); i++ {
		den, err := denoiseInto(ctx, m, b.den, x, sigmas[i])
		if err != nil {
			return nil, err
		}
		toDInto(b.d, x, den, sigmas[i])
		o.step(i, den, x)
		if sigmas[i+1] == 0 {
			axpyInPlace(x, b.d, sigmas[i+1]-sigmas[i])
			continue
		}
		if err := dpm2Step(ctx, m, x, sigmas[i], sigmas[i+1], b); err != nil {
			return nil, err
		}
	}
	return x, nil
}

// dpm2Buffers are what the DPM-Solver-2 samplers reuse from step to step: the denoised
// estimates, the derivative d at sigma and the midpoint x2.
type dpm2Buffers struct{ den, d, x2 []float32 }

func newDPM2Buffers(n int) dpm2Buffers {
	return dpm2Buffers{den: make([]float32, n), d: make([]float32, n), x2: make([]float32, n)}
}

// dpm2Step moves x in place from sigma to target with the derivative taken at the
// geometric midpoint; b.d holds the derivative at sigma.
func dpm2Step(ctx context.Context, m Model, x []float32, sigma, target float32, b dpm2Buffers) error {
	mid := exp32(lerp32(log32(sigma), log32(target), 0.5))
	dt := mid - sigma
	for k := range x {
		b.x2[k] = x[k] + b.d[k]*dt // axpy
	}
	den2, err := denoiseInto(ctx, m, b.den, b.x2, mid)
	if err != nil {
		return err
	}
	dt = target - sigma
	for k := range x {
		d2 := (b.x2[k] - den2[k]) / mid // toD
		x[k] = x[k] + d2*dt
	}
	return nil
}

// toDInto is toD into d.
func toDInto(d, x, denoised []float32, sigma float32) {
	for i := range x {
		d[i] = (x[i] - denoised[i]) / sigma
	}
}

// axpyInPlace is axpy into x.
func axpyInPlace(x, d []float32, dt float32) {
	for k := range x {
		x[k] = x[k] + d[k]*dt
	}
}

// lerp32 is torch.lerp: a + w·(b − a) for |w| < 0.5, else b − (b − a)·(1 − w), which
// is exact at w = 1.
func lerp32(a, b, w float32) float32 {
	if w > -0.5 && w < 0.5 {
		return a + w*(b-a)
	}
	return b - (b-a)*(1-w)
}

// sampleDPM2Ancestral is DPM-Solver-2 down to sigma_down plus fresh noise; flow models
// take the rectified-flow variant.
func sampleDPM2Ancestral(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	noise := o.gaussianReused(len(x))
	b := newDPM2Buffers(len(x))
	for i := 0; i+1 < len(sigmas); i++ {
		den, err := denoiseInto(ctx, m, b.den, x, sigmas[i])
		if err != nil {
			return nil, err
		}
		var down, up, scale float32 = 0, 0, 1
		if o.isFlow() {
			ratio := 1 + (sigmas[i+1]/sigmas[i] - 1)
			down = sigmas[i+1] * ratio
			alphaNext, alphaDown := 1-sigmas[i+1], 1-down
			up = sqrt32(sigmas[i+1]*sigmas[i+1] - down*down*alphaNext*alphaNext/(alphaDown*alphaDown))
			scale = alphaNext / alphaDown
		} else {
			down, up = ancestralStep(sigmas[i], sigmas[i+1], 1)
		}
		o.step(i, den, x)
		toDInto(b.d, x, den, sigmas[i])
		if down == 0 {
			axpyInPlace(x, b.d, down-sigmas[i])
			continue
		}
		if err := dpm2Step(ctx, m, x, sigmas[i], down, b); err != nil {
			return nil, err
		}
		n := noise(sigmas[i], sigmas[i+1])
		for k := range x {
			if o.isFlow() {
				x[k] = scale*x[k] + n[k]*up
			} else {
				x[k] = x[k] + n[k]*up
			}
		}
	}
	return x, nil
}

// sampleLMS is the linear multistep method of order up to Params.Order (4 by default) on
// the sigma axis, with coefficients from integrating the Lagrange basis polynomials
// exactly.
func sampleLMS(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	order := max(o.params().Order, 1)
	var ds [][]float32
	for i := 0; i+1 < len(sigmas); i++ {
		den, err := denoise(ctx, m, x, sigmas[i])
		if err != nil {
			return nil, err
		}
		ds = append(ds, toD(x, den, sigmas[i]))
		if len(ds) > order {
			ds = ds[1:]
		}
		o.step(i, den, x)
		if sigmas[i+1] == 0 {
			x = den
			continue
		}
		cur := min(i+1, order)
		acc := make([]float32, len(x))
		for j := 0; j < cur; j++ {
			c := float32(lmsCoeff(cur, sigmas, i, j))
			dj := ds[len(ds)-1-j]
			for k := range acc {
				acc[k] += c * dj[k]
			}
		}
		for k := range x {
			acc[k] = x[k] + acc[k]
		}
		x = acc
	}
	return x, nil
}

// lmsCoeff integrates the j-th Lagrange basis polynomial over the nodes
// t[i], t[i−1], ..., t[i−order+1] from t[i] to t[i+1] (k-diffusion's
// linear_multistep_coeff, which integrates with scipy's quad to a relative 1e-4; a
// polynomial of degree < 8 is integrated exactly by 4-point Gauss–Legendre, a higher one
// by expanding it).
func lmsCoeff(order int, t []float32, i, j int) float64 {
	if order > 8 {
		return lmsCoeffExpanded(order, t, i, j)
	}
	basis := func(tau float64) float64 {
		prod := 1.0
		for k := 0; k < order; k++ {
			if k == j {
				continue
			}
			prod *= (tau - float64(t[i-k])) / (float64(t[i-j]) - float64(t[i-k]))
		}
		return prod
	}
	a, b := float64(t[i]), float64(t[i+1])
	nodes := [4]float64{-0.8611363115940526, -0.3399810435848563, 0.3399810435848563, 0.8611363115940526}
	weights := [4]float64{0.3478548451374538, 0.6521451548625461, 0.6521451548625461, 0.3478548451374538}
	half, mid := (b-a)/2, (a+b)/2
	sum := 0.0
	for q := range nodes {
		sum += weights[q] * basis(mid+half*nodes[q])
	}
	return sum * half
}

// sampleDDPM is the DDPM ancestral step on the eps parameterisation (generic step sampler
// with DDPMSampler_step).
func sampleDDPM(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	// x steps in place; the denoised estimates and the default noise come in buffers
	// made once.
	noise := o.gaussianReused(len(x))
	buf := make([]float32, len(x))
	for i := 0; i+1 < len(sigmas); i++ {
		s, sNext := sigmas[i], sigmas[i+1]
		den, err := denoiseInto(ctx, m, buf, x, s)
		if err != nil {
			return nil, err
		}
		o.step(i, den, x)
		scaleIn := sqrt32(1 + s*s)
		ac := 1 / (s*s + 1)
		acPrev := 1 / (sNext*sNext + 1)
		alpha := ac / acPrev
		k1 := sqrt32(1 / alpha)
		k2 := (1 - alpha) / sqrt32(1-ac)
		for k := range x {
			eps := (x[k] - den[k]) / s
			x[k] = k1 * (x[k]/scaleIn - k2*eps)
		}
		if sNext > 0 {
			c := sqrt32((1 - alpha) * (1 - acPrev) / (1 - ac))
			n := noise(s, sNext)
			for k := range x {
				x[k] += c * n[k]
			}
			sc := sqrt32(1 + sNext*sNext)
			for k := range x {
				x[k] *= sc
			}
		}
	}
	return x, nil
}

// sampleLCM jumps to the denoised estimate and renoises it to the next sigma with the
// model's noise scaling (latent consistency models).
func sampleLCM(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	// x is rewritten in place from the denoised estimate; that estimate and the default
	// noise come in buffers made once.
	noise := o.gaussianReused(len(x))
	buf := make([]float32, len(x))
	for i := 0; i+1 < len(sigmas); i++ {
		den, err := denoiseInto(ctx, m, buf, x, sigmas[i])
		if err != nil {
			return nil, err
		}
		o.step(i, den, x)
		if sigmas[i+1] > 0 {
			NoiseScaling(o.ModelSampling.Prediction(), sigmas[i+1], noise(sigmas[i], sigmas[i+1]), den, x, false)
		} else {
			copy(x, den)
		}
	}
	return x, nil
}

// axpy returns x + d·dt as a new slice.
func axpy(x, d []float32, dt float32) []float32 {
	out := make([]float32, len(x))
	for k := range x {
		out[k] = x[k] + d[k]*dt
	}
	return out
}

// lmsCoeffExpanded is lmsCoeff for any order: the basis polynomial's coefficients,
// integrated term by term.
func lmsCoeffExpanded(order int, t []float32, i, j int) float64 {
	poly := []float64{1} // poly[d] is the coefficient of tau^d
	for k := 0; k < order; k++ {
		if k == j {
			continue
		}
		den := float64(t[i-j]) - float64(t[i-k])
		root := float64(t[i-k])
		next := make([]float64, len(poly)+1)
		for d, c := range poly {
			next[d+1] += c / den
			next[d] -= c * root / den
		}
		poly = next
	}
	a, b := float64(t[i]), float64(t[i+1])
	sum := 0.0
	pa, pb := a, b
	for d, c := range poly {
		sum += c * (pb - pa) / float64(d+1)
		pa, pb = pa*a, pb*b
	}
	return sum
}

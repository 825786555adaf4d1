package sampling

import "context"

// DEIS (Zhang & Chen, diffusion exponential integrator sampler) in its 'tab' form as
// ComfyUI 0.3.64 ships it (comfy/k_diffusion/deis.py, from the diff-sampler collection):
// the sigmas are mapped to VP time with EDM's default range (σ 0.002..80, ε 1e-3), and
// the multistep coefficients integrate the Lagrange basis against the VP integrand with
// a 10,000-point Riemann sum.

func sampleDEIS(ctx context.Context, m Model, x0 []float32, sigmas []float32, o *Options) ([]float32, error) {
	const maxOrder = 3
	coeffs := deisCoefficients(sigmas, maxOrder)
	hist := &ipndmHistory{max: maxOrder}
	x := x0
	for i := 0; i+1 < len(sigmas); i++ {
		cur, next := sigmas[i], sigmas[i+1]
		den, err := denoise(ctx, m, x, cur)
		if err != nil {
			return nil, err
		}
		o.step(i, den, x0) // upstream reports the initial x, as ipndm does
		d := make([]float32, len(x))
		for k := range x {
			d[k] = (x[k] - den[k]) / cur
		}
		order := min(maxOrder, i+1)
		if next <= 0 {
			order = 1
		}
		out := make([]float32, len(x))
		if order == 1 {
			for k := range x {
				out[k] = x[k] + (next-cur)*d[k]
			}
		} else {
			c := coeffs[i]
			for k := range x {
				v := x[k] + c[0]*d[k]
				for j := 1; j < order; j++ {
					v += c[j] * hist.back(j)[k]
				}
				out[k] = v
			}
		}
		x = out
		hist.push(d)
	}
	return x, nil
}

// deisCoefficients returns, per step, the coefficients of the current and previous
// derivatives (none for first-order steps).
func deisCoefficients(sigmas []float32, maxOrder int) [][]float32 {
	const n = 10000
	const epsS, sMin, sMax = float32(1e-3), float32(0.002), float32(80)
	l := func(v float32) float32 { return log32(v*v + 1) }
	betaD := 2 * (l(sMin)/epsS - l(sMax)) / (epsS - 1)
	betaMin := l(sMax) - 0.5*betaD
	beta1 := betaD + betaMin
	ts := make([]float32, len(sigmas))
	for i, s := range sigmas {
		ts[i] = (sqrt32(betaMin*betaMin+2*betaD*l(s)) - betaMin) / betaD
	}
	out := make([][]float32, len(ts)-1)
	for i := 0; i+1 < len(ts); i++ {
		order := min(i+1, maxOrder)
		if order == 1 {
			continue
		}
		cur, next := ts[i], ts[i+1]
		taus := linspace32(cur, next, n)
		dtau := (next - cur) / n
		prev := make([]float32, order)
		for k := range prev {
			prev[k] = ts[i-k]
		}
		integrand := make([]float64, n)
		for q, tau := range taus {
			alpha := exp32(-0.5*tau*tau*(beta1-betaMin) - tau*betaMin)
			dlog := -tau*(beta1-betaMin) - betaMin
			integrand[q] = float64(-0.5 * dlog / sqrt32(alpha*(1-alpha)))
		}
		c := make([]float32, order)
		for j := 0; j < order; j++ {
			var sum float64
			for q, tau := range taus {
				poly := float32(1)
				for k := 0; k < order; k++ {
					if k != j {
						poly *= (tau - prev[k]) / (prev[j] - prev[k])
					}
				}
				sum += integrand[q] * float64(poly)
			}
			c[j] = float32(sum) * dtau
		}
		out[i] = c
	}
	return out
}

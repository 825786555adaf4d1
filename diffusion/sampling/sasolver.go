package sampling

import (
	"context"
	"fmt"
	"math"
)

// SA-Solver (stochastic Adams, Xue et al., NeurIPS 2023, arXiv 2309.05019) in data
// prediction mode as ComfyUI 0.3.64 ships it (comfy/k_diffusion/sa_solver.py): predictor
// order 3, corrector order 4, stochasticity τ = 1 for sigmas between the 20 % and 80 %
// points of the run and 0 elsewhere by default (Params.SA sets them as the
// SamplerSASolver node does); PECE re-evaluates the corrected state.

func sampleSASolver(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	return saSolver(ctx, m, x, sigmas, o, false)
}

func sampleSASolverPECE(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	return saSolver(ctx, m, x, sigmas, o, true)
}

func saSolver(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options, pece bool) ([]float32, error) {
	if len(sigmas) <= 1 {
		return x, nil
	}
	p := o.params().SA
	predictorOrder, correctorOrder := p.PredictorOrder, p.CorrectorOrder
	if predictorOrder < 1 || correctorOrder < 0 {
		return nil, fmt.Errorf("sampling: sa_solver orders must be at least 1 (predictor) and 0 (corrector), got %d and %d", predictorOrder, correctorOrder)
	}
	maxOrder := max(predictorOrder, correctorOrder)
	pece = pece || p.UsePECE
	sNoise := float32(p.SNoise)
	noiseFn := o.gaussian(len(x))
	flow := o.isFlow()
	sigmas = offsetFirstSigma(sigmas, o)
	lambdas := make([]float32, len(sigmas))
	for i, s := range sigmas {
		lambdas[i] = halfLogSNR(s, flow)
	}
	start, end, eta := p.StartSigma, p.EndSigma, p.Eta
	if !p.Interval {
		start, end, eta = o.ModelSampling.PercentToSigma(0.2), o.ModelSampling.PercentToSigma(0.8), 1
	}
	// get_tau_interval_func: a Python float, eta inside [end, start], 0 outside.
	tau := func(sigma float32) float64 {
		if s := float64(sigma); eta > 0 && start >= s && s >= end {
			return eta
		}
		return 0
	}
	var h float32
	var tauT float64
	var noise []float32
	var preds [][]float32
	xPred := x
	lowerToEnd := sigmas[len(sigmas)-1] == 0
	for i := 0; i+1 < len(sigmas); i++ {
		den, err := denoise(ctx, m, xPred, sigmas[i])
		if err != nil {
			return nil, err
		}
		o.step(i, den, xPred)
		preds = append(preds, den)
		if len(preds) > maxOrder {
			preds = preds[len(preds)-maxOrder:]
		}
		pOrder := min(predictorOrder, len(preds))
		cOrder := 0
		if !(i == 0 || (sigmas[i+1] == 0 && !pece)) {
			cOrder = min(correctorOrder, len(preds))
		}
		if lowerToEnd {
			pOrder = min(pOrder, len(sigmas)-2-i)
			cOrder = min(cOrder, len(sigmas)-1-i)
		}
		if cOrder == 0 {
			x = xPred
		} else {
			b, err := saCoefficients(sigmas[i], lambdas[i-cOrder+1:i+1], lambdas[i-1], lambdas[i], tauT, p.SimpleOrder2, true)
			if err != nil {
				return nil, err
			}
			c := sigmas[i] / sigmas[i-1] * exp32(float32(-(tauT*tauT))*h)
			out := make([]float32, len(x))
			for k := range x {
				var corr float32
				for j := 0; j < cOrder; j++ {
					corr += preds[len(preds)-cOrder+j][k] * b[j]
				}
				out[k] = c*x[k] + corr
				if tauT > 0 && sNoise > 0 {
					out[k] = out[k] + noise[k]
				}
			}
			x = out
			if pece {
				den, err = denoise(ctx, m, x, sigmas[i])
				if err != nil {
					return nil, err
				}
				preds[len(preds)-1] = den
			}
		}
		if sigmas[i+1] == 0 {
			x = den
			continue
		}
		tauT = tau(sigmas[i+1])
		b, err := saCoefficients(sigmas[i+1], lambdas[i-pOrder+1:i+1], lambdas[i], lambdas[i+1], tauT, p.SimpleOrder2, false)
		if err != nil {
			return nil, err
		}
		h = lambdas[i+1] - lambdas[i]
		c := sigmas[i+1] / sigmas[i] * exp32(float32(-(tauT*tauT))*h)
		next := make([]float32, len(x))
		for k := range x {
			var pred float32
			for j := 0; j < pOrder; j++ {
				pred += preds[len(preds)-pOrder+j][k] * b[j]
			}
			next[k] = c*x[k] + pred
		}
		if tauT > 0 && sNoise > 0 {
			n := noiseFn(sigmas[i], sigmas[i+1])
			cn := sigmas[i+1] * sqrt32(-expm132(float32(-2*tauT*tauT)*h))
			noise = make([]float32, len(x))
			for k := range n {
				noise[k] = n[k] * cn * sNoise
				next[k] = next[k] + noise[k]
			}
		}
		xPred = next
	}
	return x, nil
}

// saCoefficients returns the stochastic Adams b_i for the Lagrange basis on lambdas,
// integrating from lambda s to t (compute_stochastic_adams_b_coeffs; simple selects
// the closed-form order-2 coefficients for two points, corrector the corrector's form).
func saCoefficients(sigmaNext float32, lambdas []float32, s, t float32, tau float64, simple, corrector bool) ([]float32, error) {
	n := len(lambdas)
	tauMul := 1 + tau*tau
	h := t - s
	if simple && n == 2 {
		return saSimpleOrder2(sigmaNext, lambdas, s, t, tauMul, corrector), nil
	}
	prod := make([]float32, n)
	e := exp32(float32(-tauMul) * h)
	for p := 0; p < n; p++ {
		prod[p] = pow32(t, p) - pow32(s, p)*e
	}
	expCoeffs := make([]float32, n)
	for i := 0; i < n; i++ {
		var acc float32
		for j := 0; j <= i; j++ {
			lfi, _ := math.Lgamma(float64(i + 1))
			lfj, _ := math.Lgamma(float64(j + 1))
			c := float32(lfi) - float32(lfj)
			depth := float32(i - j)
			if tau > 0 {
				c = c - depth*float32(math.Log(tauMul))
			}
			v := exp32(c)
			if (i-j)%2 != 0 {
				v = -v
			}
			acc += v * prod[j]
		}
		expCoeffs[i] = acc
	}
	// Vandermonde transpose: row p holds lambda_j^p.
	vt := make([][]float32, n)
	for p := range vt {
		vt[p] = make([]float32, n)
		for j, l := range lambdas {
			vt[p][j] = pow32(l, p)
		}
	}
	li, err := solve32(vt, expCoeffs)
	if err != nil {
		return nil, err
	}
	alphaT := sigmaNext * exp32(t)
	for i := range li {
		li[i] *= alphaT
	}
	return li, nil
}

func pow32(v float32, p int) float32 {
	return float32(math.Pow(float64(v), float64(p)))
}

// saSimpleOrder2 is compute_simple_stochastic_adams_b_coeffs: the one-step corrector
// and two-step predictor of order 2 in closed form, [b_2, b_1]; tauMul is a Python float
// that meets the tensors as float32.
func saSimpleOrder2(sigmaNext float32, lambdas []float32, s, t float32, tauMul float64, corrector bool) []float32 {
	h := t - s
	alphaT := sigmaNext * exp32(t)
	half, tm := float32(0.5*tauMul), float32(tauMul)
	whole := alphaT * -expm132(-h*tm)
	if corrector {
		b1 := alphaT * (half * h)
		return []float32{whole - b1, b1}
	}
	b2 := alphaT * (half * (h * h)) / (lambdas[0] - s)
	return []float32{b2, whole - b2}
}

package sampling

import (
	"context"
	"errors"
	"fmt"
	"math"
)

// DPM-Solver (Lu et al. 2022, arXiv 2206.00927) in its fixed-step "fast" and adaptive
// forms, as k-diffusion's DPMSolver class and ComfyUI's ksampler() wrapper run them: time
// t = −log σ, noise prediction eps = (x − denoised)/σ, eta 0.

type dpmSolver struct {
	ctx context.Context
	m   Model
	o   *Options
}

func dpmSigma(t float32) float32 { return exp32(-t) }
func dpmT(sigma float32) float32 { return -log32(sigma) }

// eps evaluates the model at time t and returns its noise prediction and denoised value.
func (s *dpmSolver) eps(x []float32, t float32) (eps, den []float32, err error) {
	sig := dpmSigma(t)
	d, err := denoise(s.ctx, s.m, x, sig)
	if err != nil {
		return nil, nil, err
	}
	e := make([]float32, len(x))
	for k := range x {
		e[k] = (x[k] - d[k]) / sig
	}
	return e, d, nil
}

func (s *dpmSolver) step1(x, eps []float32, t, tNext float32) []float32 {
	h := tNext - t
	c := dpmSigma(tNext) * expm132(h)
	out := make([]float32, len(x))
	for k := range x {
		out[k] = x[k] - c*eps[k]
	}
	return out
}

func (s *dpmSolver) step2(x, eps []float32, t, tNext, r1 float32) ([]float32, error) {
	h := tNext - t
	s1 := t + r1*h
	c := dpmSigma(s1) * expm132(r1*h)
	u1 := make([]float32, len(x))
	for k := range x {
		u1[k] = x[k] - c*eps[k]
	}
	e1, _, err := s.eps(u1, s1)
	if err != nil {
		return nil, err
	}
	em := expm132(h)
	ca := dpmSigma(tNext) * em
	cb := dpmSigma(tNext) / (2 * r1) * em
	out := make([]float32, len(x))
	for k := range x {
		out[k] = x[k] - ca*eps[k] - cb*(e1[k]-eps[k])
	}
	return out, nil
}

func (s *dpmSolver) step3(x, eps []float32, t, tNext float32) ([]float32, error) {
	const r1, r2 = float32(1.0 / 3), float32(2.0 / 3)
	h := tNext - t
	s1, s2 := t+r1*h, t+r2*h
	c := dpmSigma(s1) * expm132(r1*h)
	u1 := make([]float32, len(x))
	for k := range x {
		u1[k] = x[k] - c*eps[k]
	}
	e1, _, err := s.eps(u1, s1)
	if err != nil {
		return nil, err
	}
	ca := dpmSigma(s2) * expm132(r2*h)
	cb := dpmSigma(s2) * float32(2.0/3/(1.0/3)) * (expm132(r2*h)/(r2*h) - 1)
	u2 := make([]float32, len(x))
	for k := range x {
		u2[k] = x[k] - ca*eps[k] - cb*(e1[k]-eps[k])
	}
	e2, _, err := s.eps(u2, s2)
	if err != nil {
		return nil, err
	}
	em := expm132(h)
	ca = dpmSigma(tNext) * em
	cb = dpmSigma(tNext) / r2 * (em/h - 1)
	out := make([]float32, len(x))
	for k := range x {
		out[k] = x[k] - ca*eps[k] - cb*(e2[k]-eps[k])
	}
	return out, nil
}

// dpmRange is ComfyUI's wrapper: from the first sigma down to the last non-zero one.
func dpmRange(sigmas []float32) (sigmaMin, sigmaMax float32) {
	sigmaMin = sigmas[len(sigmas)-1]
	if sigmaMin == 0 {
		sigmaMin = sigmas[len(sigmas)-2]
	}
	return sigmaMin, sigmas[0]
}

// sampleDPMFast spends len(sigmas)−1 model evaluations on steps of order 3 (then 2/1 to
// use them up), evenly spaced in log σ.
func sampleDPMFast(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	if len(sigmas) <= 1 {
		return x, nil
	}
	sMin, sMax := dpmRange(sigmas)
	nfe := len(sigmas) - 1
	s := &dpmSolver{ctx: ctx, m: m, o: o}
	tStart, tEnd := dpmT(sMax), dpmT(sMin)
	steps := nfe/3 + 1
	ts := linspace32(tStart, tEnd, steps+1)
	var orders []int
	if nfe%3 == 0 {
		for range steps - 2 {
			orders = append(orders, 3)
		}
		orders = append(orders, 2, 1)
	} else {
		for range steps - 1 {
			orders = append(orders, 3)
		}
		orders = append(orders, nfe%3)
	}
	for i, order := range orders {
		t, tNext := ts[i], ts[i+1]
		eps, den, err := s.eps(x, t)
		if err != nil {
			return nil, err
		}
		o.step(i, den, x)
		switch order {
		case 1:
			x = s.step1(x, eps, t, tNext)
		case 2:
			x, err = s.step2(x, eps, t, tNext, 0.5)
		default:
			x, err = s.step3(x, eps, t, tNext)
		}
		if err != nil {
			return nil, err
		}
	}
	return x, nil
}

// sampleDPMAdaptive is DPM-Solver-12 or -23 (Params.Adaptive.Order) with a PID
// step-size controller and optional ancestral noise (eta); every attempt, accepted or
// not, reaches the callback as upstream reports it.
func sampleDPMAdaptive(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	if len(sigmas) <= 1 {
		return x, nil
	}
	p := o.params().Adaptive
	if p.Order != 2 && p.Order != 3 {
		return nil, fmt.Errorf("sampling: dpm_adaptive order must be 2 or 3, got %d", p.Order)
	}
	// Upstream would loop for ever: no step can be taken, or none accepted (the
	// controller's factor 1 + atan(·) stays below 1 + π/2).
	if p.HInit == 0 {
		return nil, errors.New("sampling: dpm_adaptive h_init must be above 0")
	}
	if p.AcceptSafety >= 1+math.Pi/2 {
		return nil, fmt.Errorf("sampling: dpm_adaptive accept_safety %g can never accept a step (must be below 1+π/2)", p.AcceptSafety)
	}
	rtol, atol := float32(p.RTol), float32(p.ATol)
	eta, sNoise := float32(p.Eta), float32(p.SNoise)
	pidOrder := float64(p.Order)
	if p.Eta != 0 {
		pidOrder = 1.5
	}
	var noise NoiseSampler
	if p.Eta != 0 {
		noise = o.gaussian(len(x))
	}
	sMin, sMax := dpmRange(sigmas)
	s := &dpmSolver{ctx: ctx, m: m, o: o}
	tStart, tEnd := dpmT(sMax), dpmT(sMin)
	pid := newPID(math.Abs(p.HInit), p.PCoeff, p.ICoeff, p.DCoeff, pidOrder)
	cur := tStart
	prev := x
	step := 0
	for cur < tEnd-float32(1e-5) {
		t := min(tEnd, cur+float32(pid.h))
		target, su := t, float32(0)
		if p.Eta != 0 {
			sd, _ := ancestralStep(dpmSigma(cur), dpmSigma(t), eta)
			target = min(tEnd, dpmT(sd))
			st, sT := dpmSigma(t), dpmSigma(target)
			su = sqrt32(st*st - sT*sT)
		}
		eps, den, err := s.eps(x, cur)
		if err != nil {
			return nil, err
		}
		var low, high []float32
		if p.Order == 2 {
			low = s.step1(x, eps, cur, target)
			high, err = s.step2(x, eps, cur, target, 0.5)
		} else {
			low, err = s.step2(x, eps, cur, target, float32(1.0/3))
			if err == nil {
				high, err = s.step3(x, eps, cur, target)
			}
		}
		if err != nil {
			return nil, err
		}
		var sum float64
		for k := range x {
			delta := max(atol, rtol*max(abs32(low[k]), abs32(prev[k])))
			q := float64((low[k] - high[k]) / delta)
			sum += q * q
		}
		errNorm := float32(math.Sqrt(sum)) / float32(math.Sqrt(float64(len(x))))
		if pid.propose(float64(errNorm), p.AcceptSafety) {
			prev = low
			x = high
			if noise != nil {
				n := noise(dpmSigma(cur), dpmSigma(t))
				out := make([]float32, len(x))
				for k := range x {
					out[k] = x[k] + su*sNoise*n[k]
				}
				x = out
			}
			cur = t
		}
		o.step(step, den, x)
		step++
	}
	return x, nil
}

func abs32(v float32) float32 {
	if v < 0 {
		return -v
	}
	return v
}

// pidController is k-diffusion's PIDStepSizeController: the step size grows or shrinks
// by 1 + atan(factor − 1), factor the product of the last three inverse errors raised
// to the PID gains divided by the order.
type pidController struct {
	h          float64
	b1, b2, b3 float64
	errs       []float64
}

func newPID(h, pcoeff, icoeff, dcoeff, order float64) pidController {
	return pidController{h: h, b1: (pcoeff + icoeff + dcoeff) / order, b2: -(pcoeff + 2*dcoeff) / order, b3: dcoeff / order}
}

func (p *pidController) propose(err, acceptSafety float64) bool {
	inv := 1 / (err + 1e-8)
	if p.errs == nil {
		p.errs = []float64{inv, inv, inv}
	}
	p.errs[0] = inv
	factor := math.Pow(p.errs[0], p.b1) * math.Pow(p.errs[1], p.b2) * math.Pow(p.errs[2], p.b3)
	factor = 1 + math.Atan(factor-1)
	accept := factor >= acceptSafety
	if accept {
		p.errs[2] = p.errs[1]
		p.errs[1] = p.errs[0]
	}
	p.h *= factor
	return accept
}

package sampling

import (
	"context"
	"fmt"
	"math"
)

// UniPC (Zhao et al. 2023, arXiv 2302.04867), multistep, data prediction, B(h) variants
// bh1 and bh2, as ComfyUI 0.3.64 runs it (comfy/extra_samplers/uni_pc.py): the Karras
// sigmas are used as VP times through the "sigma convert" schedule, x lives in the VP
// space x/√(1+σ²) while sampling, and the last sigma 0 is replaced by 0.001.

// unipcSchedule is ComfyUI's SigmaConvert noise schedule on sigma-valued times.
type unipcSchedule struct{}

func (unipcSchedule) logMeanCoeff(s float32) float32 { return 0.5 * log32(1/(s*s+1)) }
func (u unipcSchedule) alpha(s float32) float32      { return exp32(u.logMeanCoeff(s)) }
func (u unipcSchedule) std(s float32) float32 {
	return sqrt32(1 - exp32(2*u.logMeanCoeff(s)))
}
func (u unipcSchedule) lambda(s float32) float32 {
	lmc := u.logMeanCoeff(s)
	return lmc - 0.5*log32(1-exp32(2*lmc))
}

type unipc struct {
	ctx context.Context
	m   Model
	ns  unipcSchedule
	bh2 bool
}

// dataPrediction evaluates the model at VP time t on VP-space x and returns x0.
func (u *unipc) dataPrediction(x []float32, t float32) ([]float32, error) {
	scale := float32(math.Sqrt(float64(t*t + 1)))
	in := make([]float32, len(x))
	for k := range x {
		in[k] = x[k] * scale
	}
	den, err := denoise(u.ctx, u.m, in, t)
	if err != nil {
		return nil, err
	}
	alpha, std := u.ns.alpha(t), u.ns.std(t)
	out := make([]float32, len(x))
	for k := range x {
		eps := (in[k] - den[k]) / t
		out[k] = (x[k] - std*eps) / alpha
	}
	return out, nil
}

// update is multistep_uni_pc_bh_update: a predictor step of the given order from the
// history, then (useCorrector) one model evaluation at t and the corrector. It returns
// the new x and the model value at t (nil without corrector).
func (u *unipc) update(x []float32, models [][]float32, times []float32, t float32, order int, useCorrector bool) ([]float32, []float32, error) {
	ns := u.ns
	tPrev0 := times[len(times)-1]
	lPrev0, lt := ns.lambda(tPrev0), ns.lambda(t)
	mPrev0 := models[len(models)-1]
	sPrev0, st := ns.std(tPrev0), ns.std(t)
	alphaT := exp32(ns.logMeanCoeff(t))
	h := lt - lPrev0

	var rks []float32
	var d1s [][]float32
	for i := 1; i < order; i++ {
		li := ns.lambda(times[len(times)-1-i])
		rk := (li - lPrev0) / h
		rks = append(rks, rk)
		mi := models[len(models)-1-i]
		d := make([]float32, len(x))
		for k := range d {
			d[k] = (mi[k] - mPrev0[k]) / rk
		}
		d1s = append(d1s, d)
	}
	rks = append(rks, 1)

	hh := -h
	hPhi1 := expm132(hh)
	hPhiK := hPhi1/hh - 1
	factorial := float32(1)
	bh := hh
	if u.bh2 {
		bh = expm132(hh)
	}
	R := make([][]float32, order)
	b := make([]float32, order)
	for i := 1; i <= order; i++ {
		row := make([]float32, len(rks))
		for j, r := range rks {
			row[j] = float32(math.Pow(float64(r), float64(i-1)))
		}
		R[i-1] = row
		b[i-1] = hPhiK * factorial / bh
		factorial *= float32(i + 1)
		hPhiK = hPhiK/hh - 1/factorial
	}

	xt0 := make([]float32, len(x))
	ca, cb := st/sPrev0, alphaT*hPhi1
	for k := range x {
		xt0[k] = ca*x[k] - cb*mPrev0[k]
	}
	scale := alphaT * bh
	xt := make([]float32, len(x))
	copy(xt, xt0)
	if len(d1s) > 0 {
		var rhosP []float32
		if order == 2 {
			rhosP = []float32{0.5}
		} else {
			sub := make([][]float32, order-1)
			for i := range sub {
				sub[i] = R[i][:order-1]
			}
			var err error
			if rhosP, err = solve32(sub, b[:order-1]); err != nil {
				return nil, nil, err
			}
		}
		for k := range xt {
			var pred float32
			for j, d := range d1s {
				pred += d[k] * rhosP[j]
			}
			xt[k] = xt0[k] - scale*pred
		}
	}
	if !useCorrector {
		return xt, nil, nil
	}
	var rhosC []float32
	if order == 1 {
		rhosC = []float32{0.5}
	} else {
		var err error
		if rhosC, err = solve32(R, b); err != nil {
			return nil, nil, err
		}
	}
	mt, err := u.dataPrediction(xt, t)
	if err != nil {
		return nil, nil, err
	}
	last := rhosC[len(rhosC)-1]
	for k := range xt {
		var corr float32
		for j, d := range d1s {
			corr += d[k] * rhosC[j]
		}
		xt[k] = xt0[k] - scale*(corr+last*(mt[k]-mPrev0[k]))
	}
	return xt, mt, nil
}

// solve32 solves the small dense system a·x = b by Gaussian elimination with partial
// pivoting (float64 inside, as a stand-in for LAPACK's float32 gesv).
func solve32(a [][]float32, b []float32) ([]float32, error) {
	n := len(b)
	m := make([][]float64, n)
	for i := range m {
		m[i] = make([]float64, n+1)
		for j := 0; j < n; j++ {
			m[i][j] = float64(a[i][j])
		}
		m[i][n] = float64(b[i])
	}
	for c := 0; c < n; c++ {
		p := c
		for r := c + 1; r < n; r++ {
			if math.Abs(m[r][c]) > math.Abs(m[p][c]) {
				p = r
			}
		}
		if m[p][c] == 0 {
			return nil, fmt.Errorf("sampling: uni_pc: singular %dx%d system", n, n)
		}
		m[c], m[p] = m[p], m[c]
		for r := c + 1; r < n; r++ {
			f := m[r][c] / m[c][c]
			for j := c; j <= n; j++ {
				m[r][j] -= f * m[c][j]
			}
		}
	}
	x := make([]float32, n)
	for r := n - 1; r >= 0; r-- {
		v := m[r][n]
		for j := r + 1; j < n; j++ {
			v -= m[r][j] * float64(x[j])
		}
		x[r] = float32(v / m[r][r])
	}
	return x, nil
}

func sampleUniPC(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	return uniPC(ctx, m, x, sigmas, o, false)
}

func sampleUniPCBH2(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options) ([]float32, error) {
	return uniPC(ctx, m, x, sigmas, o, true)
}

// uniPCFinalSigma replaces a final sigma of 0. Upstream writes it into the caller's
// sigma tensor (a view), so KSAMPLER's closing inverse noise scaling sees it too; uniPC
// likewise writes it into the schedule it is given (Sample passes a copy).
const uniPCFinalSigma = 0.001

func uniPC(ctx context.Context, m Model, x []float32, sigmas []float32, o *Options, bh2 bool) ([]float32, error) {
	ts := sigmas
	if ts[len(ts)-1] == 0 {
		ts[len(ts)-1] = uniPCFinalSigma
	}
	u := &unipc{ctx: ctx, m: m, bh2: bh2}
	steps := len(ts) - 1
	order := min(3, len(ts)-2)
	s0 := sqrt32(1 + ts[0]*ts[0])
	cur := make([]float32, len(x))
	for k := range x {
		cur[k] = x[k] / s0
	}
	var models [][]float32
	var times []float32
	for si := 0; si < steps; si++ {
		switch {
		case si == 0:
			m0, err := u.dataPrediction(cur, ts[0])
			if err != nil {
				return nil, err
			}
			models, times = [][]float32{m0}, []float32{ts[0]}
		case si < order:
			next, mx, err := u.update(cur, models, times, ts[si], si, true)
			if err != nil {
				return nil, err
			}
			cur = next
			models = append(models, mx)
			times = append(times, ts[si])
		default:
			last := si
			if si == steps-1 {
				last = si + 1
			}
			for step := si; step <= last; step++ {
				stepOrder := min(order, steps+1-step)
				next, mx, err := u.update(cur, models, times, ts[step], stepOrder, step != steps)
				if err != nil {
					return nil, err
				}
				cur = next
				copy(times, times[1:])
				copy(models, models[1:])
				times[len(times)-1] = ts[step]
				if step < steps {
					models[len(models)-1] = mx
				}
			}
		}
		o.step(si, models[len(models)-1], cur)
	}
	a := u.ns.alpha(ts[len(ts)-1])
	for k := range cur {
		cur[k] /= a
	}
	return cur, nil
}

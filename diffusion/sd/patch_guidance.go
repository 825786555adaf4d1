package sd

import (
	"context"
	"math"
)

// Guidance patches of comfy_extras: nodes_cfg.py CFGZeroStar, nodes_apg.py APG,
// nodes_tcfg.py TCFG, nodes_mahiro.py Mahiro and nodes_eps.py EpsilonScaling. Each is
// re-derived from the Python expression by expression in float32; sums and norms are
// accumulated in float64 and rounded to float32 (torch's reduction order differs, so
// they agree to float32 rounding, not bit for bit).

// perItem calls f for each batch item's slice bounds of a step's latents.
func perItem(shape [4]int, f func(lo, hi int)) {
	per := shape[1] * shape[2] * shape[3]
	for b := 0; b < shape[0]; b++ {
		f(b*per, (b+1)*per)
	}
}

// dot32 is Σ a·b over [lo, hi), rounded to float32.
func dot32(a, b []float32, lo, hi int) float32 {
	var s float64
	for i := lo; i < hi; i++ {
		s += float64(a[i]) * float64(b[i])
	}
	return float32(s)
}

// CFGZeroStar is CFGZeroStar's post-CFG function (CFG-Zero*): per batch item the
// uncond prediction is rescaled by α = ⟨x−cond, x−uncond⟩ / (|x−uncond|² + 1e-8):
// out + uncond·(α−1) + scale·uncond·(1−α).
type CFGZeroStar struct{}

func (CFGZeroStar) postCFG(_ context.Context, st *cfgStep) ([]float32, error) {
	x, c, u := st.x, st.condDenoised, st.uncondDenoised
	out := make([]float32, len(st.denoised))
	pos := make([]float32, len(x))
	neg := make([]float32, len(x))
	for i := range x {
		pos[i], neg[i] = x[i]-c[i], x[i]-u[i]
	}
	scale := float32(st.scale)
	perItem(st.d.shape, func(lo, hi int) {
		alpha := dot32(pos, neg, lo, hi) / (dot32(neg, neg, lo, hi) + 1e-8)
		for i := lo; i < hi; i++ {
			out[i] = st.denoised[i] + u[i]*(alpha-1) + scale*u[i]*(1-alpha)
		}
	})
	return out, nil
}

// APG is Adaptive Projected Guidance's pre-CFG function: the guidance cond − uncond
// (optionally a running average with Momentum, reset when σ rises, and capped to the
// L2 norm NormThreshold per batch item) is split into its parts parallel and
// orthogonal to cond; the parallel part is scaled by Eta, and the cond becomes
// uncond + that + (cond − uncond)/scale, so that CFG's combination yields
// uncond + guidance' + … as APG defines it. Build it with NewAPG.
type APG struct {
	Eta, NormThreshold, Momentum float64
	// key identifies the patch's running average in a run's state.
	key *apgKey
}

type apgKey struct{ _ byte }

// apgState is APG's running average and the σ of the previous call within one run.
type apgState struct {
	avg       []float32
	prevSigma float32
	started   bool
}

// NewAPG returns the patch for eta, norm_threshold and momentum.
func NewAPG(eta, normThreshold, momentum float64) APG {
	return APG{Eta: eta, NormThreshold: normThreshold, Momentum: momentum, key: &apgKey{}}
}

func (a APG) preCFG(_ context.Context, s *preCFGStep) ([][]float32, error) {
	if len(s.outs) == 1 {
		return s.outs, nil
	}
	cond, uncond := s.outs[0], s.outs[1]
	g := make([]float32, len(cond))
	for i := range g {
		g[i] = cond[i] - uncond[i]
	}
	if a.Momentum != 0 {
		d := s.d
		if d.state == nil {
			d.state = runState{}
		}
		st, _ := d.state[a.key].(*apgState)
		if st == nil {
			st = &apgState{}
			d.state[a.key] = st
		}
		if st.started && s.sigma > st.prevSigma {
			st.avg = nil
		}
		st.prevSigma, st.started = s.sigma, true
		if st.avg == nil {
			st.avg = append([]float32(nil), g...)
		} else {
			m := float32(a.Momentum)
			for i := range g {
				st.avg[i] = m*st.avg[i] + g[i]
			}
			copy(g, st.avg)
		}
	}
	eta := float32(a.Eta)
	scale := float32(s.scale)
	out := make([]float32, len(cond))
	perItem(s.d.shape, func(lo, hi int) {
		if a.NormThreshold > 0 {
			// norm_threshold / |g| is torch's reciprocal(|g|)·norm_threshold.
			n := float32(math.Sqrt(float64(dot32(g, g, lo, hi))))
			f := min(1, (1/n)*float32(a.NormThreshold))
			for i := lo; i < hi; i++ {
				g[i] *= f
			}
		}
		// project(g, cond): v1 = cond/max(|cond|, 1e-12), parallel = ⟨g, v1⟩·v1.
		cn := max(float32(math.Sqrt(float64(dot32(cond, cond, lo, hi)))), 1e-12)
		v1 := make([]float32, hi-lo)
		for i := range v1 {
			v1[i] = cond[lo+i] / cn
		}
		var p float64
		for i, v := range v1 {
			p += float64(g[lo+i]) * float64(v)
		}
		proj := float32(p)
		for i := lo; i < hi; i++ {
			par := proj * v1[i-lo]
			orth := g[i] - par
			out[i] = (uncond[i] + (orth + eta*par)) + (cond[i]-uncond[i])/scale
		}
	})
	res := append([][]float32{out}, s.outs[1:]...)
	return res, nil
}

// TCFG is Tangential Damping CFG's pre-CFG function: per batch item the uncond score
// x − uncond is replaced by its projection on the first right singular vector of the
// 2×D matrix [x − uncond; x − cond], dropping its component tangential to the pair's
// principal direction. It does nothing when the uncond was not evaluated.
type TCFG struct{}

func (TCFG) preCFG(_ context.Context, s *preCFGStep) ([][]float32, error) {
	if len(s.outs) <= 1 || s.conds[0] == nil || s.conds[1] == nil {
		return s.outs, nil
	}
	x, cond, uncond := s.x, s.outs[0], s.outs[1]
	out := make([]float32, len(uncond))
	perItem(s.d.shape, func(lo, hi int) {
		u := make([]float64, hi-lo)
		c := make([]float64, hi-lo)
		var uu, uc, cc float64
		for i := range u {
			u[i] = float64(x[lo+i] - uncond[lo+i])
			c[i] = float64(x[lo+i] - cond[lo+i])
			uu += u[i] * u[i]
			uc += u[i] * c[i]
			cc += c[i] * c[i]
		}
		// The first right singular vector is Aᵀw/σ₁ for w the leading eigenvector of
		// the Gram matrix A·Aᵀ = [[uu, uc], [uc, cc]] and σ₁² its eigenvalue.
		half := (uu - cc) / 2
		lambda := (uu+cc)/2 + math.Hypot(half, uc)
		w0, w1 := uc, lambda-uu
		if uc == 0 {
			w0, w1 = 1, 0
			if cc > uu {
				w0, w1 = 0, 1
			}
		}
		norm := math.Hypot(w0, w1) * math.Sqrt(lambda)
		var proj float64
		v := make([]float64, len(u))
		if norm > 0 {
			for i := range v {
				v[i] = (w0*u[i] + w1*c[i]) / norm
				proj += u[i] * v[i]
			}
		}
		for i := range v {
			out[lo+i] = x[lo+i] - float32(proj*v[i])
		}
	})
	return append([][]float32{s.outs[0], out}, s.outs[2:]...), nil
}

// Mahiro is Mahiro's post-CFG function: the guided prediction is blended with the
// naive cond·scale by how similar the uncond's direction is to their mean's. With
// sqrt-compressed magnitudes (sign kept), the cosine similarity over channels is
// averaged over every pixel and batch item into sim; the result is
// ((2·(sim+1))·cfg + (4 − 2·(sim+1))·leap) / 4.
type Mahiro struct{}

func (Mahiro) postCFG(_ context.Context, st *cfgStep) ([]float32, error) {
	shape := st.d.shape
	n, c, hw := shape[0], shape[1], shape[2]*shape[3]
	scale := float32(st.scale)
	cfg := st.denoised
	leap := make([]float32, len(cfg))
	nu := make([]float32, len(cfg))
	nm := make([]float32, len(cfg))
	signedSqrt := func(v float32) float32 {
		r := float32(math.Sqrt(float64(float32(math.Abs(float64(v))))))
		switch {
		case v > 0:
			return r
		case v < 0:
			return -r
		}
		return 0 * v // torch.sign keeps 0 (and NaN)
	}
	for i := range cfg {
		leap[i] = st.condDenoised[i] * scale
		nu[i] = signedSqrt(st.uncondDenoised[i] * scale)
		nm[i] = signedSqrt((leap[i] + cfg[i]) / 2)
	}
	// F.cosine_similarity(dim=1, eps=1e-8): Σ (a/max(|a|, eps))·(b/max(|b|, eps)).
	var total float64
	for b := 0; b < n; b++ {
		for p := 0; p < hw; p++ {
			var sa, sb float64
			for ch := 0; ch < c; ch++ {
				i := (b*c+ch)*hw + p
				sa += float64(nu[i]) * float64(nu[i])
				sb += float64(nm[i]) * float64(nm[i])
			}
			na := max(float32(math.Sqrt(sa)), 1e-8)
			nb := max(float32(math.Sqrt(sb)), 1e-8)
			var cos float64
			for ch := 0; ch < c; ch++ {
				i := (b*c+ch)*hw + p
				cos += float64((nu[i] / na) * (nm[i] / nb))
			}
			total += float64(float32(cos))
		}
	}
	sim := float32(total / float64(n*hw))
	simsc := 2 * (sim + 1)
	out := make([]float32, len(cfg))
	for i := range out {
		out[i] = (simsc*cfg[i] + (4-simsc)*leap[i]) / 4
	}
	return out, nil
}

// EpsilonScaling is Epsilon Scaling's post-CFG function (exposure bias, uniform
// schedule): the guided noise prediction x − denoised is divided by Factor.
type EpsilonScaling struct {
	Factor float64
}

func (e EpsilonScaling) postCFG(_ context.Context, st *cfgStep) ([]float32, error) {
	f := float32(e.Factor)
	if e.Factor == 0 {
		f = 1e-9 // as the node guards against a division by zero
	}
	out := make([]float32, len(st.denoised))
	for i, x := range st.x {
		out[i] = x - (x-st.denoised[i])/f
	}
	return out, nil
}

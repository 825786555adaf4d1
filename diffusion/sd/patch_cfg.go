package sd

import (
	"context"
	"fmt"
	"math"
)

// CFGFunc is a sampler_cfg_function: it combines the cond and uncond predictions of a
// step in place of uncond + (cond − uncond)·scale (comfy/samplers.py cfg_function). The
// implementations are RescaleCFG and PerpNegPatch.
type CFGFunc interface {
	cfgFunc(ctx context.Context, s *cfgStep) ([]float32, error)
}

// PreCFG is a sampler_pre_cfg_function: it rewrites the predictions of the evaluated
// conditioning lists before they are combined (the step's outs, in the order of its
// conds). The implementations are FreSca, APG and TCFG.
type PreCFG interface {
	preCFG(ctx context.Context, s *preCFGStep) ([][]float32, error)
}

// preCFGStep is what a pre-CFG function is given (sampling_function's args: conds,
// conds_out, cond_scale, input, sigma).
type preCFGStep struct {
	d *denoiser
	// conds are the lists (nil where a list was skipped, as the uncond at cfg 1), outs
	// their predictions so far (zeros for a skipped list).
	conds [][]modelCond
	outs  [][]float32
	scale float64
	x     []float32 // the sampler's input
	sigma float32
}

// preCFG applies the model's pre-CFG functions in order (sampling_function).
func (d *denoiser) preCFG(ctx context.Context, conds [][]modelCond, outs [][]float32, scale float64, x []float32, sigma float32) ([][]float32, error) {
	for _, f := range d.g.Model.PreCFG {
		var err error
		if outs, err = f.preCFG(ctx, &preCFGStep{d: d, conds: conds, outs: outs, scale: scale, x: x, sigma: sigma}); err != nil {
			return nil, err
		}
	}
	return outs, nil
}

// RescaleCFG is RescaleCFG's sampler_cfg_function (comfy_extras/nodes_model_advanced.py):
// the guidance is computed on v-prediction outputs, rescaled per batch item to the
// standard deviation of the cond's, and blended with the plain result by Multiplier.
// The arithmetic follows the Python expression by expression in float32 (it goes
// through ε = x − denoised and back), so the roundings agree.
type RescaleCFG struct {
	Multiplier float64
}

func (r RescaleCFG) cfgFunc(_ context.Context, st *cfgStep) ([]float32, error) {
	n, per := st.d.shape[0], st.d.shape[1]*st.d.shape[2]*st.d.shape[3]
	sigma := st.sigma
	s2 := sigma*sigma + 1
	root := float32(math.Pow(float64(s2), 0.5))
	scale, mult, rest := float32(st.scale), float32(r.Multiplier), float32(1-r.Multiplier)
	out := make([]float32, len(st.x))
	cond := make([]float32, per)
	xcfg := make([]float32, per)
	for b := 0; b < n; b++ {
		lo := b * per
		for i := 0; i < per; i++ {
			xo := st.x[lo+i]
			x := xo / s2
			c := ((x - (xo - (xo - st.condDenoised[lo+i]))) * root) / sigma
			u := ((x - (xo - (xo - st.uncondDenoised[lo+i]))) * root) / sigma
			cond[i] = c
			xcfg[i] = u + scale*(c-u)
		}
		ratio := float32(std(cond)) / float32(std(xcfg))
		for i := 0; i < per; i++ {
			xo := st.x[lo+i]
			x := xo / s2
			final := mult*(xcfg[i]*ratio) + rest*xcfg[i]
			eps := xo - (x - final*sigma/root)
			out[lo+i] = xo - eps
		}
	}
	return out, nil
}

// PerpNegPatch is the deprecated PerpNeg node's sampler_cfg_function
// (comfy_extras/nodes_perpneg.py): the empty conditioning is evaluated at every step and
// the negative's component along the positive direction is removed (perpNeg).
type PerpNegPatch struct {
	Empty    Conditioning
	NegScale float64
}

func (p PerpNegPatch) cfgFunc(ctx context.Context, st *cfgStep) ([]float32, error) {
	d := st.d
	// encode_model_conds on the empty conditioning at every step, as a negative prompt.
	empty, err := prepareConds(d.g.Model, p.Empty, d.shape[2], d.shape[3], true)
	if err != nil {
		return nil, fmt.Errorf("empty_conditioning: %w", err)
	}
	if err := d.finishConds(empty); err != nil {
		return nil, fmt.Errorf("empty_conditioning: %w", err)
	}
	outs, err := d.calcCondBatch(ctx, [][]modelCond{empty}, st.x, st.sigma, skipNone)
	if err != nil {
		return nil, err
	}
	r := perpNeg(st.condDenoised, st.uncondDenoised, outs[0], p.NegScale, st.scale)
	// The function returns x − result and cfg_function subtracts it from x again.
	out := make([]float32, len(r))
	for i, v := range r {
		out[i] = st.x[i] - (st.x[i] - v)
	}
	return out, nil
}

// perpNeg is nodes_perpneg.py perp_neg in float32: with pos = cond − empty and
// neg = uncond − empty, the part of neg perpendicular to pos (over the whole batch),
// scaled by negScale, is subtracted from pos before the cfg scale:
// empty + scale·(pos − negScale·(neg − (neg·pos / |pos|²)·pos)).
func perpNeg(cond, uncond, empty []float32, negScale, scale float64) []float32 {
	pos := make([]float32, len(cond))
	neg := make([]float32, len(cond))
	var dot, norm2 float64
	for i := range pos {
		pos[i] = cond[i] - empty[i]
		neg[i] = uncond[i] - empty[i]
		dot += float64(neg[i] * pos[i])
		norm2 += float64(pos[i]) * float64(pos[i])
	}
	n := float32(math.Sqrt(norm2))
	coef := float32(dot) / (n * n)
	ns, cs := float32(negScale), float32(scale)
	out := make([]float32, len(cond))
	for i := range out {
		perp := neg[i] - coef*pos[i]
		out[i] = empty[i] + cs*(pos[i]-perp*ns)
	}
	return out
}

// NewPerpNegGuider returns Guider_PerpNeg (PerpNegGuider): positive, negative and the
// empty conditioning evaluated in one batch and combined by perpNeg, the model's
// pre- and post-CFG functions applied around it.
func NewPerpNegGuider(m *Model, positive, negative, empty Conditioning, cfg, negScale float64) *Guider {
	return &Guider{Model: m, Kind: PerpNeg, Positive: positive, Middle: empty, Negative: negative, CFG: cfg, NegScale: negScale}
}

// predictPerpNeg is Guider_PerpNeg.predict_noise.
func (d *denoiser) predictPerpNeg(ctx context.Context, x []float32, sigma float32) ([]float32, []float32, error) {
	g := d.g
	pos, neg, empty := d.p.pos, d.p.neg, d.p.mid
	if !d.keepCFG1() && isClose(g.NegScale, 0) {
		neg = nil
		if isClose(g.CFG, 1) {
			empty = nil
		}
	}
	conds := [][]modelCond{pos, neg, empty}
	outs, err := d.calcCondBatch(ctx, conds, x, sigma, skipNone)
	if err != nil {
		return nil, nil, err
	}
	if outs, err = d.preCFG(ctx, conds, outs, g.CFG, x, sigma); err != nil {
		return nil, nil, err
	}
	den := perpNeg(outs[0], outs[1], outs[2], g.NegScale, g.CFG)
	st := &cfgStep{d: d, x: x, sigma: sigma, condDenoised: outs[0], uncondDenoised: outs[1], cond: pos, uncond: neg, scale: g.CFG}
	if den, err = d.postCFG(ctx, st, den); err != nil {
		return nil, nil, err
	}
	if d.keepUncond {
		return den, outs[1], nil
	}
	return den, nil, nil
}

// FreSca is FreSca's sampler_pre_cfg_function (comfy_extras/nodes_fresca.py): the
// guidance cond − uncond is filtered in the 2-D Fourier domain of each latent channel,
// frequencies within FreqCutoff of the centre scaled by ScaleLow and the others by
// ScaleHigh, and the cond becomes filtered + uncond.
type FreSca struct {
	ScaleLow, ScaleHigh float64
	FreqCutoff          int
}

func (f FreSca) preCFG(_ context.Context, s *preCFGStep) ([][]float32, error) {
	d, conds, outs := s.d, s.conds, s.outs
	if len(outs) <= 1 || conds[0] == nil || conds[1] == nil {
		return outs, nil
	}
	cond, uncond := outs[0], outs[1]
	g := make([]float32, len(cond))
	for i := range g {
		g[i] = cond[i] - uncond[i]
	}
	n, c, h, w := d.shape[0], d.shape[1], d.shape[2], d.shape[3]
	band := func(size int) (int, int) {
		cc := size / 2
		fc := min(f.FreqCutoff, cc)
		return cc - fc, cc + fc
	}
	y0, y1 := band(h)
	x0, x1 := band(w)
	filtered := fourierScale(g, n*c, h, w, freqBlock{y0, y1, x0, x1}, f.ScaleHigh, f.ScaleLow)
	res := make([][]float32, len(outs))
	copy(res, outs)
	res[0] = make([]float32, len(cond))
	for i := range filtered {
		res[0][i] = filtered[i] + uncond[i]
	}
	return res, nil
}

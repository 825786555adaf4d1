package sd

import (
	"context"
	"math"
	"slices"
)

// Sampler hooks that model patch nodes install (ComfyUI's model_options
// sampler_post_cfg_function and sampler_calc_cond_batch_function).

// PostCFG is one sampler_post_cfg_function: it rewrites the guided prediction of every
// step. The implementations are SkipLayerGuidance and CFGNorm.
type PostCFG interface {
	postCFG(ctx context.Context, s *cfgStep) ([]float32, error)
}

// CondBatchFunc replaces the evaluation of the cond and uncond lists of a CFG or basic
// guider step (sampler_calc_cond_batch_function). The implementation is
// SkipLayerGuidanceSimple.
type CondBatchFunc interface {
	condBatch(ctx context.Context, d *denoiser, cond, uncond []modelCond, x []float32, sigma float32) ([][]float32, error)
}

// cfgStep is what a post-CFG function is given (cfg_function's args).
type cfgStep struct {
	d     *denoiser
	x     []float32 // the sampler's input
	sigma float32
	// denoised is the guided prediction so far; condDenoised and uncondDenoised the
	// two it was combined from.
	denoised, condDenoised, uncondDenoised []float32
	// cond and uncond are the conditionings of the two predictions (uncond nil when it
	// was not evaluated).
	cond, uncond []modelCond
	scale        float64
}

// skipLayers are one network call's own changes: the blocks it leaves out
// (patches_replace with the identity) and the self-attention replacements a patch
// adds for the call (PerturbedAttentionGuidance's).
type skipLayers struct {
	double, single []int
	attn1          []Attn1Patch
}

var skipNone skipLayers

// SkipLayerGuidance is SkipLayerGuidanceDiT's post-CFG function (comfy_extras/
// nodes_slg.py): while SigmaEnd ≤ σ ≤ SigmaStart, the positive conditioning is evaluated
// once more with the listed blocks left out and the result is pushed away from it:
// out + (cond − skipped)·Scale, then optionally rescaled towards cond's spread.
type SkipLayerGuidance struct {
	Double, Single       []int
	Scale                float64
	SigmaStart, SigmaEnd float64
	// Rescale (rescaling_scale) blends in the factor std(cond)/std(out).
	Rescale float64
}

func (s SkipLayerGuidance) postCFG(ctx context.Context, st *cfgStep) ([]float32, error) {
	sig := float64(st.sigma)
	if !(s.Scale > 0 && sig >= s.SigmaEnd && sig <= s.SigmaStart) {
		return st.denoised, nil
	}
	outs, err := st.d.calcCondBatch(ctx, [][]modelCond{st.cond}, st.x, st.sigma, skipLayers{double: s.Double, single: s.Single})
	if err != nil {
		return nil, err
	}
	slg := outs[0]
	scale := float32(s.Scale)
	out := make([]float32, len(st.denoised))
	for i := range out {
		out[i] = st.denoised[i] + (st.condDenoised[i]-slg[i])*scale
	}
	if s.Rescale != 0 {
		// factor = std(cond)/std(out) (torch.std: unbiased, over every element), then
		// rescaling_scale·factor + (1 − rescaling_scale), a float32 scalar.
		f := float32(std(st.condDenoised) / std(out))
		f = float32(s.Rescale)*f + float32(1-s.Rescale)
		for i := range out {
			out[i] *= f
		}
	}
	return out, nil
}

// std is the unbiased standard deviation, accumulated in float64 and rounded to
// float32 as torch.std of a float32 tensor returns it.
func std(v []float32) float64 {
	if len(v) < 2 {
		return math.NaN()
	}
	var mean float64
	for _, x := range v {
		mean += float64(x)
	}
	mean /= float64(len(v))
	var ss float64
	for _, x := range v {
		d := float64(x) - mean
		ss += d * d
	}
	return float64(float32(math.Sqrt(ss / float64(len(v)-1))))
}

// SkipLayerGuidanceSimple is SkipLayerGuidanceDiTSimple's cond-batch function: while
// SigmaEnd ≤ σ ≤ SigmaStart (and a negative is evaluated at all), the negative
// conditioning runs with the listed blocks left out and the positive without.
type SkipLayerGuidanceSimple struct {
	Double, Single       []int
	SigmaStart, SigmaEnd float64
}

func (s SkipLayerGuidanceSimple) condBatch(ctx context.Context, d *denoiser, cond, uncond []modelCond, x []float32, sigma float32) ([][]float32, error) {
	sig := float64(sigma)
	if !(sig >= s.SigmaEnd && sig <= s.SigmaStart && uncond != nil) {
		return d.calcCondBatch(ctx, [][]modelCond{cond, uncond}, x, sigma, skipNone)
	}
	c, err := d.calcCondBatch(ctx, [][]modelCond{cond, nil}, x, sigma, skipNone)
	if err != nil {
		return nil, err
	}
	u, err := d.calcCondBatch(ctx, [][]modelCond{nil, uncond}, x, sigma, skipLayers{double: s.Double, single: s.Single})
	if err != nil {
		return nil, err
	}
	return [][]float32{c[0], u[1]}, nil
}

// CFGNorm is CFGNorm's post-CFG function (comfy_extras/nodes_cfg.py): at every latent
// pixel the guided prediction is scaled down to the norm (over channels) of the cond
// prediction, never up, then by Strength.
type CFGNorm struct {
	Strength float64
}

func (n CFGNorm) postCFG(_ context.Context, st *cfgStep) ([]float32, error) {
	shape := st.d.shape
	b, c, hw := shape[0], shape[1], shape[2]*shape[3]
	out := make([]float32, len(st.denoised))
	strength := float32(n.Strength)
	for bi := 0; bi < b; bi++ {
		base := bi * c * hw
		for p := 0; p < hw; p++ {
			var nc, np float64
			for ch := 0; ch < c; ch++ {
				i := base + ch*hw + p
				nc += float64(st.condDenoised[i]) * float64(st.condDenoised[i])
				np += float64(st.denoised[i]) * float64(st.denoised[i])
			}
			s := float32(math.Sqrt(nc)) / (float32(math.Sqrt(np)) + 1e-8)
			s = min(max(s, 0), 1)
			for ch := 0; ch < c; ch++ {
				i := base + ch*hw + p
				out[i] = st.denoised[i] * s * strength
			}
		}
	}
	return out, nil
}

// ParseLayers reads a layer list as the SLG nodes do (re.findall(r'\d+', s)): every run
// of decimal digits is a layer, anything else separates them.
func ParseLayers(s string) []int {
	var out []int
	n, in := 0, false
	for _, r := range s {
		if r >= '0' && r <= '9' {
			if n > math.MaxInt32 {
				// Python's int is unbounded; a layer this large matches no block.
				n = math.MaxInt32
			} else {
				n = n*10 + int(r-'0')
			}
			in = true
			continue
		}
		if in {
			out = append(out, n)
		}
		n, in = 0, false
	}
	if in {
		out = append(out, n)
	}
	return slices.Clip(out)
}

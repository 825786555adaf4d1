package sd

import (
	"context"
	"errors"
	"fmt"

	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
)

// GuiderKind says how a Guider combines its conditioning lists.
type GuiderKind int

// The guiders of ComfyUI (comfy/samplers.py CFGGuider, comfy_extras/
// nodes_custom_sampler.py Guider_Basic and Guider_DualCFG).
const (
	// CFG: uncond + (cond − uncond)·cfg, the uncond evaluation skipped at cfg 1.
	CFG GuiderKind = iota
	// Basic: the positive conditioning alone (no negative, cfg 1).
	Basic
	// DualCFG: two positive conditionings and a negative (regular or nested).
	DualCFG
	// PerpNeg: positive, negative and an empty conditioning combined by Perp-Neg
	// (comfy_extras/nodes_perpneg.py Guider_PerpNeg).
	PerpNeg
)

// Guider is ComfyUI's GUIDER: a model with its conditioning and guidance scale. Sample
// runs a sampler with it. A Guider is immutable and may be shared by several runs.
type Guider struct {
	Model *Model
	Kind  GuiderKind
	// Positive and Negative are CFG's conds; Basic uses Positive only. DualCFG uses
	// Positive (cond1), Middle (cond2) and Negative; PerpNeg Positive, Negative and
	// Middle as its empty conditioning.
	Positive, Middle, Negative Conditioning
	// CFG is the guidance scale (DualCFG: cfg_conds, between cond1 and cond2).
	CFG float64
	// CFG2 is DualCFG's cfg_cond2_negative.
	CFG2 float64
	// Nested selects DualCFG's "nested" style.
	Nested bool
	// NegScale is PerpNeg's neg_scale.
	NegScale float64

	// forward replaces the network call in tests (to count and inspect batches).
	forward func(ctx context.Context, in NetInputs) (*gpu.Tensor, error)
}

// NewCFGGuider returns ComfyUI's CFGGuider.
func NewCFGGuider(m *Model, positive, negative Conditioning, cfg float64) *Guider {
	return &Guider{Model: m, Kind: CFG, Positive: positive, Negative: negative, CFG: cfg}
}

// NewBasicGuider returns Guider_Basic (BasicGuider): the conditioning alone, cfg 1.
func NewBasicGuider(m *Model, cond Conditioning) *Guider {
	return &Guider{Model: m, Kind: Basic, Positive: cond, CFG: 1}
}

// NewDualCFGGuider returns Guider_DualCFG: cond1 guided against cond2 by cfgConds and
// cond2 against the negative by cfgCond2Negative. cond2 counts as a negative prompt for
// model defaults (ComfyUI marks it prompt_type "negative").
func NewDualCFGGuider(m *Model, cond1, cond2, negative Conditioning, cfgConds, cfgCond2Negative float64, nested bool) *Guider {
	return &Guider{Model: m, Kind: DualCFG, Positive: cond1, Middle: cond2, Negative: negative,
		CFG: cfgConds, CFG2: cfgCond2Negative, Nested: nested}
}

// prepared holds a guider's conditioning lists ready for one sampling run.
type prepared struct {
	pos, mid, neg []modelCond
}

// prepare is prepareFor a single latent of h×w without latent data or noise mask.
func (g *Guider) prepare(h, w int) (*prepared, error) {
	return g.prepareFor([4]int{1, g.Model.Latent.Channels, h, w}, nil, nil)
}

// prepareFor runs process_conds for a latent of the given shape: model conds per list
// (with the inpainting concat from latent, the processed latent, and mask, its
// prepared noise mask or nil), then the matching opposite-area entries across lists
// (in ComfyUI's dict order), then the positive controls and GLIGEN groundings passed to
// the other lists.
func (g *Guider) prepareFor(shape [4]int, latent, mask []float32) (*prepared, error) {
	h, w := shape[2], shape[3]
	prep := func(list Conditioning, negative bool) ([]modelCond, error) {
		mc, err := prepareConds(g.Model, list, h, w, negative)
		if err != nil {
			return nil, err
		}
		return withModelExtras(g.Model, list, mc, shape, latent, mask)
	}
	var p prepared
	var err error
	if p.pos, err = prep(g.Positive, false); err != nil {
		return nil, fmt.Errorf("positive: %w", err)
	}
	var lists [][]modelCond
	switch g.Kind {
	case CFG:
		if p.neg, err = prep(g.Negative, true); err != nil {
			return nil, fmt.Errorf("negative: %w", err)
		}
		lists = [][]modelCond{p.pos, p.neg}
	case Basic:
		lists = [][]modelCond{p.pos}
	case DualCFG:
		if p.mid, err = prep(g.Middle, true); err != nil {
			return nil, fmt.Errorf("cond2: %w", err)
		}
		if p.neg, err = prep(g.Negative, true); err != nil {
			return nil, fmt.Errorf("negative: %w", err)
		}
		lists = [][]modelCond{p.pos, p.mid, p.neg}
	case PerpNeg:
		// Guider_PerpNeg's dict order: positive, empty_negative_prompt, negative.
		if p.mid, err = prep(g.Middle, true); err != nil {
			return nil, fmt.Errorf("empty_conditioning: %w", err)
		}
		if p.neg, err = prep(g.Negative, true); err != nil {
			return nil, fmt.Errorf("negative: %w", err)
		}
		lists = [][]modelCond{p.pos, p.mid, p.neg}
	default:
		return nil, fmt.Errorf("unknown guider kind %d", g.Kind)
	}
	sameAreaOpposites(lists)
	p.pos = lists[0]
	switch g.Kind {
	case CFG:
		p.neg = controlToUncond(p.pos, lists[1])
		shareGLIGEN([][]modelCond{p.pos, p.neg})
	case DualCFG, PerpNeg:
		p.mid = controlToUncond(p.pos, lists[1])
		p.neg = controlToUncond(p.pos, lists[2])
		shareGLIGEN([][]modelCond{p.pos, p.mid, p.neg})
	}
	return &p, nil
}

// withModelExtras adds what process_conds attaches beside the text conditioning: each
// entry's control and, for an inpainting or InstructPix2Pix model, its c_concat.
func withModelExtras(m *Model, list Conditioning, mc []modelCond, shape [4]int, latent, mask []float32) ([]modelCond, error) {
	inpaint := m.isInpaintModel()
	fn, fill := m.network().(FluxNetwork)
	fill = fill && fn.ReadsDenoiseMask()
	for i := range mc {
		mc[i].control = list[i].Control
		mc[i].controlToUncond = list[i].ControlApplyToUncond
		if fill && (list[i].ConcatLatent != nil || list[i].ConcatMask != nil) {
			// Without either, FluxNetwork adds concat_cond's defaults itself.
			cc, err := fluxConcat(m.Runtime, fn.Model, list[i], shape, mask)
			if err != nil {
				return nil, fmt.Errorf("sd: conditioning entry %d: %w", i, err)
			}
			mc[i].concat, mc[i].concatC = cc, fn.Model.ConcatChannels()
			continue
		}
		if m.IP2P {
			cc, err := ip2pConcat(m, list[i], shape)
			if err != nil {
				return nil, fmt.Errorf("sd: conditioning entry %d: %w", i, err)
			}
			mc[i].concat, mc[i].concatC = cc, shape[1]
			continue
		}
		if !inpaint {
			continue
		}
		if shape[1]+1+shape[1] != m.inChannels() {
			return nil, fmt.Errorf("sd: the inpainting model takes %d input channels, a %d-channel latent with its mask and masked image makes %d", m.inChannels(), shape[1], 2*shape[1]+1)
		}
		cc, err := concatCond(m, list[i], shape, latent, mask)
		if err != nil {
			return nil, fmt.Errorf("sd: conditioning entry %d: %w", i, err)
		}
		mc[i].concat, mc[i].concatC = cc, 1+shape[1]
	}
	return mc, nil
}

// denoiser is the sampling.Model of one run: the guider's prediction behind ComfyUI's
// KSamplerX0Inpaint (the noise-mask blend).
type denoiser struct {
	g     *Guider
	p     *prepared
	shape [4]int // N, C, H, W
	// keepUncond disables the cfg-1 shortcut and returns the unconditional prediction
	// (samplers marked CFGPP: ComfyUI's disable_cfg1_optimization plus the
	// post-cfg hook that records uncond_denoised).
	keepUncond bool
	// Inpainting: mask (latent-sized, 1 = denoise), the processed latent and the noise
	// it is re-noised with.
	mask, latent, noise []float32
	// sigmas are the run's noise levels (for the model's DenoiseMask function).
	sigmas []float32
	// controls are the runs of the conds' controls, by control.
	controls map[Control]ControlRun
	// state is what the model's patches keep during the run.
	state runState
	// seed is the run's seed (the sampler's extra_args seed).
	seed uint64
	// work is what the steps reuse (stepwork.go); release frees its tensors.
	work stepWork
}

// release frees what the run's steps kept.
func (d *denoiser) release() { d.work.release() }

// Denoise implements sampling.Model.
func (d *denoiser) Denoise(ctx context.Context, x []float32, sigma float32) ([]float32, []float32, error) {
	den := make([]float32, len(x))
	uncond, err := d.DenoiseInto(ctx, den, x, sigma)
	if err != nil {
		return nil, nil, err
	}
	if uncond != nil {
		// Denoise's results are the caller's; DenoiseInto's uncond is a step buffer.
		uncond = append([]float32(nil), uncond...)
	}
	return den, uncond, nil
}

// DenoiseInto implements sampling.IntoModel: the plain CFG path reuses the run's buffers
// (stepWork) and writes the guided estimate straight into dst.
func (d *denoiser) DenoiseInto(ctx context.Context, dst, x []float32, sigma float32) ([]float32, error) {
	if len(x) != d.shape[0]*d.shape[1]*d.shape[2]*d.shape[3] || len(dst) != len(x) {
		return nil, fmt.Errorf("sd: denoise: x has %d values and the result %d, the latent %v", len(x), len(dst), d.shape)
	}
	in := x
	mask := d.mask
	if mask != nil && d.g.Model.DenoiseMask != nil {
		mask = d.g.Model.DenoiseMask(d.g.Model, sigma, d.sigmas, mask)
		if len(mask) != len(x) {
			return nil, fmt.Errorf("sd: denoise: the model's denoise mask function returned %d values for %d", len(mask), len(x))
		}
	}
	if mask != nil {
		// Outside the mask the sampler sees the original latent noised to this sigma.
		w := &d.work
		w.scaled = grow(w.scaled, len(x))
		sampling.NoiseScaling(d.g.Model.Sampling.Prediction(), sigma, d.noise, d.latent, w.scaled, false)
		w.masked = grow(w.masked, len(x))
		in = w.masked
		for i := range x {
			in[i] = x[i]*mask[i] + w.scaled[i]*(1-mask[i])
		}
	}
	uncond, err := d.predict(ctx, dst, in, sigma)
	if err != nil {
		return nil, err
	}
	if mask != nil {
		for i := range dst {
			dst[i] = dst[i]*mask[i] + d.latent[i]*(1-mask[i])
		}
	}
	return uncond, nil
}

// predict is the guider's predict_noise: evaluate the needed lists in one batched pass
// and combine them into den (sampling_function, cfg_function and
// Guider_DualCFG.predict_noise, with the model's post-CFG functions and cond-batch
// replacement). It returns the unconditional prediction for CFG++ samplers (nil
// otherwise), which may be a step buffer.
func (d *denoiser) predict(ctx context.Context, den, x []float32, sigma float32) ([]float32, error) {
	g := d.g
	switch g.Kind {
	case Basic, CFG:
		// Guider_Basic is a CFGGuider with cfg 1 and no negative.
		scale, neg := g.CFG, d.p.neg
		if g.Kind == Basic {
			scale, neg = 1, nil
		}
		if isClose(scale, 1) && !d.keepCFG1() {
			neg = nil
		}
		w := &d.work
		w.lists = append(w.lists[:0], d.p.pos, neg)
		var outs [][]float32
		var err error
		if f := g.Model.CondBatch; f != nil {
			outs, err = f.condBatch(ctx, d, d.p.pos, neg, x, sigma)
		} else {
			w.outs = listBufs(w.outs, len(w.lists), len(x))
			outs, err = d.calcCondBatchTo(ctx, w.outs, w.lists, x, sigma, skipNone)
		}
		if err != nil {
			return nil, err
		}
		if outs, err = d.preCFG(ctx, w.lists, outs, scale, x, sigma); err != nil {
			return nil, err
		}
		if err := d.cfgInto(ctx, den, outs[0], outs[1], scale, x, sigma, d.p.pos, neg); err != nil {
			return nil, err
		}
		if d.keepUncond {
			return outs[1], nil
		}
		return nil, nil
	case DualCFG:
		neg, mid, pos := d.p.neg, d.p.mid, d.p.pos
		if !g.Nested && !d.keepCFG1() && isClose(g.CFG2, 1) {
			neg = nil
			if isClose(g.CFG, 1) {
				mid = nil
			}
		}
		outs, err := d.calcCondBatch(ctx, [][]modelCond{neg, mid, pos}, x, sigma, skipNone)
		if err != nil {
			return nil, err
		}
		n, m, p := outs[0], outs[1], outs[2]
		var uncond []float32
		if g.Nested {
			text, err := d.cfg(ctx, p, m, g.CFG, x, sigma, pos, mid)
			if err != nil {
				return nil, err
			}
			c2 := float32(g.CFG2)
			for i := range den {
				den[i] = n[i] + c2*(text[i]-n[i])
			}
			uncond = m
		} else {
			base, err := d.cfg(ctx, m, n, g.CFG2, x, sigma, mid, neg)
			if err != nil {
				return nil, err
			}
			c1 := float32(g.CFG)
			for i := range den {
				den[i] = base[i] + (p[i]-m[i])*c1
			}
			uncond = n
		}
		if d.keepUncond {
			return uncond, nil
		}
		return nil, nil
	case PerpNeg:
		out, uncond, err := d.predictPerpNeg(ctx, x, sigma)
		if err != nil {
			return nil, err
		}
		copy(den, out)
		return uncond, nil
	}
	return nil, fmt.Errorf("sd: unknown guider kind %d", g.Kind)
}

// keepCFG1 reports whether the cfg-1 shortcut (no uncond evaluation) is off: for
// CFG++ samplers and for models patched with disable_cfg1_optimization.
func (d *denoiser) keepCFG1() bool { return d.keepUncond || d.g.Model.DisableCFG1 }

// cfg is cfg_function: uncond + (cond − uncond)·scale, or the model's CFG function
// (sampler_cfg_function), then the model's post-CFG functions in order. condList and
// uncondList are the conditionings the two predictions came from (uncondList nil when
// the uncond was not evaluated).
func (d *denoiser) cfg(ctx context.Context, cond, uncond []float32, scale float64, x []float32, sigma float32, condList, uncondList []modelCond) ([]float32, error) {
	st := &cfgStep{d: d, x: x, sigma: sigma, condDenoised: cond, uncondDenoised: uncond, cond: condList, uncond: uncondList, scale: scale}
	var out []float32
	if f := d.g.Model.CFGFunc; f != nil {
		var err error
		if out, err = f.cfgFunc(ctx, st); err != nil {
			return nil, err
		}
	} else {
		out = cfgCombine(cond, uncond, scale)
	}
	return d.postCFG(ctx, st, out)
}

// cfgInto is cfg writing into dst; without a model CFG or post-CFG function it is
// cfgCombine in place, which needs no cfgStep.
func (d *denoiser) cfgInto(ctx context.Context, dst, cond, uncond []float32, scale float64, x []float32, sigma float32, condList, uncondList []modelCond) error {
	if d.g.Model.CFGFunc == nil && len(d.g.Model.PostCFG) == 0 {
		cfgCombineTo(dst, cond, uncond, scale)
		return nil
	}
	out, err := d.cfg(ctx, cond, uncond, scale, x, sigma, condList, uncondList)
	if err != nil {
		return err
	}
	copy(dst, out)
	return nil
}

// postCFG applies the model's post-CFG functions to the guided prediction out.
func (d *denoiser) postCFG(ctx context.Context, st *cfgStep, out []float32) ([]float32, error) {
	for _, f := range d.g.Model.PostCFG {
		s := *st
		s.denoised = out
		var err error
		if out, err = f.postCFG(ctx, &s); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// cfgCombine is cfg_function: uncond + (cond − uncond)·scale, in float32.
func cfgCombine(cond, uncond []float32, scale float64) []float32 {
	out := make([]float32, len(cond))
	cfgCombineTo(out, cond, uncond, scale)
	return out
}

// cfgCombineTo is cfgCombine into out.
func cfgCombineTo(out, cond, uncond []float32, scale float64) {
	s := float32(scale)
	for i := range out {
		out[i] = uncond[i] + (cond[i]-uncond[i])*s
	}
}

// calcCondBatch is ComfyUI's calc_cond_batch: every active entry of every list (nil
// lists are skipped) is evaluated on its region of x, entries that fit together go
// through the network as one batch, and each list's result is the mult-weighted average of
// its entries' predictions (1e-37 keeps uncovered pixels at 0).
//
// The results are new slices; calcCondBatchTo writes into given ones.
func (d *denoiser) calcCondBatch(ctx context.Context, lists [][]modelCond, x []float32, sigma float32, skip skipLayers) ([][]float32, error) {
	return d.calcCondBatchTo(ctx, make([][]float32, len(lists)), lists, x, sigma, skip)
}

// calcCondBatchTo is calcCondBatch writing list i's result into outs[i] (made when it
// does not hold len(x) values). Its scratch (weights, entries, batching lists) is the
// run's stepWork, so calls follow one another and never nest.
func (d *denoiser) calcCondBatchTo(ctx context.Context, outs [][]float32, lists [][]modelCond, x []float32, sigma float32, skip skipLayers) ([][]float32, error) {
	n, c, h, w := d.shape[0], d.shape[1], d.shape[2], d.shape[3]
	wk := &d.work
	wk.counts = listBufs(wk.counts, len(lists), len(x))
	counts := wk.counts
	total := 0
	for _, list := range lists {
		total += len(list)
	}
	if cap(wk.entries) < total {
		wk.entries = append(wk.entries[:cap(wk.entries)], make([]activeEntry, total-cap(wk.entries))...)
	}
	entries := wk.entries[:total]
	// toRun and rest trade storage below, and pick/batch hold up to total entries: all
	// four take room for every entry at once, so that no later step grows one of them.
	for _, l := range []*[]*activeEntry{&wk.toRun, &wk.rest, &wk.batch} {
		if cap(*l) < total {
			*l = make([]*activeEntry, 0, total)
		}
	}
	if cap(wk.pick) < total {
		wk.pick = make([]int, 0, total)
	}
	toRun := wk.toRun[:0]
	for i, list := range lists {
		if len(outs[i]) != len(x) {
			outs[i] = make([]float32, len(x))
		} else {
			clear(outs[i])
		}
		for k := range counts[i] {
			counts[i][k] = 1e-37
		}
		for j := range list {
			e := &entries[0]
			entries = entries[1:]
			ok, err := e.set(i, &list[j], h, w, float64(sigma))
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
			if e.multN > 1 {
				// mask[:N] tiled over the batch (get_area_and_mult's repeat), which
				// fails in torch unless the planes left divide the batch.
				e.multN = min(e.multN, n)
				if n%e.multN != 0 {
					return nil, fmt.Errorf("sd: a conditioning mask of %d planes does not fit a batch of %d latents", e.multN, n)
				}
			}
			toRun = append(toRun, e)
		}
	}
	for len(toRun) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		first := toRun[0]
		pick := wk.pick[:0]
		for j, e := range toRun {
			if canBatch(e, first, d.g.Model.ExactContext) {
				pick = append(pick, j)
			}
		}
		// ComfyUI takes the compatible entries last to first.
		batch := wk.batch[:0]
		for k := len(pick) - 1; k >= 0; k-- {
			batch = append(batch, toRun[pick[k]])
		}
		rest := wk.rest[:0]
		for j, e := range toRun {
			if !containsInt(pick, j) {
				rest = append(rest, e)
			}
		}
		wk.pick, wk.batch, wk.rest = pick, batch, toRun[:0]
		toRun = rest

		preds, err := d.applyModel(ctx, batch, x, sigma, skip)
		if err != nil {
			return nil, err
		}
		ah, aw := batch[0].ah, batch[0].aw
		per := n * c * ah * aw
		for b, e := range batch {
			pred := preds[b*per : (b+1)*per]
			out, cnt := outs[e.list], counts[e.list]
			for ni := 0; ni < n*c; ni++ {
				plane := (ni / c) % e.multN
				for yy := 0; yy < ah; yy++ {
					src := pred[(ni*ah+yy)*aw:]
					dst := (ni*h+e.y0+yy)*w + e.x0
					m := e.mult[(plane*ah+yy)*aw:]
					for xx := 0; xx < aw; xx++ {
						out[dst+xx] += src[xx] * m[xx]
						cnt[dst+xx] += m[xx]
					}
				}
			}
		}
	}
	wk.toRun = toRun[:0]
	for i := range outs {
		for k := range outs[i] {
			outs[i][k] /= counts[i][k]
		}
	}
	return outs, nil
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// applyModel is BaseModel.apply_model over one batch of entries: each entry's region of
// x (all N items), their contexts padded to a common token count by repetition, the
// label vectors and guidance, one network call; it returns the denoised predictions in
// batch order, in a step buffer that the next call overwrites. The input, timestep,
// context and label tensors are the run's (stepWork), rewritten in place from step to
// step.
func (d *denoiser) applyModel(ctx context.Context, batch []*activeEntry, x []float32, sigma float32, skip skipLayers) ([]float32, error) {
	m := d.g.Model
	rt := m.Runtime
	wk := &d.work
	n, c, h, w := d.shape[0], d.shape[1], d.shape[2], d.shape[3]
	ah, aw := batch[0].ah, batch[0].aw
	input := wk.input[:0]
	tokens, dim := batch[0].c.tokens, batch[0].c.dim
	for _, e := range batch {
		tokens = lcm(tokens, e.c.tokens)
		for ni := 0; ni < n*c; ni++ {
			for yy := 0; yy < ah; yy++ {
				row := (ni*h+e.y0+yy)*w + e.x0
				input = append(input, x[row:row+aw]...)
			}
		}
	}
	wk.input = input
	ctxData, yData := wk.ctxData[:0], wk.yData[:0]
	var guidance []float32
	for _, e := range batch {
		if e.c.hasGuidance {
			for range n {
				guidance = append(guidance, e.c.guidance)
			}
		}
		// Each item's context (the entry's rows repeated to the batch: repeatRows),
		// repeated up to the batch's token count.
		per := e.c.tokens * dim
		rep := tokens / e.c.tokens
		for ni := 0; ni < n; ni++ {
			r := ni % e.c.ctxBatch
			item := e.c.context[r*per : (r+1)*per]
			for range rep {
				ctxData = append(ctxData, item...)
			}
		}
		if e.c.y != nil {
			for ni := 0; ni < n; ni++ {
				r := ni % e.c.yBatch
				yData = append(yData, e.c.y[r*e.c.yDim:(r+1)*e.c.yDim]...)
			}
		}
	}
	wk.ctxData, wk.yData = ctxData, yData
	bn := n * len(batch)
	pred := m.Sampling.Prediction()
	wk.xin = grow(wk.xin, len(input))
	xin := wk.xin
	sampling.CalculateInput(pred, sigma, input, xin)
	wk.ts = grow(wk.ts, bn)
	t := m.Sampling.Timestep(sigma)
	for i := range wk.ts {
		wk.ts[i] = t
	}
	var tensors []*gpu.Tensor
	defer func() {
		for _, t := range tensors {
			t.Release()
		}
	}()
	mk := func(data []float32, shape ...int) (*gpu.Tensor, error) {
		t, err := rt.FromFloat32(data, shape...)
		if err == nil {
			tensors = append(tensors, t)
		}
		return t, err
	}
	hooks, err := d.unetHooks(batch, skip.attn1, sigma)
	if err != nil {
		return nil, err
	}
	in := NetInputs{SkipDouble: skip.double, SkipSingle: skip.single, UNetHooks: hooks}
	if in.X, err = wk.x.set(rt, xin, [4]int{bn, c, ah, aw}, 4); err != nil {
		return nil, err
	}
	if in.Timesteps, err = wk.timesteps.set(rt, wk.ts, [4]int{bn}, 1); err != nil {
		return nil, err
	}
	xControl := in.X
	if batch[0].c.concat != nil {
		// apply_model concatenates c_concat after calculate_input.
		if in.X, err = mk(d.withConcat(batch, xin), bn, c+batch[0].c.concatC, ah, aw); err != nil {
			return nil, err
		}
	}
	if in.Context, err = wk.context.set(rt, ctxData, [4]int{bn, tokens, dim}, 3); err != nil {
		return nil, err
	}
	if len(yData) > 0 {
		if in.Y, err = wk.y.set(rt, yData, [4]int{bn, batch[0].c.yDim}, 2); err != nil {
			return nil, err
		}
	}
	if guidance != nil {
		if in.Guidance, err = mk(guidance, bn); err != nil {
			return nil, err
		}
	}
	if refs := batch[0].c.refs; len(refs) > 0 {
		// CONDList: each reference repeated to the batch size per entry, then the
		// entries' references joined along the batch, reference by reference.
		in.RefMethod = batch[0].c.refMethod
		for j, r := range refs {
			per := r.shape[1] * r.shape[2] * r.shape[3]
			data := make([]float32, 0, bn*per)
			for _, e := range batch {
				data = append(data, repeatRows(e.c.refs[j].data, e.c.refs[j].shape[0], per, n)...)
			}
			t, err := mk(data, bn, r.shape[1], r.shape[2], r.shape[3])
			if err != nil {
				return nil, err
			}
			in.RefLatents = append(in.RefLatents, t)
		}
	}
	if ctl := batch[0].c.control; ctl != nil {
		run := d.controls[ctl]
		if run == nil {
			return nil, errors.New("sd: a conditioning entry's control was not started")
		}
		if in.Control, err = run.Residuals(ctx, ControlInputs{X: xControl, Timesteps: in.Timesteps, Sigma: sigma,
			Context: in.Context, Y: in.Y, Batched: len(batch)}); err != nil {
			return nil, fmt.Errorf("sd: control: %w", err)
		}
		if in.Control != nil {
			defer releaseControl(in.Control)
		}
	}
	if d.mask != nil && wantsDenoiseMask(m.network()) {
		// The noise mask cut to the entries' regions as the input was.
		md := make([]float32, 0, len(input))
		for _, e := range batch {
			for ni := 0; ni < n*c; ni++ {
				for yy := 0; yy < ah; yy++ {
					row := (ni*h+e.y0+yy)*w + e.x0
					md = append(md, d.mask[row:row+aw]...)
				}
			}
		}
		if in.DenoiseMask, err = mk(md, bn, c, ah, aw); err != nil {
			return nil, err
		}
	}
	var out *gpu.Tensor
	if f := d.g.forward; f != nil {
		out, err = f(ctx, in)
	} else {
		net := m.network()
		if net == nil {
			return nil, errors.New("sd: the model has no diffusion network")
		}
		out, err = net.Forward(ctx, rt, in)
	}
	if err != nil {
		return nil, err
	}
	defer out.Release()
	eps, ok := out.HostFloat32()
	if !ok {
		if eps, err = out.Float32(); err != nil {
			return nil, err
		}
	}
	if len(eps) != len(input) {
		return nil, fmt.Errorf("sd: the network returned %v for an input of (%d, %d, %d, %d)", out.Shape(), bn, c, ah, aw)
	}
	wk.den = grow(wk.den, len(input))
	sampling.CalculateDenoised(pred, sigma, eps, input, wk.den)
	return wk.den, nil
}

// withConcat interleaves the batch's model input xin (entries × N items of c channels)
// with each entry's c_concat over its region: torch.cat([xc, c_concat], dim=1).
func (d *denoiser) withConcat(batch []*activeEntry, xin []float32) []float32 {
	n, c, h, w := d.shape[0], d.shape[1], d.shape[2], d.shape[3]
	ah, aw := batch[0].ah, batch[0].aw
	cc := batch[0].c.concatC
	per := c * ah * aw
	out := make([]float32, 0, len(xin)/c*(c+cc))
	k := 0
	for _, e := range batch {
		for ni := 0; ni < n; ni++ {
			out = append(out, xin[k*per:(k+1)*per]...)
			k++
			for ch := 0; ch < cc; ch++ {
				for yy := 0; yy < ah; yy++ {
					row := ((ni*cc+ch)*h+e.y0+yy)*w + e.x0
					out = append(out, e.c.concat[row:row+aw]...)
				}
			}
		}
	}
	return out
}

// releaseControl frees the residual tensors of a control.
func releaseControl(c *unet.Control) {
	for _, t := range c.Input {
		if t != nil {
			t.Release()
		}
	}
	for _, t := range c.Output {
		if t != nil {
			t.Release()
		}
	}
	if c.Middle != nil {
		c.Middle.Release()
	}
}

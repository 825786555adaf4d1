package sd

import (
	"context"
	"fmt"
	"math"

	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
)

// NewCond returns a conditioning entry with ComfyUI's defaults: full strength, no area,
// active over the whole run. Code that builds a Cond should start from it: the zero
// value of Strength and EndPercent would switch the entry off.
func NewCond(embedding, pooled *gpu.Tensor) Cond {
	return Cond{Embedding: embedding, Pooled: pooled, Strength: 1, EndPercent: 1}
}

// Default SDXL refiner aesthetic scores (comfy/model_base.py SDXLRefiner.encode_adm):
// 6 for the positive prompt, 2.5 for a "negative" one.
const (
	refinerScorePositive = 6
	refinerScoreNegative = 2.5
)

// modelCond is one conditioning entry prepared for the UNet: ComfyUI's cond dict after
// process_conds (comfy/samplers.py) — cross-attention context, the ADM vector y, the
// area, strength and the timestep range turned into sigmas.
type modelCond struct {
	context      []float32 // (ctxBatch, tokens, dim)
	ctxBatch     int
	tokens, dim  int
	y            []float32 // (yBatch, yDim), nil without ADM
	yBatch, yDim int
	area         *Area
	strength     float32
	// mask is the entry's conditioning mask resized to the latent, maskN planes of
	// h×w (nil for none), and maskStrength its mask_strength.
	mask            []float32
	maskN           int
	maskStrength    float32
	guidance        float32 // Flux's guidance scale, when hasGuidance
	hasGuidance     bool
	refs            []refLatent // reference latents in model space (ref_latents), nil for none
	refMethod       string      // ref_latents_method, "" when unset
	sigmaStart      float64     // the entry is skipped while sigma > sigmaStart
	sigmaEnd        float64     // … or sigma < sigmaEnd
	fromOtherPrompt bool        // added by sameAreaOpposites (for tests and logs)
	// control is the entry's ControlNet/T2I-Adapter; controlToUncond passes it to the
	// negative entries (control_apply_to_uncond).
	control         Control
	controlToUncond bool
	// concat is an inpainting model's c_concat for the whole latent, (N, concatC, H,
	// W); nil for other models.
	concat  []float32
	concatC int
	// unclip are an unCLIP model's image embeddings; y is made from them per run.
	unclip []UnCLIPCond
	// gligen is the entry's GLIGEN grounding, nil for none; gligenObjs are its
	// grounding tokens for the region size gligenKey (N, h, w), made once per run.
	gligen     *GLIGENBoxes
	gligenObjs []float32
	gligenKey  [3]int
}

// prepareConds turns a CONDITIONING list into model conds for a latent of h×w (latent
// units): encode_model_conds and calculate_start_end_timesteps of comfy/samplers.py.
// negative selects the refiner's negative aesthetic-score default (ComfyUI's
// prompt_type "negative").
func prepareConds(m *Model, list Conditioning, h, w int, negative bool) ([]modelCond, error) {
	out := make([]modelCond, 0, len(list))
	for i, c := range list {
		if c.Embedding == nil {
			return nil, fmt.Errorf("sd: conditioning entry %d has no embedding", i)
		}
		if c.Strength == 0 && c.StartPercent == 0 && c.EndPercent == 0 && c.Area == nil {
			return nil, fmt.Errorf("sd: conditioning entry %d is an unset Cond (strength 0, end 0): build entries with sd.NewCond", i)
		}
		if c.Embedding.Rank() != 3 {
			return nil, fmt.Errorf("sd: conditioning entry %d: embedding %v is not (N, tokens, dim)", i, c.Embedding.Shape())
		}
		ctx, err := c.Embedding.Float32()
		if err != nil {
			return nil, fmt.Errorf("sd: conditioning entry %d: %w", i, err)
		}
		area, mask, maskN, err := resolveRegion(c, h, w)
		if err != nil {
			return nil, fmt.Errorf("sd: conditioning entry %d: %w", i, err)
		}
		mc := modelCond{
			context:  ctx,
			ctxBatch: c.Embedding.Dim(0), tokens: c.Embedding.Dim(1), dim: c.Embedding.Dim(2),
			area:     area,
			strength: float32(c.Strength),
			mask:     mask, maskN: maskN, maskStrength: float32(c.MaskStrength),
			sigmaStart: m.Sampling.PercentToSigma(c.StartPercent),
			sigmaEnd:   m.Sampling.PercentToSigma(c.EndPercent),
		}
		if mc.ctxBatch == 0 || mc.tokens == 0 || mc.dim == 0 {
			return nil, fmt.Errorf("sd: conditioning entry %d: empty embedding %v", i, c.Embedding.Shape())
		}
		if area != nil && (area.Height <= 0 || area.Width <= 0 || area.X < 0 || area.Y < 0) {
			return nil, fmt.Errorf("sd: conditioning entry %d: bad area %+v", i, *area)
		}
		if c.AttentionMask != nil && m.UNet == nil {
			// UNets ignore attention_mask as ComfyUI's BaseModel does. A Flux takes one
			// (NetInputs.AttentionMask), but the resize of the mask's image part to the
			// sampled latent (Flux.extra_conds' upscale_dit_mask) is not built yet.
			return nil, fmt.Errorf("sd: conditioning entry %d carries an attention mask (StyleModelApply attn_bias with strength ≠ 1), which is not passed to %s models yet: use strength_type multiply", i, m.Name)
		}
		if c.GLIGEN != nil {
			if err := checkGLIGEN(m, c.GLIGEN); err != nil {
				return nil, fmt.Errorf("sd: conditioning entry %d: %w", i, err)
			}
			mc.gligen = c.GLIGEN
		}
		switch {
		case m.UnCLIP != nil:
			mc.unclip = c.UnCLIP
		case m.ADM:
			y, err := encodeADM(m, c, h, w, negative)
			if err != nil {
				return nil, fmt.Errorf("sd: conditioning entry %d: %w", i, err)
			}
			mc.y, mc.yBatch, mc.yDim = y, len(y)/admDim(m), admDim(m)
		case m.PooledY && c.Pooled != nil:
			if c.Pooled.Rank() != 2 || c.Pooled.Dim(0) == 0 || c.Pooled.Dim(1) == 0 {
				return nil, fmt.Errorf("sd: conditioning entry %d: pooled output %v is not (N, dim)", i, c.Pooled.Shape())
			}
			if mc.y, err = c.Pooled.Float32(); err != nil {
				return nil, fmt.Errorf("sd: conditioning entry %d: %w", i, err)
			}
			mc.yBatch, mc.yDim = c.Pooled.Dim(0), c.Pooled.Dim(1)
		}
		if m.Guidance && !c.NoGuidance {
			mc.guidance, mc.hasGuidance = defaultGuidance, true
			if c.Guidance != nil {
				mc.guidance = float32(*c.Guidance)
			}
		}
		if m.References && len(c.ReferenceLatents) > 0 {
			if mc.refs, err = prepareRefs(m, c.ReferenceLatents); err != nil {
				return nil, fmt.Errorf("sd: conditioning entry %d: %w", i, err)
			}
			mc.refMethod = c.ReferenceMethod
		}
		out = append(out, mc)
	}
	return out, nil
}

// refLatent is one reference latent of an entry, in the model's latent space.
type refLatent struct {
	data  []float32
	shape [4]int // N, C, h, w
}

// prepareRefs is the ref_latents part of model_base.Flux.extra_conds: every reference
// latent through process_latent_in.
func prepareRefs(m *Model, refs []*gpu.Tensor) ([]refLatent, error) {
	out := make([]refLatent, len(refs))
	for j, r := range refs {
		if r == nil || r.Rank() != 4 || r.Dim(0) == 0 || r.Dim(1) == 0 || r.Dim(2) == 0 || r.Dim(3) == 0 {
			var shape []int
			if r != nil {
				shape = r.Shape()
			}
			return nil, fmt.Errorf("reference latent %d %v is not a non-empty (N, C, H, W) latent", j, shape)
		}
		if ch := m.Latent.Channels; ch != 0 && r.Dim(1) != ch {
			return nil, fmt.Errorf("reference latent %d has %d channels, the model's latents %d", j, r.Dim(1), ch)
		}
		v, err := r.Float32()
		if err != nil {
			return nil, fmt.Errorf("reference latent %d: %w", j, err)
		}
		out[j] = refLatent{data: m.Latent.processIn(v)}
		copy(out[j].shape[:], r.Shape())
	}
	return out, nil
}

// sameRefs is CONDList.can_concat for ref_latents plus CONDConstant's for the method:
// as many references, each of the same shape, and one placement.
func sameRefs(a, b *modelCond) bool {
	if len(a.refs) != len(b.refs) || a.refMethod != b.refMethod {
		return false
	}
	for i := range a.refs {
		if a.refs[i].shape != b.refs[i].shape {
			return false
		}
	}
	return true
}

// defaultGuidance is the guidance model_base.Flux.extra_conds passes for an entry that
// sets none.
const defaultGuidance = 3.5

// admDim is the width of the model's label vector (label_emb.0.0's input features):
// 2816 for SDXL, 2560 for the SDXL refiner.
func admDim(m *Model) int {
	if m.UNet == nil || m.UNet.LabelEmbed.L1.Weight == nil {
		return 0
	}
	return m.UNet.LabelEmbed.L1.Weight.Dim(1)
}

// encodeADM builds the label vector y of an SDXL-style model (comfy/model_base.py
// SDXL.encode_adm and SDXLRefiner.encode_adm): the pooled text output followed by
// 256-d sinusoidal embeddings of the size conditioning. Without explicit size
// conditioning the width and height are the latent's pixel size (encode_model_conds)
// and the target size equals it, with no crop.
func encodeADM(m *Model, c Cond, h, w int, negative bool) ([]float32, error) {
	if c.Pooled == nil {
		return nil, fmt.Errorf("SDXL-style model needs a pooled text output (pooled_output), the conditioning has none")
	}
	if c.Pooled.Rank() != 2 {
		return nil, fmt.Errorf("pooled output %v is not (N, dim)", c.Pooled.Shape())
	}
	size := unet.SizeConditioning{Width: w * 8, Height: h * 8, TargetWidth: w * 8, TargetHeight: h * 8}
	if c.Size != nil {
		size = *c.Size
	}
	want := admDim(m)
	pooledDim := c.Pooled.Dim(1)
	switch want - pooledDim {
	case 6 * 256: // SDXL base
		y, err := unet.EncodeADM(m.Runtime, c.Pooled, size)
		if err != nil {
			return nil, err
		}
		defer y.Release()
		return y.Float32()
	case 5 * 256: // SDXL refiner: aesthetic score instead of the target size
		score := c.AestheticScore
		if score == 0 {
			score = refinerScorePositive
			if negative {
				score = refinerScoreNegative
			}
		}
		return refinerADM(m.Runtime, c.Pooled, size, score)
	}
	return nil, fmt.Errorf("pooled output of width %d does not fit the model's label vector of %d", pooledDim, want)
}

// refinerADM is SDXLRefiner.encode_adm: pooled ++ embeddings of height, width, crop_h,
// crop_w and the aesthetic score.
func refinerADM(rt *gpu.Runtime, pooled *gpu.Tensor, s unet.SizeConditioning, score float64) ([]float32, error) {
	y, err := unet.LabelVector(rt, pooled, []float32{float32(s.Height), float32(s.Width), float32(s.CropH), float32(s.CropW), float32(score)})
	if err != nil {
		return nil, err
	}
	defer y.Release()
	return y.Float32()
}

// areaInside reports whether area a lies within b (create_cond_with_same_area_if_none's
// area_inside; a nil area is the whole latent).
func areaInside(a, b *Area) bool {
	return a.Y >= b.Y && a.X >= b.X && a.Y+a.Height <= b.Y+b.Height && a.X+a.Width <= b.X+b.Width
}

// sameAreaOpposites gives every area entry of one list a counterpart with the same area
// in every other list (comfy/samplers.py create_cond_with_same_area_if_none): the
// smallest entry of the other list that encloses the area (or, failing that, its first
// entry without an area) lends its text conditioning to a copy of the area entry. This
// keeps the cond/uncond weighting of the area balanced.
func sameAreaOpposites(lists [][]modelCond) {
	for k := range lists {
		// Entries appended to list k by an earlier pass are visited too, as ComfyUI's
		// loop over the growing list does.
		for ci := 0; ci < len(lists[k]); ci++ {
			c := lists[k][ci]
			if c.area == nil {
				continue
			}
			for kk := range lists {
				if kk == k || lists[kk] == nil {
					continue
				}
				var smallest *modelCond
				for xi := range lists[kk] {
					x := &lists[kk][xi]
					if x.area != nil {
						if !areaInside(c.area, x.area) {
							continue
						}
						if smallest == nil || smallest.area == nil ||
							smallest.area.Height*smallest.area.Width > x.area.Height*x.area.Width {
							smallest = x
						}
					} else if smallest == nil {
						smallest = x
					}
				}
				if smallest == nil || (smallest.area != nil && *smallest.area == *c.area) {
					continue
				}
				n := c
				n.context, n.ctxBatch, n.tokens, n.dim = smallest.context, smallest.ctxBatch, smallest.tokens, smallest.dim
				n.y, n.yBatch, n.yDim = smallest.y, smallest.yBatch, smallest.yDim
				n.guidance, n.hasGuidance = smallest.guidance, smallest.hasGuidance
				n.refs, n.refMethod = smallest.refs, smallest.refMethod
				n.fromOtherPrompt = true
				lists[kk] = append(lists[kk], n)
			}
		}
	}
}

// activeEntry is one entry evaluated at one step: get_area_and_mult's result.
type activeEntry struct {
	list int // which conditioning list (ComfyUI's cond_or_uncond index)
	c    *modelCond
	// y0, x0, ah, aw: the area clamped to the latent (the whole latent without one).
	y0, x0, ah, aw int
	// mult is the per-pixel weight over the area: multN planes of ah×aw, shared by
	// all channels; batch item i uses plane i mod multN (one plane without a mask).
	mult  []float32
	multN int
}

// areaAndMult is ComfyUI's get_area_and_mult for a latent of h×w at noise level sigma:
// nil when the entry's timestep range excludes sigma, else the entry's region and
// weight. An area is clamped to the latent. A masked entry weighs each pixel by its
// mask (maskMult); otherwise the weight is the strength, and an area's edges that do
// not touch the latent's border are feathered over up to 8 latent pixels (a quarter
// of the area at most).
func areaAndMult(list int, c *modelCond, h, w int, sigma float64) (*activeEntry, error) {
	e := &activeEntry{}
	if ok, err := e.set(list, c, h, w, sigma); !ok {
		return nil, err
	}
	return e, nil
}

// set makes e areaAndMult's entry, reusing e's weight storage (a run's steps keep their
// entries); ok is false when the entry is not active at sigma or on an error.
func (e *activeEntry) set(list int, c *modelCond, h, w int, sigma float64) (ok bool, err error) {
	if sigma > c.sigmaStart || sigma < c.sigmaEnd {
		return false, nil
	}
	*e = activeEntry{list: list, c: c, ah: h, aw: w, mult: e.mult, multN: 1}
	if c.area != nil {
		e.y0, e.x0 = c.area.Y, c.area.X
		e.ah = min(h-e.y0, c.area.Height)
		e.aw = min(w-e.x0, c.area.Width)
		if e.ah <= 0 || e.aw <= 0 {
			return false, fmt.Errorf("sd: conditioning area %dx%d at (%d, %d) lies outside the %dx%d latent",
				c.area.Width, c.area.Height, c.area.X, c.area.Y, w, h)
		}
	}
	if c.mask != nil {
		maskMult(c, h, w, e)
		return true, nil
	}
	e.mult = grow(e.mult, e.ah*e.aw)
	for i := range e.mult {
		e.mult[i] = c.strength
	}
	if c.area != nil {
		const fuzz = 8
		// Rows (the height dimension), then columns, as ComfyUI loops over the dims; the
		// start edge before the end edge, so that a pixel on both is rounded alike.
		feather := func(size, start, full int, scale func(idx int, f float32)) {
			rr := min(fuzz, size/4)
			if start != 0 {
				for t := 0; t < rr; t++ {
					scale(t, float32(1.0/float64(rr)*float64(t+1)))
				}
			}
			if start+size < full {
				for t := 0; t < rr; t++ {
					scale(size-1-t, float32(1.0/float64(rr)*float64(t+1)))
				}
			}
		}
		feather(e.ah, e.y0, h, func(row int, f float32) { scaleRow(e.mult, e.aw, row, f) })
		feather(e.aw, e.x0, w, func(col int, f float32) { scaleCol(e.mult, e.aw, col, f) })
	}
	return true, nil
}

func scaleRow(m []float32, w, row int, f float32) {
	for x := 0; x < w; x++ {
		m[row*w+x] *= f
	}
}

func scaleCol(m []float32, w, col int, f float32) {
	for i := col; i < len(m); i += w {
		m[i] *= f
	}
}

// canBatch reports whether two entries can share one network batch (can_concat_cond):
// the same region size, cross-attention contexts of one width whose token counts differ
// by a factor of at most 4 once padded to their least common multiple (of the same
// count when exact: CONDRegular), label vectors of the same shape, guidance on both
// or neither, reference latents of the same shapes placed alike, the same control (by
// identity) and both or neither with an inpainting concat.
func canBatch(a, b *activeEntry, exact bool) bool {
	if a.c.gligen != nil || b.c.gligen != nil {
		// A grounded entry brings its own patches dict, which concatenates with none.
		return a == b
	}
	if a.ah != b.ah || a.aw != b.aw {
		return false
	}
	if a.c.dim != b.c.dim || a.c.ctxBatch != b.c.ctxBatch || a.c.hasGuidance != b.c.hasGuidance {
		return false
	}
	if a.c.tokens != b.c.tokens {
		if exact {
			return false
		}
		l := lcm(a.c.tokens, b.c.tokens)
		if l/min(a.c.tokens, b.c.tokens) > 4 {
			return false
		}
	}
	if (a.c.y == nil) != (b.c.y == nil) || !sameRefs(a.c, b.c) || a.c.control != b.c.control || (a.c.concat == nil) != (b.c.concat == nil) {
		return false
	}
	return a.c.y == nil || (a.c.yBatch == b.c.yBatch && a.c.yDim == b.c.yDim)
}

func lcm(a, b int) int {
	g, y := a, b
	for y != 0 {
		g, y = y, g%y
	}
	return a / g * b
}

// repeatRows returns data holding rows items of size per repeated or cut to n items
// (comfy.utils.repeat_to_batch_size).
func repeatRows(data []float32, rows, per, n int) []float32 {
	if rows == n {
		return data
	}
	out := make([]float32, 0, n*per)
	for i := 0; i < n; i++ {
		r := i % rows
		out = append(out, data[r*per:(r+1)*per]...)
	}
	return out
}

// isClose is Python's math.isclose with its default tolerances (rel 1e-9).
func isClose(a, b float64) bool {
	return math.Abs(a-b) <= 1e-9*max(math.Abs(a), math.Abs(b))
}

// EncodePrompt is CLIPTextEncode: the text through every text encoder of c (ComfyUI's
// clip.tokenize + encode_from_tokens, see CLIP.EncodeTokens), as a one-entry
// CONDITIONING with ComfyUI's defaults.
func EncodePrompt(ctx context.Context, c *CLIP, text string) (Conditioning, error) {
	return EncodePrompts(ctx, c, nil, text)
}

// EncodePrompts encodes per-encoder texts (CLIPTextEncodeSDXL's text_g and text_l, keyed
// by TextEncoder.Name); an encoder without an entry encodes fallback. When the encoders'
// token windows differ in number, the shorter side is padded with windows of the empty
// prompt, as CLIPTextEncodeSDXL does.
func EncodePrompts(ctx context.Context, c *CLIP, texts map[string]string, fallback string) (Conditioning, error) {
	if c == nil || (len(c.Encoders) == 0 && c.T5 == nil) {
		return nil, fmt.Errorf("sd: encode prompt: the CLIP has no text encoders")
	}
	tokens, err := c.Tokenize(fallback)
	if err != nil {
		return nil, err
	}
	longest := 0
	for _, te := range c.Encoders {
		if text, ok := texts[te.Name]; ok && text != fallback {
			own, err := c.Tokenize(text)
			if err != nil {
				return nil, err
			}
			tokens[te.Name] = own[te.Name]
		}
		longest = max(longest, len(tokens[te.Name]))
	}
	var empty Tokens
	for _, te := range c.Encoders {
		for len(tokens[te.Name]) < longest {
			if empty == nil {
				if empty, err = c.Tokenize(""); err != nil {
					return nil, err
				}
			}
			tokens[te.Name] = append(tokens[te.Name], empty[te.Name]...)
		}
	}
	enc, err := c.EncodeTokens(ctx, tokens)
	if err != nil {
		return nil, err
	}
	return Conditioning{NewCond(enc.Cond, enc.Pooled)}, nil
}

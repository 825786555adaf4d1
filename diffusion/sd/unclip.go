package sd

import (
	"fmt"
	"math"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/clipvision"
	"github.com/forgeflow/forgeflow/diffusion/rng"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/detect"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// SD2.1 unCLIP: the UNet's label vector y is a noise-augmented CLIP image embedding
// followed by the embedding of its noise level (comfy/model_base.py SD21UNCLIP and
// unclip_adm, comfy/ldm/modules/encoders/noise_aug_modules.py
// CLIPEmbeddingNoiseAugmentation), and the checkpoint carries the CLIP vision tower
// under "embedder.model.visual." (supported_models.SD21UnclipH/L clip_vision_prefix).

// unclipVisionPrefix is where unCLIP checkpoints keep their OpenCLIP vision tower.
const unclipVisionPrefix = "embedder.model.visual."

// UnCLIPCond is one unCLIPConditioning application on a conditioning entry: the image
// embeddings of a CLIPVisionEncode (B, D), their weight and noise augmentation.
type UnCLIPCond struct {
	ImageEmbeds       *gpu.Tensor
	Strength          float64
	NoiseAugmentation float64
}

// NoiseAugmentor is CLIPEmbeddingNoiseAugmentation with ComfyUI's unCLIP config: the
// squaredcos_cap_v2 schedule over 1000 levels, identity data statistics, the level
// embedded with the UNet's sinusoidal timestep embedding of width Dim.
type NoiseAugmentor struct {
	Dim int
	// sqrtAC and sqrt1mAC are √ᾱ and √(1−ᾱ) per level, computed in float64 and kept as
	// float32 (AbstractLowScaleModel.register_schedule).
	sqrtAC, sqrt1mAC []float32
}

// maxNoiseLevel is ImageConcatWithNoiseAugmentation's default max_noise_level.
const maxNoiseLevel = 1000

// unclipMergeAugment is unclip_noise_augment_merge's default: several image embeddings
// are summed and the sum noised again at this level.
const unclipMergeAugment = 0.05

// NewNoiseAugmentor returns the augmentor for image embeddings of width dim.
func NewNoiseAugmentor(dim int) *NoiseAugmentor {
	a := &NoiseAugmentor{Dim: dim, sqrtAC: make([]float32, maxNoiseLevel), sqrt1mAC: make([]float32, maxNoiseLevel)}
	alphaBar := func(t float64) float64 {
		c := math.Cos((t + 0.008) / 1.008 * math.Pi / 2)
		return c * c
	}
	ac := 1.0
	for i := 0; i < maxNoiseLevel; i++ {
		// betas_for_alpha_bar with max_beta 0.999, then np.cumprod(1 − β).
		beta := min(1-alphaBar(float64(i+1)/maxNoiseLevel)/alphaBar(float64(i)/maxNoiseLevel), 0.999)
		ac *= 1 - beta
		a.sqrtAC[i] = float32(math.Sqrt(ac))
		a.sqrt1mAC[i] = float32(math.Sqrt(1 - ac))
	}
	return a
}

// augment is the augmentor's forward on one embedding x (dim values) at level with
// noise: √ᾱ·x + √(1−ᾱ)·noise, then the level's embedding appended.
func (a *NoiseAugmentor) augment(rt *gpu.Runtime, x, noise []float32, level int) ([]float32, error) {
	out := make([]float32, 0, 2*a.Dim)
	for i, v := range x {
		out = append(out, a.sqrtAC[level]*v+a.sqrt1mAC[level]*noise[i])
	}
	t, err := rt.FromFloat32([]float32{float32(level)}, 1)
	if err != nil {
		return nil, err
	}
	defer t.Release()
	e, err := gpu.TimestepEmbedding(rt, t, gpu.TimestepParams{Dim: a.Dim, MaxPeriod: 10000})
	if err != nil {
		return nil, err
	}
	defer e.Release()
	emb, err := e.Float32()
	if err != nil {
		return nil, err
	}
	return append(out, emb...), nil
}

// noiseLevel is round((max_noise_level − 1)·augment) with Python's round.
func noiseLevel(augment float64) int {
	return int(math.RoundToEven((maxNoiseLevel - 1) * augment))
}

// unclipY is unclip_adm: every image embedding of every unCLIPConditioning entry is
// noise-augmented (noise from torch.manual_seed(seed − 10), reseeded per embedding),
// its level embedding appended and the result weighted by the entry's strength; with
// more than one embedding the weighted sum is noised once more at the merge level with
// the next draws of that generator. Without entries y is zeros, as encode_adm gives.
func (a *NoiseAugmentor) unclipY(rt *gpu.Runtime, conds []UnCLIPCond, seed uint64) ([]float32, error) {
	if len(conds) == 0 {
		return make([]float32, 2*a.Dim), nil
	}
	g := rng.New(seed - 10)
	var sum []float32
	count := 0
	noise := make([]float32, a.Dim)
	for ci, c := range conds {
		if c.ImageEmbeds == nil || c.ImageEmbeds.Rank() != 2 || c.ImageEmbeds.Dim(1) != a.Dim {
			var shape []int
			if c.ImageEmbeds != nil {
				shape = c.ImageEmbeds.Shape()
			}
			return nil, fmt.Errorf("unCLIP conditioning %d: image embeds %v do not fit the model's %d-wide embedding (is the CLIP vision model the checkpoint's?)", ci, shape, a.Dim)
		}
		emb, err := c.ImageEmbeds.Float32()
		if err != nil {
			return nil, err
		}
		for b := 0; b < c.ImageEmbeds.Dim(0); b++ {
			g.Seed(seed - 10)
			g.Randn(noise)
			y, err := a.augment(rt, emb[b*a.Dim:(b+1)*a.Dim], noise, noiseLevel(c.NoiseAugmentation))
			if err != nil {
				return nil, err
			}
			w := float32(c.Strength)
			if sum == nil {
				sum = make([]float32, len(y))
			}
			for i, v := range y {
				sum[i] += v * w
			}
			count++
		}
	}
	if count == 1 {
		return sum, nil
	}
	g.Randn(noise)
	return a.augment(rt, sum[:a.Dim], noise, noiseLevel(unclipMergeAugment))
}

// finishUnCLIP gives every prepared entry of an unCLIP model its label vector.
func (d *denoiser) finishUnCLIP(list []modelCond) error {
	a := d.g.Model.UnCLIP
	for i := range list {
		y, err := a.unclipY(d.g.Model.Runtime, list[i].unclip, d.seed)
		if err != nil {
			return fmt.Errorf("sd: conditioning entry %d: %w", i, err)
		}
		list[i].y, list[i].yBatch, list[i].yDim = y, 1, len(y)
	}
	return nil
}

// isUnCLIPCheckpoint reports whether a checkpoint with an ADM UNet is an SD2.1 unCLIP
// one: detected as such, or another-sized ADM UNet beside an unCLIP vision tower.
func isUnCLIPCheckpoint(f *tensorfile.File, d *detect.Diffusion) bool {
	if strings.HasPrefix(d.Variant, "unclip") {
		return true
	}
	return !d.Exact && d.UNet != nil && d.UNet.ADMInChannels > 0 && len(keysUnder(f, unclipVisionPrefix)) > 0
}

// loadUnCLIPParts makes m an unCLIP model (SD2 layout, label vector from image
// embeddings) and loads the checkpoint's CLIP vision tower.
func loadUnCLIPParts(rt *gpu.Runtime, src *statedict.FileSource, m *Model, d *detect.Diffusion) (*clipvision.Model, error) {
	adm := d.UNet.ADMInChannels
	if adm%2 != 0 {
		return nil, &FormatError{Path: src.File().Name(), Err: fmt.Errorf("unCLIP label vector of odd width %d (embedding + level embedding)", adm)}
	}
	m.ADM, m.UnCLIP = false, NewNoiseAugmentor(adm/2)
	if len(keysUnder(src.File(), unclipVisionPrefix)) == 0 {
		return nil, nil
	}
	cv, err := clipvision.LoadSource(rt, src, unclipVisionPrefix)
	if err != nil {
		return nil, &FormatError{Path: src.File().Name(), Err: err}
	}
	return cv, nil
}

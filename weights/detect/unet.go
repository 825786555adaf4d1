package detect

import (
	"fmt"
	"math"
	"slices"
)

// Diffusion describes the diffusion model part of a file.
type Diffusion struct {
	// Prefix is what the model's keys start with ("model.diffusion_model." in a
	// checkpoint, "" in a diffusion_models file).
	Prefix string
	Family Family
	// Exact is true when the sizes are those of the full-size family, i.e. ComfyUI's
	// supported_models table matches them. False means a model of that structure but
	// other sizes (the tiny test models, pruned variants): the family is a best guess
	// and the fields that ComfyUI takes from the family table rather than from shapes
	// (attention heads, Flux rope axes) are left zero for the caller to supply.
	Exact bool
	// Variant names a sub-type ComfyUI distinguishes: "inpaint", "instructpix2pix",
	// "unclip_l", "unclip_h", "ssd1b", "segmind_vega", "koala_700m", "koala_1b",
	// "playground_v2.5", "zsnr"; empty for the plain model.
	Variant    string
	Prediction Prediction
	// Exactly one of these is set.
	UNet  *UNetConfig
	Flux  *FluxConfig
	MMDiT *MMDiTConfig
	// Unsupported says why forgeflow cannot run this model yet; empty when it can.
	Unsupported string
}

// UNetConfig is the configuration of an SD1/SD2/SDXL UNet (ComfyUI's unet_config for
// comfy/ldm/modules/diffusionmodules/openaimodel.py UNetModel), derived from shapes as
// comfy/model_detection.py detect_unet_config does.
type UNetConfig struct {
	InChannels    int
	OutChannels   int
	ModelChannels int
	// NumResBlocks and ChannelMult have one entry per resolution level.
	NumResBlocks []int
	ChannelMult  []int
	// TransformerDepth has one entry per input res block (0: no attention there),
	// TransformerDepthOutput one per output res block.
	TransformerDepth       []int
	TransformerDepthOutput []int
	// TransformerDepthMiddle is the middle block's depth; -1 means a middle block without
	// attention, -2 no middle block (ComfyUI's convention).
	TransformerDepthMiddle int
	// ContextDim is the cross-attention context width (768 SD1, 1024 SD2, 2048 SDXL,
	// 1280 refiner); 0 without cross-attention.
	ContextDim int
	// ADMInChannels is the width of the label_emb input (the SDXL "y" vector), 0 if none.
	ADMInChannels          int
	UseLinearInTransformer bool
	// NumHeads / NumHeadChannels come from the family (SD1: 8 / -1; SD2, SDXL: -1 / 64);
	// -1 means "derived from the other". Both 0 when the family is not exact.
	NumHeads        int
	NumHeadChannels int
	// VideoModel is set for UNets with temporal layers (SVD).
	VideoModel bool
}

// NumLevels returns the number of resolution levels.
func (c *UNetConfig) NumLevels() int { return len(c.ChannelMult) }

// detectError is a required tensor missing from an otherwise recognised model.
type detectError struct {
	what, key string
}

func (e *detectError) Error() string {
	return fmt.Sprintf("detect: %s: missing tensor %q", e.what, e.key)
}

// need returns dimension i of tensor k, recording an error when it is absent.
func (s *sd) need(err *error, what, k string, i int) int {
	if !s.has(k) {
		if *err == nil {
			*err = &detectError{what, k}
		}
		return 0
	}
	return s.dim(k, i)
}

// transformerDepth is ComfyUI's calculate_transformer_depth for the block at prefix:
// ok is false when the block has no spatial transformer.
func (s *sd) transformerDepth(prefix string, err *error) (depth, contextDim int, linear, video, ok bool) {
	tp := prefix + "1.transformer_blocks."
	if !s.hasPrefix(tp) {
		return 0, 0, false, false, false
	}
	depth = s.countBlocks(tp + "%d")
	contextDim = s.need(err, "unet", tp+"0.attn2.to_k.weight", 1)
	s.need(err, "unet", prefix+"1.proj_in.weight", 0) // only its presence is required
	linear = s.rank(prefix+"1.proj_in.weight") == 2
	video = s.has(prefix+"1.time_stack.0.attn1.to_q.weight") || s.has(prefix+"1.time_mix_blocks.0.attn1.to_q.weight")
	return depth, contextDim, linear, video, true
}

// detectUNet derives the UNet configuration of the model whose keys start with p.
func (s *sd) detectUNet(p string) (*UNetConfig, error) {
	var err error
	c := &UNetConfig{}
	c.ADMInChannels = s.dim(p+"label_emb.0.0.weight", 1)
	c.ModelChannels = s.dim(p+"input_blocks.0.0.weight", 0)
	c.InChannels = s.dim(p+"input_blocks.0.0.weight", 1)
	c.OutChannels = 4
	if s.has(p + "out.2.weight") {
		c.OutChannels = s.dim(p+"out.2.weight", 0)
	}
	if c.ModelChannels <= 0 {
		return nil, fmt.Errorf("detect: unet: bad shape %v of %q", s.shape[p+"input_blocks.0.0.weight"], p+"input_blocks.0.0.weight")
	}
	contextFound := false
	lastRes, lastMult := 0, 0
	n := s.countBlocks(p + "input_blocks.%d.")
	for i := range n {
		prefix := fmt.Sprintf("%sinput_blocks.%d.", p, i)
		prefixOut := fmt.Sprintf("%soutput_blocks.%d.", p, n-i-1)
		if !s.hasPrefix(prefix) {
			break
		}
		if s.has(prefix + "0.op.weight") { // downsampling: a new level starts
			c.NumResBlocks = append(c.NumResBlocks, lastRes)
			c.ChannelMult = append(c.ChannelMult, lastMult)
			lastRes, lastMult = 0, 0
			d, _, _, _, _ := s.transformerDepth(prefixOut, &err)
			c.TransformerDepthOutput = append(c.TransformerDepthOutput, d)
			continue
		}
		if s.has(prefix + "0.in_layers.0.weight") {
			lastRes++
			lastMult = s.need(&err, "unet", prefix+"0.out_layers.3.weight", 0) / c.ModelChannels
			d, ctx, linear, video, ok := s.transformerDepth(prefix, &err)
			c.TransformerDepth = append(c.TransformerDepth, d)
			if ok && !contextFound {
				contextFound = true
				c.ContextDim, c.UseLinearInTransformer, c.VideoModel = ctx, linear, video
			}
		}
		if s.has(prefixOut + "0.in_layers.0.weight") {
			d, _, _, _, _ := s.transformerDepth(prefixOut, &err)
			c.TransformerDepthOutput = append(c.TransformerDepthOutput, d)
		}
	}
	c.NumResBlocks = append(c.NumResBlocks, lastRes)
	c.ChannelMult = append(c.ChannelMult, lastMult)
	switch {
	case s.has(p + "middle_block.1.proj_in.weight"):
		c.TransformerDepthMiddle = s.countBlocks(p + "middle_block.1.transformer_blocks.%d")
	case s.has(p + "middle_block.0.in_layers.0.weight"):
		c.TransformerDepthMiddle = -1
	default:
		c.TransformerDepthMiddle = -2
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// unetFamily is one row of ComfyUI's comfy/supported_models.py table, reduced to the
// UNet families forgeflow knows. A row matches when every set field equals the
// detected value (BASE.matches); rows are tried in ComfyUI's order.
type unetFamily struct {
	family      Family
	variant     string
	ctx, mc     int
	linear      bool
	adm         int
	depth       []int // nil: not compared
	inChannels  int   // 0: not compared
	heads, hch  int
	unsupported string
}

var unetFamilies = []unetFamily{
	{FamilySD1, "instructpix2pix", 768, 320, false, 0, nil, 8, 8, -1, ""},
	{FamilySD1, "", 768, 320, false, 0, nil, 0, 8, -1, ""},
	{FamilySD2, "", 1024, 320, true, 0, nil, 0, -1, 64, ""},
	{FamilySD2, "unclip_l", 1024, 320, true, 1536, nil, 0, -1, 64, ""},
	{FamilySD2, "unclip_h", 1024, 320, true, 2048, nil, 0, -1, 64, ""},
	{FamilySDXL, "instructpix2pix", 2048, 320, true, 2816, []int{0, 0, 2, 2, 10, 10}, 8, -1, 64, ""},
	{FamilySDXLRefiner, "", 1280, 384, true, 2560, []int{0, 0, 4, 4, 4, 4, 0, 0}, 0, -1, 64, ""},
	{FamilySDXL, "", 2048, 320, true, 2816, []int{0, 0, 2, 2, 10, 10}, 0, -1, 64, ""},
	{FamilySDXL, "ssd1b", 2048, 320, true, 2816, []int{0, 0, 2, 2, 4, 4}, 0, -1, 64, ""},
	{FamilySDXL, "koala_700m", 2048, 320, true, 2816, []int{0, 2, 5}, 0, -1, 64, ""},
	{FamilySDXL, "koala_1b", 2048, 320, true, 2816, []int{0, 2, 6}, 0, -1, 64, ""},
	{FamilySDXL, "segmind_vega", 2048, 320, true, 2816, []int{0, 0, 1, 1, 2, 2}, 0, -1, 64, ""},
}

func (f *unetFamily) matches(c *UNetConfig) bool {
	if c.VideoModel || f.ctx != c.ContextDim || f.mc != c.ModelChannels || f.linear != c.UseLinearInTransformer || f.adm != c.ADMInChannels {
		return false
	}
	if f.depth != nil && !slices.Equal(f.depth, c.TransformerDepth) {
		return false
	}
	return f.inChannels == 0 || f.inChannels == c.InChannels
}

// classifyUNet fills the family, heads, variant and prediction of a UNet model.
func (s *sd) classifyUNet(d *Diffusion) error {
	c := d.UNet
	if c.VideoModel {
		d.Family, d.Unsupported = FamilySD2, "video UNets (SVD) are not implemented"
		d.Prediction = PredictEps
		return nil
	}
	for i := range unetFamilies {
		f := &unetFamilies[i]
		if !f.matches(c) {
			continue
		}
		d.Family, d.Variant, d.Unsupported, d.Exact = f.family, f.variant, f.unsupported, true
		c.NumHeads, c.NumHeadChannels = f.heads, f.hch
		break
	}
	if !d.Exact {
		// Another size: classify by structure, as the family whose layout it has.
		switch {
		case c.ADMInChannels > 0:
			d.Family = FamilySDXL
		case c.UseLinearInTransformer:
			d.Family = FamilySD2
		default:
			d.Family = FamilySD1
		}
	}
	switch {
	case d.Variant != "":
	case c.InChannels == 9:
		d.Variant = "inpaint"
	case !d.Exact && c.InChannels == 2*c.OutChannels:
		// Another size with the latent and an image latent as input, the layout of
		// ComfyUI's SD15/SDXL_instructpix2pix rows (in_channels 8).
		d.Variant = "instructpix2pix"
	}
	d.Prediction = PredictEps
	switch d.Family {
	case FamilySD2:
		if d.Exact && c.InChannels == 4 {
			v, err := s.sd2IsVPrediction(d.Prefix)
			if err != nil {
				return err
			}
			if v {
				d.Prediction = PredictV
			}
		}
	case FamilySDXL:
		// Markers some SDXL finetunes carry at the top level of the file
		// (supported_models.SDXL.model_type).
		switch {
		case s.has("edm_mean") && s.has("edm_std"):
			d.Prediction, d.Variant = PredictEDM, "playground_v2.5"
		case s.has("edm_vpred.sigma_max"):
			d.Prediction = PredictVEDM
		case s.has("v_pred"):
			d.Prediction = PredictV
			if s.has("ztsnr") {
				d.Variant = "zsnr"
			}
		}
	}
	return nil
}

// sd2VTensor is the tensor whose spread ComfyUI uses to tell SD2.x v-prediction models
// (768-v) from eps ones (512-base): supported_models.SD20.model_type.
const sd2VTensor = "output_blocks.11.1.transformer_blocks.0.norm1.bias"

// sd2IsVPrediction applies SD20.model_type: v-prediction when the population standard
// deviation of sd2VTensor exceeds 0.09, eps when it does not or the tensor is absent.
// Without Input.Values the tensor cannot be read and v-prediction is assumed.
func (s *sd) sd2IsVPrediction(prefix string) (bool, error) {
	k := prefix + sd2VTensor
	if !s.has(k) {
		return false, nil
	}
	if s.in.Values == nil {
		return true, nil
	}
	vals, err := s.in.Values(k)
	if err != nil {
		return false, fmt.Errorf("detect: reading %q for the SD2 v-prediction test: %w", k, err)
	}
	return populationStd(vals) > 0.09, nil
}

// populationStd is torch.std(x, unbiased=False), accumulated in float64.
func populationStd(x []float32) float64 {
	if len(x) == 0 {
		return math.NaN()
	}
	var mean float64
	for _, v := range x {
		mean += float64(v)
	}
	mean /= float64(len(x))
	var ss float64
	for _, v := range x {
		d := float64(v) - mean
		ss += d * d
	}
	return math.Sqrt(ss / float64(len(x)))
}

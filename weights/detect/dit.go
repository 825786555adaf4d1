package detect

import (
	"fmt"
	"math"
)

// FluxConfig is the configuration of a Flux transformer (comfy/ldm/flux/model.py
// FluxParams), derived from shapes. ComfyUI hard-codes hidden size 3072, 24 heads and
// a 4096-wide context for every Flux; here they come from the tensors, which gives the
// same numbers for the released models and the right ones for smaller test models.
type FluxConfig struct {
	InChannels  int // img_in width / patch² (16; 96 for Flux Fill, whose input carries image and mask)
	OutChannels int
	PatchSize   int
	HiddenSize  int
	NumHeads    int // hidden size / per-head width (the q/k norm scale length)
	Depth       int // double-stream blocks
	// DepthSingleBlocks is the number of single-stream blocks.
	DepthSingleBlocks int
	ContextInDim      int // T5 width (4096)
	VecInDim          int // pooled CLIP-L width (768)
	MLPRatio          float64
	// AxesDim is the rope split of a head's width; known for the 128-wide heads of the
	// released models ([16 56 56]), nil otherwise (the caller must supply it).
	AxesDim       []int
	Theta         int
	QKVBias       bool
	GuidanceEmbed bool // dev has a guidance embedding, schnell has not
}

// MMDiTConfig is the configuration of an SD3 MMDiT (comfy/ldm/modules/diffusionmodules/
// mmdit.py), as detect_unet_config derives it (diffusion/mmdit runs it).
type MMDiTConfig struct {
	InChannels      int
	OutChannels     int
	PatchSize       int
	Depth           int
	ADMInChannels   int
	ContextInDim    int
	ContextOutDim   int
	NumPatches      int
	PosEmbedMaxSize int
	QKNormRMS       bool
	// XBlockSelfAttnLayers lists the joint blocks whose x-block has a second attention
	// (SD3.5 medium).
	XBlockSelfAttnLayers []int
}

func (s *sd) detectFlux(p string) (*Diffusion, error) {
	var err error
	d := &Diffusion{Prefix: p, Prediction: PredictFlux}
	if s.has(p+"distilled_guidance_layer.0.norms.0.scale") || s.has(p+"distilled_guidance_layer.norms.0.scale") {
		d.Family, d.Variant, d.Unsupported = FamilyFluxSchnell, "chroma", "Chroma models are not implemented"
		d.Prediction = PredictFlow
		return d, nil
	}
	c := &FluxConfig{PatchSize: 2, Theta: 10000}
	c.HiddenSize = s.need(&err, "flux", p+"img_in.weight", 0)
	c.InChannels = s.need(&err, "flux", p+"img_in.weight", 1) / (c.PatchSize * c.PatchSize)
	c.OutChannels = 16
	if s.has(p + "final_layer.linear.weight") {
		c.OutChannels = s.dim(p+"final_layer.linear.weight", 0) / (c.PatchSize * c.PatchSize)
	}
	headDim := s.need(&err, "flux", p+"double_blocks.0.img_attn.norm.query_norm.scale", 0)
	if headDim > 0 {
		c.NumHeads = c.HiddenSize / headDim
	}
	c.Depth = s.countBlocks(p + "double_blocks.%d.")
	c.DepthSingleBlocks = s.countBlocks(p + "single_blocks.%d.")
	c.ContextInDim = s.need(&err, "flux", p+"txt_in.weight", 1)
	c.VecInDim = s.dim(p+"vector_in.in_layer.weight", 1)
	if c.HiddenSize > 0 {
		c.MLPRatio = float64(s.need(&err, "flux", p+"double_blocks.0.img_mlp.0.weight", 0)) / float64(c.HiddenSize)
	}
	if headDim == 128 {
		c.AxesDim = []int{16, 56, 56}
	}
	c.QKVBias = s.has(p + "double_blocks.0.img_attn.qkv.bias")
	c.GuidanceEmbed = s.has(p + "guidance_in.in_layer.weight")
	if err != nil {
		return nil, err
	}
	d.Flux = c
	// supported_models.Flux / FluxSchnell match on guidance_embed alone; schnell samples
	// as plain rectified flow with shift 1.0.
	if c.GuidanceEmbed {
		d.Family = FamilyFluxDev
	} else {
		d.Family, d.Prediction = FamilyFluxSchnell, PredictFlow
	}
	if c.InChannels == 96 {
		d.Variant = "fill" // supported_models.FluxInpaint
	}
	d.Exact = c.HiddenSize == 3072 && c.NumHeads == 24 && c.ContextInDim == 4096 && c.VecInDim == 768 &&
		c.Depth == 19 && c.DepthSingleBlocks == 38
	return d, nil
}

func (s *sd) detectMMDiT(p string) (*Diffusion, error) {
	var err error
	c := &MMDiTConfig{}
	xk := p + "x_embedder.proj.weight"
	c.InChannels = s.need(&err, "sd3", xk, 1)
	c.PatchSize = s.dim(xk, 2)
	c.Depth = s.dim(xk, 0) / 64
	if c.PatchSize > 0 && s.has(p+"final_layer.linear.weight") {
		c.OutChannels = s.dim(p+"final_layer.linear.weight", 0) / (c.PatchSize * c.PatchSize)
	}
	c.ADMInChannels = s.dim(p+"y_embedder.mlp.0.weight", 1)
	c.ContextInDim = s.dim(p+"context_embedder.weight", 1)
	c.ContextOutDim = s.dim(p+"context_embedder.weight", 0)
	if s.has(p + "pos_embed") {
		c.NumPatches = s.dim(p+"pos_embed", 1)
		c.PosEmbedMaxSize = int(math.Round(math.Sqrt(float64(c.NumPatches))))
	}
	c.QKNormRMS = s.has(p + "joint_blocks.0.context_block.attn.ln_q.weight")
	for i := 0; i < s.countBlocks(p+"joint_blocks.%d."); i++ {
		if s.has(fmt.Sprintf("%sjoint_blocks.%d.x_block.attn2.qkv.weight", p, i)) {
			c.XBlockSelfAttnLayers = append(c.XBlockSelfAttnLayers, i)
		}
	}
	if err != nil {
		return nil, err
	}
	d := &Diffusion{Prefix: p, Family: FamilySD3, MMDiT: c, Prediction: PredictFlow, Exact: c.InChannels == 16}
	if s.hasPrefix(p + "context_processor.") {
		d.Unsupported = "MMDiTs with a context processor are not SD3 models and are not implemented"
	}
	return d, nil
}

// detectDiffusion finds the diffusion model among the tensors, trying the
// architectures in ComfyUI's order (MMDiT, Flux, then the UNet).
func detectDiffusion(s *sd) (*Diffusion, error) {
	if p, ok := s.prefixOf("joint_blocks.0.context_block.attn.qkv.weight"); ok {
		return s.detectMMDiT(p)
	}
	if p, ok := s.prefixOf("double_blocks.0.img_attn.norm.key_norm.scale"); ok &&
		(s.has(p+"img_in.weight") || s.has(p+"distilled_guidance_layer.norms.0.scale") || s.has(p+"distilled_guidance_layer.0.norms.0.scale")) {
		return s.detectFlux(p)
	}
	if p, ok := s.prefixOf("input_blocks.0.0.weight"); ok {
		if s.hasPrefix(p + "input_hint_block.") {
			return nil, fmt.Errorf("%w: a ControlNet (input_hint_block), not a diffusion model", ErrUnknown)
		}
		c, err := s.detectUNet(p)
		if err != nil {
			return nil, err
		}
		d := &Diffusion{Prefix: p, UNet: c}
		if err := s.classifyUNet(d); err != nil {
			return nil, err
		}
		return d, nil
	}
	return s.detectDiffusers(), nil
}

// detectDiffusers recognises diffusion models saved with the diffusers library's key
// names, which ComfyUI converts on load; forgeflow does not convert them yet.
func (s *sd) detectDiffusers() *Diffusion {
	switch {
	case s.has("conv_in.weight") && s.has("time_embedding.linear_1.weight") && s.has("down_blocks.0.resnets.0.conv1.weight"):
		d := &Diffusion{Family: FamilySD1, Prediction: PredictEps, Variant: "diffusers",
			Unsupported: "diffusers-format UNets are not converted yet"}
		ctx := 0
		if p, ok := s.prefixOf("attn2.to_k.weight"); ok {
			ctx = s.dim(p+"attn2.to_k.weight", 1)
		}
		switch {
		case s.has("add_embedding.linear_1.weight"):
			d.Family = FamilySDXL
			if ctx == 1280 {
				d.Family = FamilySDXLRefiner
			}
		case ctx == 1024:
			d.Family = FamilySD2
		}
		return d
	case s.has("x_embedder.weight") && s.has("single_transformer_blocks.0.attn.norm_k.weight"):
		d := &Diffusion{Family: FamilyFluxSchnell, Prediction: PredictFlow, Variant: "diffusers",
			Unsupported: "diffusers-format Flux models are not converted yet"}
		if s.has("time_text_embed.guidance_embedder.linear_1.weight") {
			d.Family, d.Prediction = FamilyFluxDev, PredictFlux
		}
		return d
	}
	return nil
}

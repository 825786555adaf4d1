package builtin

import (
	"errors"
	"fmt"
	"time"

	"github.com/forgeflow/forgeflow/diffusion/lora"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
	"github.com/forgeflow/forgeflow/weights/folders"
	"github.com/forgeflow/forgeflow/weights/memory"
)

// Options configure the built-in nodes. The zero value serves the image, mask, string
// and file nodes (file nodes then use the folders of each run's nodes.Env, the clock is
// time.Now); the latent, model and sampling nodes need Runtime.
type Options struct {
	// Dirs are the folders used where a run's Env leaves one empty, and the input folder
	// LoadImage lists for its combo (object_info has no Env).
	Dirs nodes.Dirs
	// Now returns the time used for SaveImage's %date:…%, %year% … substitutions (local
	// time, as ComfyUI and its front end use). nil means time.Now.
	Now func() time.Time
	// Models finds model files (checkpoints, vae, text_encoders, embeddings) and the CLIP
	// tokenizer vocabulary for the loader nodes; nil lists no models.
	Models *folders.Paths
	// Memory caches loaded models by file identity, so loading an unchanged checkpoint
	// again is near-instant; nil loads the file on every run.
	Memory *memory.Manager
	// Runtime runs the networks and holds latents. It is built by cmd/ (gpu.New, with
	// the process's options); nil leaves the model and latent nodes without one, and
	// they fail with an error saying so.
	Runtime *gpu.Runtime
	// LoRAMode is how the LoRA nodes patch a model that has no LoRA yet: lora.Auto (the
	// zero value) merges float weights into copies and patches quantized ones at run
	// time; lora.Merge and lora.Runtime force one way.
	LoRAMode lora.Mode
}

// runtime returns Options.Runtime, or an error for the nodes that need one.
func (o Options) runtime() (*gpu.Runtime, error) {
	if o.Runtime == nil {
		return nil, errors.New("builtin: no tensor runtime (builtin.Options.Runtime is nil)")
	}
	return o.Runtime, nil
}

func (o Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// dirs returns env's folders with empty ones filled from o.Dirs.
func (o Options) dirs(env *nodes.Env) nodes.Dirs {
	d := o.Dirs
	if env != nil {
		if env.Dirs.Output != "" {
			d.Output = env.Dirs.Output
		}
		if env.Dirs.Input != "" {
			d.Input = env.Dirs.Input
		}
		if env.Dirs.Temp != "" {
			d.Temp = env.Dirs.Temp
		}
	}
	return d
}

// Register adds every built-in value type and node class of this package to r. It is
// the one place where every family registers: a new node is one entry below.
func Register(r *nodes.Registry, opts Options) error {
	if err := r.AddTypes(valueTypes()...); err != nil {
		return fmt.Errorf("builtin: %w", err)
	}
	models := &sdEnv{opts: opts}
	all := []nodes.Typed{
		// image.go
		&EmptyImage{}, &ImageScale{}, &ImageScaleBy{}, &ImageInvert{}, &ImageBatch{},
		&ImageCrop{}, &ImagePadForOutpaint{},
		// postprocess.go
		&ImageBlend{}, &ImageBlur{}, &ImageSharpen{},
		// mask.go
		&ImageToMask{}, &MaskToImage{}, &SolidMask{}, &InvertMask{},
		// maskops.go
		&ImageColorToMask{}, &ThresholdMask{}, &CropMask{}, &MaskComposite{}, &FeatherMask{}, &GrowMask{},
		// composite.go
		&ImageCompositeMasked{}, &RepeatImageBatch{}, &ImageFromBatch{},
		// noise.go
		&ImageAddNoise{},
		// transform.go
		&ImageFlip{}, &ImageRotate{}, &GetImageSize{}, &ImageScaleToTotalPixels{},
		&ImageScaleToMaxDimension{}, &ResizeAndPadImage{}, &SplitImageWithAlpha{}, &JoinImageWithAlpha{},
		// porterduff.go
		&PorterDuffImageComposite{},
		// strings.go
		&StringConcatenate{}, &StringSubstring{}, &StringLength{}, &CaseConverter{},
		&StringTrim{}, &StringReplace{}, &StringContains{}, &StringCompare{},
		// load.go
		&LoadImage{imageFile{opts: opts}}, &LoadImageMask{imageFile: imageFile{opts: opts}},
		// save.go
		&SaveImage{opts: opts}, &PreviewImage{opts: opts}, &MaskPreview{opts: opts},
		// loaders.go
		&CheckpointLoaderSimple{env: models}, &VAELoader{env: models}, &CLIPLoader{env: models},
		// textencoders.go
		&DualCLIPLoader{env: models}, &TripleCLIPLoader{env: models}, &CLIPLoaderGGUF{env: models},
		&DualCLIPLoaderGGUF{env: models}, &TripleCLIPLoaderGGUF{env: models},
		&CLIPTextEncodeSD3{}, &CLIPTextEncodeFlux{}, &T5TokenizerOptions{},
		// sd3.go
		&EmptySD3LatentImage{opts: opts}, &ModelSamplingSD3{}, &ModelSamplingAuraFlow{},
		&SkipLayerGuidanceDiT{}, &SkipLayerGuidanceDiTSimple{}, &CFGNorm{}, &UNETLoader{env: models},
		// lora.go
		&LoraLoader{env: models}, &LoraLoaderModelOnly{env: models},
		// vaenodes.go
		&VAEDecode{}, &VAEEncode{}, &VAEDecodeTiled{}, &VAEEncodeTiled{}, &CheckpointSave{opts: opts},
		&ModelSave{opts: opts}, &VAESave{opts: opts}, &CLIPSave{opts: opts},
		// merge.go
		&ModelMergeSimple{}, &ModelMergeSubtract{}, &ModelMergeAdd{},
		&CLIPMergeSimple{}, &CLIPMergeSubtract{}, &CLIPMergeAdd{},
		// conditioning.go
		&CLIPTextEncode{}, &CLIPTextEncodeSDXL{}, &CLIPTextEncodeSDXLRefiner{}, &CLIPSetLastLayer{},
		&ConditioningCombine{}, &ConditioningAverage{}, &ConditioningConcat{}, &ConditioningSetArea{},
		&ConditioningSetTimestepRange{}, &ConditioningZeroOut{},
		// latent.go
		&EmptyLatentImage{opts: opts}, &LatentUpscale{}, &LatentUpscaleBy{}, &LatentFromBatch{},
		&RepeatLatentBatch{}, &LatentComposite{},
		// sampling.go
		&KSampler{}, &KSamplerAdvanced{}, &ModelSamplingDiscrete{}, &ModelSamplingFlux{},
		// customsampling.go
		&SamplerCustom{}, &SamplerCustomAdvanced{}, &KSamplerSelect{},
		&BasicScheduler{}, &KarrasScheduler{}, &ExponentialScheduler{}, &SDTurboScheduler{},
		&SplitSigmas{}, &SplitSigmasDenoise{}, &RandomNoise{}, &DisableNoise{},
		&CFGGuider{}, &BasicGuider{}, &DualCFGGuider{},
		// sigmas.go, samplernodes.go
		&AlignYourStepsScheduler{}, &GITSScheduler{}, &OptimalStepsScheduler{}, &PolyexponentialScheduler{},
		&LaplaceScheduler{}, &VPScheduler{}, &BetaSamplingScheduler{}, &FlipSigmas{}, &SetFirstSigma{}, &ExtendIntermediateSigmas{},
		&SamplingPercentToSigma{}, &AddNoise{},
		&SamplerEulerAncestral{}, &SamplerEulerAncestralCFGPP{}, &SamplerEulerCFGpp{}, &SamplerLMS{},
		&SamplerDPMPP_2M_SDE{}, &SamplerDPMPP_3M_SDE{}, &SamplerDPMPP_SDE{}, &SamplerDPMPP_2S_Ancestral{},
		&SamplerER_SDE{}, &SamplerSASolver{}, &SamplerDPMAdaptative{},
		// gguf.go
		&UnetLoaderGGUF{env: models}, &UnetLoaderGGUFAdvanced{env: models},
		// flux.go
		&FluxGuidance{}, &FluxDisableGuidance{}, &ReferenceLatent{}, &FluxKontextMultiReferenceLatentMethod{},
		&FluxKontextImageScale{},
		// controlnet.go
		&ControlNetLoader{env: models}, &DiffControlNetLoader{env: models}, &ControlNetApply{},
		&ControlNetApplyAdvanced{}, &ControlNetApplySD3{}, &SetUnionControlNetType{},
		// inpaint.go
		&VAEEncodeForInpaint{}, &SetLatentNoiseMask{}, &InpaintModelConditioning{}, &DifferentialDiffusion{},
		// canny.go
		&Canny{},
		// upscale.go
		&UpscaleModelLoader{env: models}, &ImageUpscaleWithModel{opts: opts},
		// animation.go
		&SaveAnimatedWEBP{opts: opts}, &SaveAnimatedPNG{opts: opts},
		// stitch.go
		&ImageStitch{},
		// batch.go
		&LoadImageOutput{LoadImage{imageFile{opts: opts}}}, &RebatchImages{}, &RebatchLatents{},
		// wsimage.go
		&SaveImageWebsocket{},
		// morphology.go
		&Morphology{}, &ImageRGBToYUV{}, &ImageYUVToRGB{},
		// patches.go
		&FreeU{}, &FreeUV2{}, &RescaleCFG{}, &PerturbedAttentionGuidance{}, &SelfAttentionGuidance{},
		&PerpNeg{}, &PerpNegGuider{}, &FreSca{}, &ModelSamplingContinuousEDM{}, &ModelSamplingContinuousV{},
		// vision.go
		&CLIPVisionLoader{env: models}, &CLIPVisionEncode{opts: opts}, &UnCLIPCheckpointLoader{env: models}, &UnCLIPConditioning{},
		&StyleModelLoader{env: models}, &StyleModelApply{opts: opts},
		&GLIGENLoader{env: models}, &GLIGENTextBoxApply{},
		// condguide.go
		&ConditioningSetMask{}, &ConditioningSetAreaPercentage{}, &ConditioningSetAreaStrength{},
		&CFGZeroStar{}, &APG{}, &TCFG{}, &Mahiro{}, &EpsilonScaling{},
		// latentops.go, latenttransform.go, latentoperation.go, latentfile.go, regex.go, webcam.go
		&LatentAdd{}, &LatentSubtract{}, &LatentMultiply{}, &LatentInterpolate{}, &LatentBatch{},
		&LatentConcat{}, &LatentCut{}, &LatentBatchSeedBehavior{},
		&LatentBlend{}, &LatentCompositeMasked{}, &LatentCrop{}, &LatentFlip{}, &LatentRotate{},
		&LatentApplyOperation{}, &LatentApplyOperationCFG{}, &LatentOperationSharpen{}, &LatentOperationTonemapReinhard{},
		&SaveLatent{opts: opts}, &LoadLatent{opts: opts},
		&RegexMatch{}, &RegexExtract{}, &RegexReplace{},
		&WebcamCapture{imageFile: imageFile{opts: opts}}, &ImageQuantize{}, // quantize.go
		// modelpatch.go
		&UNetSelfAttentionMultiply{attentionMultiply{env: models}}, &UNetCrossAttentionMultiply{attentionMultiply{env: models}},
		&CLIPAttentionMultiply{env: models}, &PatchModelAddDownscale{},
		&ModelComputeDtype{log: &onceLog{}}, &TorchCompileModel{log: &onceLog{}}, &HyperTile{},
		// loaders2.go
		&CheckpointLoader{env: models}, &DiffusersLoader{env: models}, &HypernetworkLoader{env: models},
		&InstructPixToPixConditioning{},
	}
	all = append(all, primitives()...) // primitive.go
	if err := r.Add(all...); err != nil {
		return fmt.Errorf("builtin: %w", err)
	}
	for _, n := range blockMerges() { // merge.go
		if err := r.Register(n); err != nil {
			return fmt.Errorf("builtin: %w", err)
		}
	}
	return nil
}

// valueTypes are the socket types of the built-in nodes: the Go type of their values and
// the check each value passes before a node's Run receives it.
func valueTypes() []nodes.ValueType {
	return []nodes.ValueType{
		nodes.Value("IMAGE", (*Image).Validate),
		nodes.Value("MASK", (*Mask).Validate),
		nodes.Value("LATENT", checkLatent),
		nodes.Value("CONDITIONING", checkConditioning),
		nodes.Value("MODEL", checkModel),
		nodes.Value("CLIP", checkCLIP),
		nodes.Value("VAE", checkVAE),
		nodes.Value("SAMPLER", checkSampler),
		nodes.Value("SIGMAS", Sigmas.Validate),
		nodes.Value[sd.Noise]("NOISE", nil),
		nodes.Value("GUIDER", checkGuider),
		nodes.Value("CONTROL_NET", checkControlNet),
		nodes.Value("UPSCALE_MODEL", checkUpscaleModel),
		nodes.Value("CLIP_VISION", checkCLIPVision),
		nodes.Value("CLIP_VISION_OUTPUT", checkCLIPVisionOutput),
		nodes.Value("STYLE_MODEL", checkStyleModel),
		nodes.Value("GLIGEN", checkGLIGEN),
		nodes.Value("LATENT_OPERATION", checkLatentOperation), // latentoperation.go
		nodes.Value[string]("WEBCAM", nil),                    // webcam.go: the capture's file name
	}
}

// Schema helpers. ComfyUI writes node inputs in two styles: the classic INPUT_TYPES dicts
// of nodes.py (("IMAGE",) with no option dict, combos as a bare list) and the newer
// comfy_api io.Schema (every input with an option dict, combos as ["COMBO", {...}], plus
// api_node/deprecated/experimental/output_tooltips keys). The helpers below build either.

// MaxResolution is ComfyUI's MAX_RESOLUTION (nodes.py), the bound of size widgets.
const MaxResolution = 16384

// socket is a classic link-only input: ("IMAGE",).
func socket(name, typ string) graph.Input {
	return graph.Input{Name: name, Type: typ, Bare: true}
}

// socketV3 is an io.Schema link input: ["IMAGE", {}].
func socketV3(name, typ string) graph.Input {
	return graph.Input{Name: name, Type: typ}
}

// combo is a classic combo with no option dict: ([...],).
func combo(name string, values ...string) graph.Input {
	return graph.Input{Name: name, Type: graph.TypeCombo, Bare: true, Choices: fixed(values)}
}

// comboV3 is an io.Combo input: ["COMBO", {"multiselect": false, "options": [...]}].
func comboV3(name string, values ...string) graph.Input {
	return graph.Input{Name: name, Type: graph.TypeCombo, ComboV3: true,
		Multiselect: graph.Off, Choices: fixed(values)}
}

func fixed(values []string) func() []string {
	return func() []string { return append([]string(nil), values...) }
}

// size is the usual width/height widget: default 512, 1 … MAX_RESOLUTION, step 1.
func size(name string, min int) graph.Input {
	return graph.Input{Name: name, Type: graph.TypeInt, Default: 512, Min: graph.Num(min), Max: graph.Num(MaxResolution), Step: graph.Num(1)}
}

// offset is a position or margin widget: default 0, 0 … MAX_RESOLUTION, step 1.
func offset(name string) graph.Input {
	return graph.Input{Name: name, Type: graph.TypeInt, Default: 0, Min: graph.Num(0), Max: graph.Num(MaxResolution), Step: graph.Num(1)}
}

// v3Extra returns the object_info keys ComfyUI's io.Schema adds for a node with n outputs
// that sets none of them: api_node, deprecated, experimental false and one null tooltip
// per output. A nil display name is served as JSON null, as io.Schema does when the
// schema leaves display_name unset.
func v3Extra(outputs int, displayName *string) map[string]any {
	tips := make([]any, outputs)
	extra := map[string]any{
		"api_node":        false,
		"deprecated":      false,
		"experimental":    false,
		"output_tooltips": tips,
	}
	if displayName == nil {
		extra["display_name"] = nil
	}
	return extra
}

func outputs(types ...string) []graph.Output {
	out := make([]graph.Output, len(types))
	for i, t := range types {
		out[i] = graph.Output{Type: t, Name: t}
	}
	return out
}

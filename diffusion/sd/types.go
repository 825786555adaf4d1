package sd

import (
	"github.com/forgeflow/forgeflow/diffusion/clip"
	"github.com/forgeflow/forgeflow/diffusion/flux"
	"github.com/forgeflow/forgeflow/diffusion/lora"
	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/diffusion/vae"
	"github.com/forgeflow/forgeflow/gpu"
)

// LatentFormat is how a family's latents are scaled for the diffusion model (ComfyUI's
// comfy/latent_formats.py): process_in(z) = (z − Shift)·Scale before sampling,
// process_out(z) = z/Scale + Shift after.
type LatentFormat struct {
	Name     string
	Channels int
	Scale    float64
	Shift    float64
}

// The latent formats of the supported families.
var (
	SD15Latent = LatentFormat{Name: "SD15", Channels: 4, Scale: 0.18215}
	SDXLLatent = LatentFormat{Name: "SDXL", Channels: 4, Scale: 0.13025}
	SD3Latent  = LatentFormat{Name: "SD3", Channels: 16, Scale: 1.5305, Shift: 0.0609}
	FluxLatent = LatentFormat{Name: "Flux", Channels: 16, Scale: 0.3611, Shift: 0.1159}
)

// Model is ComfyUI's MODEL: a diffusion network with its model sampling and latent
// format. Values are immutable; nodes that patch a model (ModelSamplingDiscrete, LoRA)
// return a modified copy sharing the weights.
type Model struct {
	Runtime *gpu.Runtime
	// UNet is the network of SD1.x/SD2.x/SDXL models; Net any other network (SD3's
	// MMDiT, Flux). The guider runs Net when set, else the UNet.
	UNet     *unet.Model
	Net      Network
	Sampling sampling.ModelSampling
	Latent   LatentFormat
	// ADM is set for SDXL-style models that take a label vector y built from the pooled
	// text embedding and size conditioning.
	ADM bool
	// PooledY: the label vector y is the conditioning's pooled output as it is (SD3 and
	// Flux encode_adm); an entry without one passes none.
	PooledY bool
	// Guidance: the network takes Flux's guidance scale from each conditioning entry
	// (model_base.Flux.extra_conds: 3.5 when the entry sets none, nothing after
	// FluxDisableGuidance).
	Guidance bool
	// ExactContext: text contexts batch together only with the same token count
	// (CONDRegular, SD3 and Flux); the UNet's cross-attention repeats them to a common
	// length instead (CONDCrossAttn).
	ExactContext bool
	// References: the network takes the conditioning's reference latents (Flux's
	// ref_latents); other models ignore them, as ComfyUI's do.
	References bool
	// PostCFG are ComfyUI's sampler_post_cfg_functions, applied in order to every
	// guided prediction (SkipLayerGuidanceDiT, CFGNorm). Patch nodes append a copy.
	PostCFG []PostCFG
	// CondBatch replaces the plain evaluation of the cond/uncond lists
	// (sampler_calc_cond_batch_function: SkipLayerGuidanceDiTSimple); nil for none.
	CondBatch CondBatchFunc
	// Patches are the other patch nodes' hooks (modelpatch.go).
	Patches
	// UnCLIP is an SD2.1 unCLIP model's noise augmentor: y comes from the entries'
	// unCLIP image embeddings (unclip.go); nil for other models.
	UnCLIP *NoiseAugmentor
	// IP2P marks an InstructPix2Pix UNet (model_base.IP2P): it takes the latent followed
	// by each entry's concat_latent_image as the VAE made it (zeros without one).
	IP2P bool
	// Name identifies the source (checkpoint file) in logs and errors.
	Name string
	// Weights records where the network's tensors are stored, for CheckpointSave; nil
	// when the model was not loaded from a file.
	Weights *Weights
	// loras and fluxLoras are the UNet's and the Flux transformer's LoRA stacks
	// (lora.go); nil for none.
	loras     *lora.Network[unet.Model]
	fluxLoras *lora.Network[flux.Model]
	// DenoiseMask adjusts the noise mask at every step (DifferentialDiffusion); nil
	// uses the mask as it is.
	DenoiseMask DenoiseMaskFunc
}

// WithSampling returns a copy of m that samples with ms.
func (m *Model) WithSampling(ms sampling.ModelSampling) *Model {
	c := *m
	c.Sampling = ms
	return &c
}

// WithPostCFG returns a copy of m with f appended to its post-CFG functions
// (set_model_sampler_post_cfg_function).
func (m *Model) WithPostCFG(f PostCFG) *Model {
	c := *m
	c.PostCFG = append(append([]PostCFG(nil), m.PostCFG...), f)
	return &c
}

// WithCondBatch returns a copy of m whose cond/uncond evaluation is f
// (set_model_sampler_calc_cond_batch_function, which replaces any earlier one).
func (m *Model) WithCondBatch(f CondBatchFunc) *Model {
	c := *m
	c.CondBatch = f
	return &c
}

// TextEncoder is one text model of a CLIP object (SD1.x has one, CLIP-L; SDXL two,
// CLIP-L and OpenCLIP-G) with its tokenizer.
type TextEncoder struct {
	Name      string // "l", "g", "h": ComfyUI's key in the token dict
	Tokenizer *clip.Tokenizer
	Encoder   *clip.Encoder
	// VocabErr says why Tokenizer is nil (no CLIP vocabulary was found), for the error
	// a prompt then gets.
	VocabErr error
	// loras is the text model's LoRA stack (lora.go); nil for none.
	loras *lora.Network[clip.TextModel]
	// projKey is the key the projection was bound from ("" without one) and
	// loadedProjection the tensor bound, so that CheckpointSave writes a merged one back.
	projKey          string
	loadedProjection *gpu.Tensor
}

// CLIP is ComfyUI's CLIP object: the text encoders of a model family and how their
// outputs combine. Layer is the CLIPSetLastLayer setting applied to every encoder (0:
// the family default).
type CLIP struct {
	Runtime *gpu.Runtime
	// Encoders are the CLIP text transformers ("l", "h", "g"), in the order their
	// outputs are concatenated.
	Encoders []*TextEncoder
	// T5 is the T5-XXL encoder of SD3 and Flux text encoders, nil for none.
	T5 *T5Encoder
	// Kind says how the encoders' outputs make the conditioning.
	Kind  CLIPKind
	Layer int
	Name  string
	// Weights records where the encoders' tensors are stored, for CheckpointSave.
	Weights *Weights
}

// WithLayer returns a copy of c that stops at layer (CLIPSetLastLayer's
// stop_at_clip_layer, negative).
func (c *CLIP) WithLayer(layer int) *CLIP {
	cp := *c
	cp.Layer = layer
	return &cp
}

// VAE is ComfyUI's VAE: the autoencoder with the latent format it decodes.
type VAE struct {
	Runtime *gpu.Runtime
	Model   *vae.Model
	Latent  LatentFormat
	Name    string
	// Weights records where the autoencoder's tensors are stored, for CheckpointSave.
	Weights *Weights
	// PixelSpace marks VAELoader's "pixel_space" VAE (Model nil): latents are the image
	// itself, 3 channels in [−1, 1].
	PixelSpace bool
}

// Cond is one entry of a CONDITIONING list: the text embedding and everything the
// conditioning nodes attach to it (ComfyUI's [tensor, {options}] pair).
type Cond struct {
	Embedding *gpu.Tensor // (1, T, D)
	Pooled    *gpu.Tensor // (1, P) pooled text output, nil when the encoder has none
	// Area restricts the entry to a latent region (ConditioningSetArea), nil for all.
	// AreaPercent is ConditioningSetAreaPercentage's area as fractions of the sampled
	// latent, resolved when sampling; at most one of the two is set (ComfyUI's one
	// "area" key).
	Area        *Area
	AreaPercent *AreaPercent
	Strength    float64 // 1 unless set
	// Mask weights the entry per pixel (ConditioningSetMask), nil for none: resized
	// to the latent when sampling, scaled by MaskStrength (read only with a Mask).
	// SetAreaToBounds ("mask bounds") limits the entry to the mask's bounding box.
	Mask            *CondMask
	MaskStrength    float64
	SetAreaToBounds bool
	// StartPercent/EndPercent limit the entry to part of the sampling run
	// (ConditioningSetTimestepRange); 0 and 1 by default.
	StartPercent, EndPercent float64
	// Size is SDXL's size conditioning (CLIPTextEncodeSDXL), nil for defaults.
	Size *unet.SizeConditioning
	// AestheticScore is set by CLIPTextEncodeSDXLRefiner (0 when unset).
	AestheticScore float64
	// Guidance is Flux's distilled guidance scale (CLIPTextEncodeFlux, FluxGuidance);
	// nil leaves the model's default (3.5). NoGuidance is FluxDisableGuidance's
	// "guidance": None, which passes no guidance at all.
	Guidance   *float64
	NoGuidance bool
	// ReferenceLatents are the latents ReferenceLatent attached (ComfyUI's
	// "reference_latents", VAE latent space, each (N, C, h, w)); edit models (Flux
	// Kontext) see them as extra tokens. ReferenceMethod is
	// FluxKontextMultiReferenceLatentMethod's "offset", "index" or "uxo" ("" when unset).
	// The slice is shared between copies: append to a copy, never in place.
	ReferenceLatents []*gpu.Tensor
	ReferenceMethod  string
	// Control is the ControlNet or T2I-Adapter applied to the entry, nil for none.
	// ControlApplyToUncond (ControlNetApply) also gives it to the negative entries
	// that have none.
	Control              Control
	ControlApplyToUncond bool
	// ConcatLatent and ConcatMask are an inpainting model's concat_latent_image (a VAE
	// latent, (N, C, H, W)) and concat_mask ((N, H, W) or (N, 1, H, W), 1 = repaint),
	// set by InpaintModelConditioning; nil uses the sampled latent and its noise mask.
	ConcatLatent, ConcatMask *gpu.Tensor
	// UnCLIP are unCLIPConditioning's image embeddings (unclip.go), in order. The
	// slice is shared between copies like ReferenceLatents.
	UnCLIP []UnCLIPCond
	// AttentionMask is StyleModelApply's attention bias (style.go), nil for none.
	AttentionMask *AttentionMask
	// GLIGEN is the grounding GLIGENTextBoxApply attached (gligen.go), nil for none.
	GLIGEN *GLIGENBoxes
}

// Area is a latent-space rectangle in pixels/8 units, as ComfyUI stores it.
type Area struct {
	Height, Width, Y, X int
}

// AreaPercent is an area as fractions (0..1) of the latent's height and width.
type AreaPercent struct {
	Height, Width, Y, X float64
}

// CondMask is a conditioning mask: N planes of H×W weights (ComfyUI's MASK, 1 = the
// entry applies fully). Data is shared between copies and never changed.
type CondMask struct {
	Data    []float32
	N, H, W int
}

// Conditioning is ComfyUI's CONDITIONING: a list of entries.
type Conditioning []Cond

// Latent is ComfyUI's LATENT dict.
type Latent struct {
	Samples *gpu.Tensor // (N, C, H, W), not scaled by the latent format
	// BatchIndex lists each sample's index in its original batch (LatentFromBatch);
	// noise for a seed is drawn per index, so a sub-batch gets the same noise.
	BatchIndex []int
	// NoiseMask (N or 1, 1, H, W) limits denoising to the masked area (inpainting), or nil.
	NoiseMask *gpu.Tensor
}

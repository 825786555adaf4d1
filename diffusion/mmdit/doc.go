// Package mmdit is the SD3 / SD3.5 multimodal diffusion transformer (MMDiT) as ComfyUI
// 0.3.64 builds it (comfy/ldm/modules/diffusionmodules/mmdit.py MMDiT and
// OpenAISignatureMMDITWrapper; comfy/model_detection.py for the configuration), its Go
// types named after the checkpoint keys under "model.diffusion_model.". SD3 medium,
// SD3.5 large (RMS q/k norms) and SD3.5 medium (dual-attention x-blocks) load from
// their shapes alone.
//
// It imports gpu and diffusion/statedict; model sampling, conditioning and the latent
// format live in diffusion/sd.
package mmdit

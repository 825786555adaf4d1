// Package clipvision is the CLIP vision tower as ComfyUI 0.3.64 runs it for
// CLIPVisionLoader, CLIPVisionEncode and unCLIP checkpoints (comfy/clip_vision.py,
// comfy/clip_model.py CLIPVisionModelProjection, the clip_vision_config_*.json files):
// OpenAI's ViT-L/14 (224 and 336), OpenCLIP's ViT-H/14 and ViT-bigG/14, and SigLIP
// so400m (384 and 512), in transformers' key layout ("vision_model.…",
// "visual_projection.weight") or OpenCLIP's ("visual.…", as unCLIP checkpoints embed
// it), plus ComfyUI's clip_preprocess (antialiased bicubic resize, centre crop, 8-bit
// quantisation, CLIP's mean and std).
//
// It imports gpu, weights, diffusion/nn and diffusion/statedict; the nodes and the
// unCLIP and style models that consume its outputs live in nodes/builtin and
// diffusion/sd.
package clipvision

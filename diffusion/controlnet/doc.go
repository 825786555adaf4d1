// Package controlnet holds the control models of Stable Diffusion UNets: ControlNets
// (comfy/cldm/cldm.py, from the original and the diffusers layout, control-lora and
// union/promax), T2I-Adapters (comfy/t2i_adapter/adapter.py, full and light) and how
// ComfyUI applies them while sampling (comfy/controlnet.py: hint resizing, strength,
// timestep ranges, chains). Its values implement sd.Control; the residuals reach the
// UNet through unet.Inputs.Control. It imports gpu, weights, diffusion/unet and
// diffusion/sd, never nodes.
package controlnet

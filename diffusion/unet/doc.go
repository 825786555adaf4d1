// Package unet is the Stable Diffusion UNet (SD1.x, SD2.x, SDXL) as ComfyUI builds it
// (comfy/ldm/modules/diffusionmodules/openaimodel.py UNetModel and
// comfy/ldm/modules/attention.py SpatialTransformer), its Go types named after the
// checkpoint keys under "model.diffusion_model.". The block structure is read from the
// keys present (which blocks hold a ResBlock, a transformer, a down- or upsampler), so
// every family's layout loads without a table of configurations.
package unet

// Package detect tells what a model file holds from its tensor names and shapes, as
// ComfyUI's comfy/model_detection.py (and the detection in comfy/sd.py and comfy/lora.py)
// does: SD1.x, SD2.x, SDXL base and refiner, SD3, Flux dev and schnell diffusion models,
// VAEs, CLIP and T5 text encoders, and LoRA files of the common flavours. The result is
// a plain configuration (channels, depths, context size, prediction type, ...) that the
// model code builds from.
//
// Detection reads only the tensor list, except for one rule inherited from ComfyUI: an
// SD2.x UNet is v-prediction or eps depending on the spread of one bias vector, which is
// read through Input.Values when given.
package detect

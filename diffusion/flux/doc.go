// Package flux is the Flux.1 diffusion transformer (dev, schnell, Kontext, Fill) as
// ComfyUI builds it (comfy/ldm/flux/model.py, layers.py, math.py and
// comfy/model_base.py Flux), its Go types named after the keys of a Flux
// diffusion-model file. Hyper-parameters come from the tensor shapes; weights stay in
// their stored dtype (bf16, fp16, fp8, GGUF blocks) and are converted inside the
// matrix kernels.
//
// It imports gpu, weights and diffusion/statedict and diffusion/sampling; never the
// node registry or the executor.
package flux

// Package sampling holds what turns a denoiser into an image: model sampling (how a
// model's noise level maps to timesteps and how its output becomes a denoised estimate:
// eps, v-prediction, flow), the scheduler registry (sigma schedules keyed by ComfyUI's
// scheduler names) and, later, the sampler registry.
//
// Upstream, re-derived from the formulas (never copied): ComfyUI comfy/model_sampling.py,
// comfy/samplers.py (scheduler handlers, KSampler.calculate_sigmas/set_steps) and
// k-diffusion's sampling.py (get_sigmas_karras, get_sigmas_exponential). Tensor math that
// PyTorch does in float32 is done in float32 here; Python float math in float64.
package sampling

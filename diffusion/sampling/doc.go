// Package sampling holds what turns a denoiser into an image: model sampling (how a
// model's noise level maps to timesteps and how its output becomes a denoised estimate:
// eps, v-prediction, flow), the scheduler registry (sigma schedules keyed by ComfyUI's
// scheduler names) and the sampler table: one Sampler descriptor per ComfyUI
// sampler_name, carrying the algorithm and every property another layer acts on
// (CFG++, discard-penultimate, inpaint noise, step noise). No other code decides
// anything by a sampler's name.
//
// Upstream, re-derived from the formulas (never copied): ComfyUI comfy/model_sampling.py,
// comfy/samplers.py (scheduler handlers, KSampler.calculate_sigmas/set_steps,
// KSAMPLER) and k-diffusion's sampling.py (the samplers, get_sigmas_karras,
// get_sigmas_exponential). Tensor math that PyTorch does in float32 is done in float32
// here; Python float math in float64.
package sampling

// Package diffusion is the root of forgeflow's model code: text encoders, UNet, VAE,
// Flux, ControlNets and T2I-Adapters, sampling (samplers, schedulers, noise) and LoRA,
// one sub-package per concern.
//
// It builds on gpu (tensors) and weights (files); it never imports the executor, the
// server or the node registry.
package diffusion

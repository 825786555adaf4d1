// Package nn is the one layer set every network in diffusion/ is built from: Linear,
// Conv, Norm (group and layer norm) and RMSNorm, their fields tagged with the
// state-dict names statedict.Bind fills (STYLE.md §22), and the hook weight patches go
// through.
//
// Each layer remembers the key prefix it was bound at (Module, filled by statedict.Bind
// through statedict.Keyed), so that a LoRA can find "…attn1.to_q." in any model. A
// patched model is a Clone of the base model's layer tree in which some layers hold
// other tensors (a merged copy of their weight) or run-time Patches (a low-rank update
// added beside the layer's product: y = x·Wᵀ + (x·Downᵀ)·Upᵀ, for weights that are not
// copied, e.g. GGUF blocks). The base tree and its tensors are never changed.
//
// It imports gpu only; the networks (clip, t5, unet, vae, flux) import it.
package nn

// Package sd holds the Stable Diffusion pipeline objects as ComfyUI's nodes pass them
// between each other — MODEL, CLIP, VAE, CONDITIONING, LATENT — and the operations on
// them that are not one network: loading a checkpoint into its parts, latent formats,
// classifier-free guidance over conditioning lists, latent previews.
//
// Nodes (nodes/builtin) are thin wrappers over this package; the networks themselves
// live in diffusion/{clip,unet,vae}.
package sd

// Package builtin holds forgeflow's built-in node classes, each a typed struct
// (nodes.Typed) in the file of its family, and registers them all, with the value types
// of their sockets, in Register (register.go).
//
// Families: image.go, postprocess.go, transform.go, composite.go, porterduff.go,
// noise.go (image operations); mask.go, maskops.go (masks); load.go + decode.go +
// apng.go (LoadImage, LoadImageMask); save.go + savepath.go + pyjson.go (SaveImage,
// PreviewImage; MaskPreview in maskops.go); primitive.go, strings.go; loaders.go
// (checkpoint, VAE and CLIP loaders), lora.go (LoraLoader, LoraLoaderModelOnly),
// vaenodes.go (VAE encode/decode, CheckpointSave);
// conditioning.go, latent.go, sampling.go, customsampling.go (text encoding, latents,
// KSampler and the custom sampling nodes); condguide.go (mask and percentage areas,
// the CFGZeroStar/APG/TCFG/Mahiro/Epsilon Scaling guidance patches); latentops.go,
// latenttransform.go, latentoperation.go, latentfile.go (latent arithmetic, batches,
// transforms, operations, .latent files); quantize.go (ImageQuantize); regex.go
// (RegexMatch, RegexExtract, RegexReplace); webcam.go (WebcamCapture). values.go
// defines the IMAGE and MASK values.
//
// Every schema equals ComfyUI 0.3.64's /object_info entry for the same class, and every
// Run reproduces the numerics of ComfyUI's implementation (nodes.py and the
// comfy_extras modules named on each node), re-derived and cited per function. It
// imports nodes and graph; the model code of diffusion/ (sd, sampling, rng, vae, unet,
// clip, lora), gpu and gpu/resample; weights/folders and weights/memory for the loaders; never
// the executor or the server. The tensor runtime comes from Options.Runtime (built in
// cmd/), never from a runtime of the package's own.
package builtin

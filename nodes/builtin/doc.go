// Package builtin holds forgeflow's built-in, model-free node families: image loading and
// saving, image and mask operations, and ComfyUI's primitive and string nodes. Register
// adds them to a nodes.Registry; values.go defines the IMAGE and MASK values they pass.
//
// One file per family: load.go + decode.go (LoadImage, LoadImageMask), save.go +
// savepath.go + pyjson.go (SaveImage, PreviewImage, MaskPreview), image.go (EmptyImage,
// ImageScale, ImageScaleBy, ImageInvert, ImageBatch, ImageCrop, ImagePadForOutpaint),
// postprocess.go (ImageBlend, ImageBlur, ImageSharpen), mask.go and maskops.go (the
// nodes_mask family), composite.go (ImageCompositeMasked, batch helpers), transform.go
// (flip, rotate, size, fit, alpha split/join), primitive.go, strings.go.
//
// Every schema equals ComfyUI 0.3.64's /object_info entry for the same class, and every
// Run reproduces the numerics of ComfyUI's implementation (nodes.py and the
// comfy_extras modules named on each node), re-derived and cited per function. It
// imports nodes, graph and gpu/resample, never the executor or the server.
package builtin

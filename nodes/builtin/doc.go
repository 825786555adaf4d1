// Package builtin holds forgeflow's built-in, model-free node families: image loading and
// saving, image and mask operations, and ComfyUI's primitive nodes. Register adds them to a
// nodes.Registry; each family has its own file (image.go, mask.go, save.go, load.go,
// postprocess.go, primitive.go) and values.go defines the IMAGE and MASK values they pass.
//
// Every schema equals ComfyUI 0.3.64's /object_info entry for the same class, and every
// Run reproduces the numerics of ComfyUI's implementation (nodes.py,
// comfy_extras/nodes_post_processing.py, nodes_mask.py, nodes_images.py,
// nodes_primitive.py), re-derived and cited per function. It imports nodes, graph and
// gpu/resample, never the executor or the server.
package builtin

package main

import "slices"

// comfyUISourceNodes are ComfyUI 0.3.64 classes its /object_info (comfyUINodes) lacks
// because the reference install misses an optional Python package, so their modules
// fail to import there: kornia (comfy_extras/nodes_canny.py, nodes_morphology.py) and
// spandrel (nodes_upscale_model.py). Their schemas come from ComfyUI's source.
var comfyUISourceNodes = []string{
	"Canny",
	"ImageRGBToYUV", "ImageYUVToRGB", "Morphology",
	"ImageUpscaleWithModel", "UpscaleModelLoader",
}

// comfyUIClasses is every ComfyUI 0.3.64 class `nodes --coverage` compares with: the
// reference's and those from source, sorted.
func comfyUIClasses() []string {
	all := append(slices.Clone(comfyUINodes), comfyUISourceNodes...)
	slices.Sort(all)
	return slices.Compact(all)
}

// Package folders finds model files where users keep them: ComfyUI's folder layout
// under a base directory (models/checkpoints, models/loras, ...), extra search paths
// from ComfyUI's extra_model_paths.yaml format, and a scan of each folder that is
// cached and refreshed by directory modification times.
//
// A model name is a slash-separated path relative to one of its folder's directories
// ("sub/name.safetensors"). Names that would leave the folder are refused; symbolic
// links are followed, as ComfyUI follows them, unless Options.ConfineLinks.
package folders

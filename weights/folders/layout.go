package folders

// The layout follows ComfyUI 0.3.64 folder_paths.py (module level folder_names_and_paths):
// the folder names, their order (GET /models lists them in this order), the directories
// searched for each and the file extensions each accepts.

// ModelExtensions are the extensions ComfyUI accepts for model files
// (folder_paths.supported_pt_extensions). Matching ignores case.
var modelExtensions = []string{".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}

// folderSpec is one folder of the default layout.
type folderSpec struct {
	name string
	// dirs are relative to the base directory, searched in this order.
	dirs []string
	// exts are the accepted extensions (lowercase, with the dot); nil accepts every
	// file. A single "" accepts only files without an extension (ComfyUI's
	// classifiers folder); "folder" accepts no file (ComfyUI's diffusers folder, whose
	// entries are directories its loader finds by other means).
	exts []string
}

func defaultLayout() []folderSpec {
	m := modelExtensions
	return []folderSpec{
		{"checkpoints", []string{"models/checkpoints"}, m},
		{"configs", []string{"models/configs"}, []string{".yaml"}},
		{"loras", []string{"models/loras"}, m},
		{"vae", []string{"models/vae"}, m},
		{"text_encoders", []string{"models/text_encoders", "models/clip"}, m},
		{"diffusion_models", []string{"models/unet", "models/diffusion_models"}, m},
		{"clip_vision", []string{"models/clip_vision"}, m},
		{"style_models", []string{"models/style_models"}, m},
		{"embeddings", []string{"models/embeddings"}, m},
		{"diffusers", []string{"models/diffusers"}, []string{"folder"}},
		{"vae_approx", []string{"models/vae_approx"}, m},
		{"controlnet", []string{"models/controlnet", "models/t2i_adapter"}, m},
		{"gligen", []string{"models/gligen"}, m},
		{"upscale_models", []string{"models/upscale_models"}, m},
		{"custom_nodes", []string{"custom_nodes"}, nil},
		{"hypernetworks", []string{"models/hypernetworks"}, m},
		{"photomaker", []string{"models/photomaker"}, m},
		{"classifiers", []string{"models/classifiers"}, []string{""}},
		{"model_patches", []string{"models/model_patches"}, m},
		{"audio_encoders", []string{"models/audio_encoders"}, m},
	}
}

// legacyNames maps ComfyUI's old folder names to the current ones
// (folder_paths.map_legacy): "unet" is "diffusion_models", "clip" is "text_encoders".
var legacyNames = map[string]string{
	"unet": "diffusion_models",
	"clip": "text_encoders",
}

// Canonical returns the current name of a folder, mapping the legacy aliases "unet" and
// "clip"; other names are returned unchanged.
func Canonical(folder string) string {
	if c, ok := legacyNames[folder]; ok {
		return c
	}
	return folder
}

package pull

// Well-known models to start from, by name (forgeflow models pull --list). Sizes are
// approximate (they are shown before a download; the transfer checks the real size
// and digest). Every source is a public Hugging Face file.

// Starter is a named set of files that make a working model.
type Starter struct {
	Name        string
	Description string
	Files       []StarterFile
	// Tokenizers are the tokenizers its text encoders need ("clip", "t5"), fetched
	// with it when missing.
	Tokenizers []string
}

// StarterFile is one file of a starter.
type StarterFile struct {
	Source string // hf:owner/repo/path
	Folder string // model folder it goes to
	Size   int64  // approximate, in bytes
}

// Size is the starter's approximate total size in bytes.
func (s Starter) Size() int64 {
	var n int64
	for _, f := range s.Files {
		n += f.Size
	}
	return n
}

// Starters lists them.
var Starters = []Starter{
	{
		Name:        "sd15",
		Description: "Stable Diffusion 1.5, fp16, EMA-only weights (512×512; the default graph's model)",
		Files: []StarterFile{
			{"hf:Comfy-Org/stable-diffusion-v1-5-archive/v1-5-pruned-emaonly-fp16.safetensors", "checkpoints", 2_130_000_000},
		},
		Tokenizers: []string{"clip"},
	},
	{
		Name:        "sdxl",
		Description: "Stable Diffusion XL 1.0 base (1024×1024)",
		Files: []StarterFile{
			{"hf:stabilityai/stable-diffusion-xl-base-1.0/sd_xl_base_1.0.safetensors", "checkpoints", 6_940_000_000},
		},
		Tokenizers: []string{"clip"},
	},
	{
		Name:        "flux-schnell-gguf",
		Description: "FLUX.1 schnell, 4-bit GGUF (Q4_K_S) with its CLIP-L, T5-XXL (fp8) and VAE (1024×1024 in 4 steps)",
		Files: []StarterFile{
			{"hf:city96/FLUX.1-schnell-gguf/flux1-schnell-Q4_K_S.gguf", "diffusion_models", 6_780_000_000},
			{"hf:comfyanonymous/flux_text_encoders/clip_l.safetensors", "text_encoders", 246_000_000},
			{"hf:comfyanonymous/flux_text_encoders/t5xxl_fp8_e4m3fn.safetensors", "text_encoders", 4_890_000_000},
			{"hf:black-forest-labs/FLUX.1-schnell/ae.safetensors", "vae", 335_000_000},
		},
		Tokenizers: []string{"clip", "t5"},
	},
	{
		Name:        "esrgan-4x",
		Description: "Real-ESRGAN 4× upscaler (a PyTorch pickle file: needs --allow-pickle; forgeflow reads it with a restricted unpickler)",
		Files: []StarterFile{
			{"hf:ai-forever/Real-ESRGAN/RealESRGAN_x4.pth", "upscale_models", 67_000_000},
		},
	},
}

// Tokenizer sources: the CLIP BPE vocabulary (OpenAI's CLIP ViT-L/14, which SD1.x,
// SDXL, SD3 and Flux all tokenize with) and the T5 v1.1 SentencePiece model (Flux's and
// SD3's T5-XXL).
var Tokenizers = map[string][]string{
	"clip": {"hf:openai/clip-vit-large-patch14/vocab.json", "hf:openai/clip-vit-large-patch14/merges.txt"},
	"t5":   {"hf:google/t5-v1_1-xxl/spiece.model"},
}

// FindStarter returns the starter called name.
func FindStarter(name string) (Starter, bool) {
	for _, s := range Starters {
		if s.Name == name {
			return s, true
		}
	}
	return Starter{}, false
}

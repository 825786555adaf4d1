package detect

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/forgeflow/forgeflow/weights"
)

// Kind is what a file holds as a whole.
type Kind string

const (
	// KindCheckpoint is a single-file checkpoint: a diffusion model with a VAE and/or
	// text encoders (model.diffusion_model., first_stage_model., cond_stage_model. ...).
	KindCheckpoint Kind = "checkpoint"
	// KindDiffusionModel is a diffusion model alone (the diffusion_models folder).
	KindDiffusionModel Kind = "diffusion_model"
	KindVAE            Kind = "vae"
	// KindTextEncoder is one or more text encoders without a diffusion model.
	KindTextEncoder Kind = "text_encoder"
	KindLoRA        Kind = "lora"
)

// Family names a model architecture as users know it.
type Family string

const (
	FamilySD1         Family = "sd1"
	FamilySD2         Family = "sd2"
	FamilySDXL        Family = "sdxl"
	FamilySDXLRefiner Family = "sdxl_refiner"
	FamilySD3         Family = "sd3"
	FamilyFluxDev     Family = "flux_dev"
	FamilyFluxSchnell Family = "flux_schnell"
	// FamilyVAE is the KL autoencoder of SD1/SD2/SDXL (4 latent channels) and of SD3 and
	// Flux (16); VAEConfig.LatentChannels tells them apart.
	FamilyVAE   Family = "vae"
	FamilyCLIPL Family = "clip_l"
	FamilyCLIPH Family = "clip_h"
	FamilyCLIPG Family = "clip_g"
	FamilyT5XXL Family = "t5xxl"
	FamilyT5XL  Family = "t5xl"
	FamilyT5    Family = "t5" // a T5 encoder of another size
	FamilyLoRA  Family = "lora"
)

// Prediction is what a diffusion model's output means (ComfyUI's ModelType).
type Prediction string

const (
	PredictEps  Prediction = "eps"
	PredictV    Prediction = "v_prediction"
	PredictEDM  Prediction = "edm"              // Playground v2.5 style (edm_mean/edm_std keys)
	PredictVEDM Prediction = "v_prediction_edm" // edm_vpred.sigma_max key
	PredictFlow Prediction = "flow"             // rectified flow, constant shift (SD3, Flux schnell)
	PredictFlux Prediction = "flux"             // rectified flow with Flux's resolution shift
)

// Model is what Detect found.
type Model struct {
	Kind Kind
	// Family is the family of the main part: the diffusion model, else the VAE, else the
	// first text encoder, else FamilyLoRA.
	Family Family
	// Diffusion, VAE, TextEncoders and LoRA are the parts present (nil/empty if absent).
	Diffusion    *Diffusion
	VAE          *VAEConfig
	TextEncoders []TextEncoder
	LoRA         *LoRAConfig
	// Unsupported is non-empty when the file was recognised but forgeflow cannot run
	// it yet; it says why (for instance "SD3 (MMDiT) is not implemented").
	Unsupported string
}

// Input is what detection looks at.
type Input struct {
	// Tensors lists every tensor of the file (names and shapes; shapes in PyTorch order).
	Tensors []weights.TensorInfo
	// Values returns a tensor's values as float32. Optional: only the SD2.x
	// v-prediction rule reads values, and without Values an SD2.x UNet is taken as
	// v-prediction (what the 768-pixel SD2.x releases are).
	Values func(name string) ([]float32, error)
	// Metadata holds the file's metadata (GGUF general.architecture, safetensors
	// __metadata__); optional.
	Metadata map[string]string
}

// ErrUnknown is returned when no known model is found in the tensors.
var ErrUnknown = errors.New("detect: no known model in the tensors")

// sd is the tensor index detection works on.
type sd struct {
	in     Input
	keys   []string // file order
	sorted []string // for prefix searches
	shape  map[string][]int64
	dtype  map[string]weights.DType
}

func newSD(in Input) *sd {
	s := &sd{in: in, shape: make(map[string][]int64, len(in.Tensors)), dtype: make(map[string]weights.DType, len(in.Tensors))}
	for _, t := range in.Tensors {
		s.keys = append(s.keys, t.Name)
		s.shape[t.Name] = t.Shape
		s.dtype[t.Name] = t.DType
	}
	s.sorted = slices.Clone(s.keys)
	slices.Sort(s.sorted)
	return s
}

func (s *sd) has(k string) bool { _, ok := s.shape[k]; return ok }

// dim returns dimension i of tensor k (negative i counts from the end), or 0 when the
// tensor is absent or has fewer dimensions.
func (s *sd) dim(k string, i int) int {
	sh, ok := s.shape[k]
	if !ok {
		return 0
	}
	if i < 0 {
		i += len(sh)
	}
	if i < 0 || i >= len(sh) {
		return 0
	}
	return int(sh[i])
}

func (s *sd) rank(k string) int { return len(s.shape[k]) }

// hasPrefix reports whether any key starts with p: the first key not below p in
// sorted order is the only candidate.
func (s *sd) hasPrefix(p string) bool {
	i, _ := slices.BinarySearch(s.sorted, p)
	return i < len(s.sorted) && strings.HasPrefix(s.sorted[i], p)
}

// countBlocks is ComfyUI's count_blocks: how many consecutive n = 0, 1, ... have a key
// starting with fmt.Sprintf(format, n).
func (s *sd) countBlocks(format string) int {
	n := 0
	for {
		p := fmt.Sprintf(format, n)
		if !s.hasPrefix(p) {
			return n
		}
		n++
	}
}

// prefixOf returns the part of the first key containing marker that comes before it,
// and whether one was found. The shortest such prefix wins, so that a nested model
// inside a larger one is not preferred.
func (s *sd) prefixOf(marker string) (string, bool) {
	best, found := "", false
	for _, k := range s.keys {
		if i := strings.Index(k, marker); i >= 0 && (i == 0 || k[i-1] == '.' || k[i-1] == '_') {
			if !found || i < len(best) {
				best, found = k[:i], true
			}
		}
	}
	return best, found
}

// Detect tells what the tensors hold. It returns ErrUnknown (wrapped) when nothing
// matches; a recognised model that cannot run yet comes back with Unsupported set, not
// as an error.
func Detect(in Input) (*Model, error) {
	if len(in.Tensors) == 0 {
		return nil, fmt.Errorf("%w: the file has no tensors", ErrUnknown)
	}
	s := newSD(in)
	if lora := detectLoRA(s); lora != nil {
		m := &Model{Kind: KindLoRA, Family: FamilyLoRA, LoRA: lora}
		return m, nil
	}
	m := &Model{}
	diff, err := detectDiffusion(s)
	if err != nil {
		return nil, err
	}
	m.Diffusion = diff
	m.VAE = detectVAE(s)
	m.TextEncoders = detectTextEncoders(s)

	switch {
	case diff != nil && (m.VAE != nil || len(m.TextEncoders) > 0):
		m.Kind, m.Family = KindCheckpoint, diff.Family
	case diff != nil:
		m.Kind, m.Family = KindDiffusionModel, diff.Family
	case m.VAE != nil:
		m.Kind, m.Family = KindVAE, FamilyVAE
	case len(m.TextEncoders) > 0:
		m.Kind, m.Family = KindTextEncoder, m.TextEncoders[0].Family
	default:
		return nil, fmt.Errorf("%w (%d tensors, first %q)", ErrUnknown, len(in.Tensors), in.Tensors[0].Name)
	}
	if diff != nil && diff.Unsupported != "" {
		m.Unsupported = diff.Unsupported
	} else if m.VAE != nil && m.VAE.Unsupported != "" && diff == nil {
		m.Unsupported = m.VAE.Unsupported
	}
	return m, nil
}

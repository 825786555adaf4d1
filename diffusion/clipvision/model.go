package clipvision

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
)

// Layer is one pre-norm encoder layer (CLIPLayer).
type Layer struct {
	Norm1 nn.Norm `sd:"layer_norm1"`
	Attn  struct {
		Q   nn.Linear `sd:"q_proj"`
		K   nn.Linear `sd:"k_proj"`
		V   nn.Linear `sd:"v_proj"`
		Out nn.Linear `sd:"out_proj"`
	} `sd:"self_attn"`
	Norm2 nn.Norm `sd:"layer_norm2"`
	MLP   struct {
		FC1 nn.Linear `sd:"fc1"`
		FC2 nn.Linear `sd:"fc2"`
	} `sd:"mlp"`
}

// Model is CLIPVisionModelProjection, its fields named after the transformers keys.
type Model struct {
	Vision struct {
		Embeddings struct {
			// Class is CLIP's class token; SigLIP has none.
			Class *gpu.Tensor `sd:"class_embedding,optional"`
			// Patch is the patch convolution (D, 3, P, P), with a bias in SigLIP.
			Patch struct {
				Weight *gpu.Tensor `sd:"weight"`
				Bias   *gpu.Tensor `sd:"bias,optional"`
			} `sd:"patch_embedding"`
			Position *gpu.Tensor `sd:"position_embedding.weight"`
		} `sd:"embeddings"`
		// PreNorm is CLIP's pre_layrnorm (sic, the transformers name); SigLIP has none.
		PreNorm  nn.Norm `sd:"pre_layrnorm,optional"`
		Layers   []Layer `sd:"encoder.layers"`
		PostNorm nn.Norm `sd:"post_layernorm"`
	} `sd:"vision_model"`
	// Projection is visual_projection (out, D), nil for SigLIP (image_embeds are then
	// the normed hidden states).
	Projection *gpu.Tensor `sd:"visual_projection.weight,optional"`

	Config Config
}

// Config is what the tower's shapes and family say.
type Config struct {
	// Name is the ComfyUI configuration the sizes match ("vit-l", "vit-l-336",
	// "vit-h", "vit-g", "siglip-384", "siglip-512"), "" for other sizes.
	Name       string
	SigLIP     bool
	Width      int
	Layers     int
	Heads      int
	Patch      int
	ImageSize  int
	Projection int // 0 without a projection
	// Activation is the MLP's: "quick_gelu" (OpenAI ViT-L), "gelu" (OpenCLIP H, G),
	// "gelu_pytorch_tanh" (SigLIP).
	Activation string
	// Mean and Std normalise the preprocessed pixels.
	Mean, Std [3]float32
}

// CLIP's and SigLIP's pixel statistics (clip_preprocess defaults, the SigLIP configs).
var (
	clipMean   = [3]float32{0.48145466, 0.4578275, 0.40821073}
	clipStd    = [3]float32{0.26862954, 0.26130258, 0.27577711}
	siglipMean = [3]float32{0.5, 0.5, 0.5}
	siglipStd  = [3]float32{0.5, 0.5, 0.5}
)

// heads is the attention head count of every configuration ComfyUI ships (16); the
// shapes do not hold it.
const heads = 16

// Load binds a tower in transformers layout under prefix ("" for a standalone file)
// and derives its configuration from the shapes, as comfy/clip_vision.py
// load_clipvision_from_sd picks a JSON config: the layer count tells ViT-bigG (48),
// ViT-H (32), ViT-L or SigLIP (24 / 27); a tower without a class token is SigLIP. Other
// sizes load too (the test models): their activation follows the same rule (gelu from
// 31 layers on, quick_gelu below; SigLIP's tanh GELU without a class token).
func Load(rt *gpu.Runtime, src statedict.Source, prefix string) (*Model, error) {
	m := &Model{}
	if _, err := statedict.Bind(rt, src, prefix, m); err != nil {
		return nil, fmt.Errorf("clipvision: %w", err)
	}
	if err := m.configure(); err != nil {
		return nil, err
	}
	// The position table is added to activations, which are float32: widen it once
	// (a few hundred thousand values).
	if pos := m.Vision.Embeddings.Position; pos.DType() != gpu.F32 {
		wide, err := gpu.Cast(rt, pos, gpu.F32)
		if err != nil {
			return nil, fmt.Errorf("clipvision: position_embedding: %w", err)
		}
		pos.Release()
		m.Vision.Embeddings.Position = wide
	}
	return m, nil
}

func (m *Model) configure() error {
	v := &m.Vision
	if len(v.Layers) == 0 {
		return errors.New("clipvision: no encoder layers")
	}
	pw := v.Embeddings.Patch.Weight.Shape()
	if len(pw) != 4 || pw[1] != 3 || pw[2] != pw[3] || pw[2] == 0 {
		return fmt.Errorf("clipvision: patch_embedding.weight %v is not (width, 3, P, P)", pw)
	}
	c := Config{Width: pw[0], Layers: len(v.Layers), Heads: heads, Patch: pw[2], SigLIP: v.Embeddings.Class == nil,
		Mean: clipMean, Std: clipStd}
	pos := v.Embeddings.Position.Shape()
	if len(pos) != 2 || pos[1] != c.Width {
		return fmt.Errorf("clipvision: position_embedding.weight %v is not (positions, %d)", pos, c.Width)
	}
	patches := pos[0]
	if !c.SigLIP {
		patches--
		if v.PreNorm.Weight == nil {
			return errors.New("clipvision: a CLIP tower (class token) without pre_layrnorm")
		}
		if n := v.Embeddings.Class.Shape(); len(n) != 1 || n[0] != c.Width {
			return fmt.Errorf("clipvision: class_embedding %v is not (%d)", n, c.Width)
		}
	}
	side := int(math.Round(math.Sqrt(float64(patches))))
	if side*side != patches || side == 0 {
		return fmt.Errorf("clipvision: %d position embeddings do not make a square grid", pos[0])
	}
	c.ImageSize = side * c.Patch
	if c.Width%c.Heads != 0 {
		return fmt.Errorf("clipvision: width %d is not divisible by %d heads", c.Width, c.Heads)
	}
	if m.Projection != nil {
		ps := m.Projection.Shape()
		if len(ps) != 2 || ps[1] != c.Width {
			return fmt.Errorf("clipvision: visual_projection.weight %v is not (out, %d)", ps, c.Width)
		}
		c.Projection = ps[0]
	}
	switch {
	case c.SigLIP:
		c.Activation, c.Mean, c.Std = "gelu_pytorch_tanh", siglipMean, siglipStd
	case c.Layers >= 31:
		c.Activation = "gelu"
	default:
		c.Activation = "quick_gelu"
	}
	c.Name = knownConfig(c)
	m.Config = c
	return nil
}

// knownConfig names the ComfyUI JSON config the sizes equal, "" for none.
func knownConfig(c Config) string {
	type row struct {
		name                           string
		siglip                         bool
		width, layers, size, patch, pj int
	}
	for _, r := range []row{
		{"vit-l", false, 1024, 24, 224, 14, 768},
		{"vit-l-336", false, 1024, 24, 336, 14, 768},
		{"vit-h", false, 1280, 32, 224, 14, 1024},
		{"vit-g", false, 1664, 48, 224, 14, 1280},
		{"siglip-384", true, 1152, 27, 384, 14, 0},
		{"siglip-512", true, 1152, 27, 512, 16, 0},
	} {
		if r.siglip == c.SigLIP && r.width == c.Width && r.layers == c.Layers && r.size == c.ImageSize && r.patch == c.Patch && r.pj == c.Projection {
			return r.name
		}
	}
	return ""
}

// hasLayers reports whether keys hold encoder layers under prefix+"vision_model.".
func hasLayers(keys []string, prefix string) bool {
	p := prefix + "vision_model.encoder.layers.0."
	for _, k := range keys {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

// layerNormEps is the eps of every LayerNorm of the towers (ComfyUI builds SigLIP's
// with 1e-5 too).
const layerNormEps = 1e-5

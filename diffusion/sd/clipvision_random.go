package sd

import (
	"fmt"
	"io"
	"math"

	"github.com/forgeflow/forgeflow/weights"
)

// RandomCLIPVision sizes a CLIP vision tower for random-weight files (tests and
// measurements): transformers' CLIPVisionModelWithProjection layout, or OpenCLIP's
// visual tower as unCLIP checkpoints embed it.
type RandomCLIPVision struct {
	Width, Layers, Intermediate int
	Patch, ImageSize            int
	// Projection is visual_projection's output width, 0 for none (SigLIP).
	Projection int
	// SigLIP leaves out the class token and pre-norm and gives the patch convolution a
	// bias.
	SigLIP bool
}

// ViTHRandomCLIPVision is OpenCLIP ViT-H/14's vision tower (clip_vision_config_h.json).
func ViTHRandomCLIPVision() RandomCLIPVision {
	return RandomCLIPVision{Width: 1280, Layers: 32, Intermediate: 5120, Patch: 14, ImageSize: 224, Projection: 1024}
}

func (v RandomCLIPVision) positions() int {
	n := (v.ImageSize / v.Patch) * (v.ImageSize / v.Patch)
	if !v.SigLIP {
		n++
	}
	return n
}

// clipVision adds a transformers-layout tower under p ("" for a standalone file).
func (ts *randomTensors) clipVision(p string, v RandomCLIPVision) {
	e := p + "vision_model.embeddings."
	if !v.SigLIP {
		ts.add(e+"class_embedding", 0.5, 0, v.Width)
		ts.norm(p+"vision_model.pre_layrnorm", v.Width)
	}
	ts.add(e+"patch_embedding.weight", 1/float64(v.Patch), 0, v.Width, 3, v.Patch, v.Patch)
	if v.SigLIP {
		ts.add(e+"patch_embedding.bias", 0.05, 0, v.Width)
	}
	ts.add(e+"position_embedding.weight", 0.5, 0, v.positions(), v.Width)
	for i := 0; i < v.Layers; i++ {
		l := fmt.Sprintf("%svision_model.encoder.layers.%d.", p, i)
		ts.norm(l+"layer_norm1", v.Width)
		for _, n := range []string{"q_proj", "k_proj", "v_proj", "out_proj"} {
			ts.linear(l+"self_attn."+n, v.Width, v.Width, true)
		}
		ts.norm(l+"layer_norm2", v.Width)
		ts.linear(l+"mlp.fc1", v.Intermediate, v.Width, true)
		ts.linear(l+"mlp.fc2", v.Width, v.Intermediate, true)
	}
	ts.norm(p+"vision_model.post_layernorm", v.Width)
	if v.Projection > 0 {
		ts.linear(p+"visual_projection", v.Projection, v.Width, false)
	}
}

// openCLIPVision adds an OpenCLIP visual tower under p (e.g. "embedder.model.visual.").
func (ts *randomTensors) openCLIPVision(p string, v RandomCLIPVision) {
	ts.add(p+"class_embedding", 0.5, 0, v.Width)
	ts.add(p+"conv1.weight", 1/float64(v.Patch), 0, v.Width, 3, v.Patch, v.Patch)
	ts.add(p+"positional_embedding", 0.5, 0, v.positions(), v.Width)
	ts.norm(p+"ln_pre", v.Width)
	for i := 0; i < v.Layers; i++ {
		l := fmt.Sprintf("%stransformer.resblocks.%d.", p, i)
		ts.norm(l+"ln_1", v.Width)
		ts.add(l+"attn.in_proj_weight", 1/math.Sqrt(float64(v.Width)), 0, 3*v.Width, v.Width)
		ts.add(l+"attn.in_proj_bias", 0.05, 0, 3*v.Width)
		ts.linear(l+"attn.out_proj", v.Width, v.Width, true)
		ts.norm(l+"ln_2", v.Width)
		ts.linear(l+"mlp.c_fc", v.Intermediate, v.Width, true)
		ts.linear(l+"mlp.c_proj", v.Width, v.Intermediate, true)
	}
	ts.norm(p+"ln_post", v.Width)
	if v.Projection > 0 {
		ts.add(p+"proj", 1/float64(v.Width), 0, v.Width, v.Projection)
	}
}

// WriteRandomCLIPVision writes a standalone CLIP vision file: transformers layout, or
// with openCLIP OpenCLIP's under "visual." (the two layouts CLIPVisionLoader reads).
func WriteRandomCLIPVision(w io.Writer, v RandomCLIPVision, openCLIP bool, seed uint64, dtype weights.DType) error {
	if v.Width <= 0 || v.Layers <= 0 || v.Patch <= 0 || v.ImageSize%v.Patch != 0 {
		return fmt.Errorf("sd: random CLIP vision tower %+v is not a valid size", v)
	}
	var ts randomTensors
	if openCLIP {
		if v.SigLIP {
			return fmt.Errorf("sd: SigLIP has no OpenCLIP layout")
		}
		ts.openCLIPVision("visual.", v)
	} else {
		ts.clipVision("", v)
	}
	return WriteRandomTensors(w, ts, seed, dtype)
}

package sd

import (
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/detect"
)

// Random-weight style models and the tiny models of the vision and patch tests (the
// reference fixtures in testdata were made by ComfyUI from exactly these files).

// RandomStyleModel sizes a style model: the T2I-Adapter style adapter (Width > 0) or,
// with Redux set, Flux Redux's encoder.
type RandomStyleModel struct {
	Redux bool
	// Adapter: the vision width, transformer layers, style tokens and text context.
	Width, Layers, Tokens, Context int
	// Redux: the vision (SigLIP) width, hidden width (3× Out in the release) and the
	// text width.
	In, Hidden, Out int
}

// WriteRandomStyleModel writes a style model file with StyleModelLoader's key names.
func WriteRandomStyleModel(w io.Writer, s RandomStyleModel, seed uint64, dtype weights.DType) error {
	var ts randomTensors
	if s.Redux {
		if s.In <= 0 || s.Hidden <= 0 || s.Out <= 0 {
			return fmt.Errorf("sd: random Redux %+v is not a valid size", s)
		}
		ts.linear("redux_up", s.Hidden, s.In, true)
		ts.linear("redux_down", s.Out, s.Hidden, true)
		return WriteRandomTensors(w, ts, seed, dtype)
	}
	if s.Width <= 0 || s.Layers <= 0 || s.Tokens <= 0 || s.Context <= 0 {
		return fmt.Errorf("sd: random style adapter %+v is not a valid size", s)
	}
	scale := 1 / math.Sqrt(float64(s.Width))
	ts.add("style_embedding", scale, 0, 1, s.Tokens, s.Width)
	ts.norm("ln_pre", s.Width)
	ts.norm("ln_post", s.Width)
	ts.add("proj", scale, 0, s.Width, s.Context)
	for i := 0; i < s.Layers; i++ {
		p := fmt.Sprintf("transformer_layes.%d.", i)
		ts.add(p+"attn.in_proj_weight", scale, 0, 3*s.Width, s.Width)
		ts.add(p+"attn.in_proj_bias", 0.05, 0, 3*s.Width)
		ts.linear(p+"attn.out_proj", s.Width, s.Width, true)
		ts.norm(p+"ln_1", s.Width)
		ts.norm(p+"ln_2", s.Width)
		ts.linear(p+"mlp.c_fc", 4*s.Width, s.Width, true)
		ts.linear(p+"mlp.c_proj", s.Width, 4*s.Width, true)
	}
	return WriteRandomTensors(w, ts, seed, dtype)
}

// WriteRandomUNet writes a UNet alone, its keys under prefix ("model.diffusion_model."
// or "" as UNETLoader files have them).
func WriteRandomUNet(w io.Writer, u RandomUNet, prefix string, seed uint64, dtype weights.DType) error {
	if u.ModelChannels <= 0 || len(u.Mult) == 0 || len(u.Depth) != len(u.Mult) {
		return fmt.Errorf("sd: random UNet %+v is not a valid size", u)
	}
	var ts randomTensors
	ts.unet(prefix, u)
	return WriteRandomTensors(w, ts, seed, dtype)
}

// The tiny models of the vision and patch tests.
var (
	// TinyPatchUNet is SD1.5's layout with three levels (32, 64, 128 channels, attention
	// on each, a 32-wide context): FreeU's model_channels·4 and ·2 output blocks exist
	// and the middle block attends over H/4·W/4 tokens. Written float32, seed 61.
	TinyPatchUNet = RandomUNet{ModelChannels: 32, Mult: []int{1, 2, 4}, ResBlocks: 1, Depth: []int{1, 1, 1}, MidDepth: 1, Context: 32}
	// TinyCLIPVisionL is a ViT-L-like tower (quick_gelu): width 64, 3 layers, patch 4
	// on 32² images, 48-wide projection.
	TinyCLIPVisionL = RandomCLIPVision{Width: 64, Layers: 3, Intermediate: 128, Patch: 4, ImageSize: 32, Projection: 48}
	// TinySigLIP is a SigLIP-like tower: width 64, 3 layers, patch 4 on 24² images.
	TinySigLIP = RandomCLIPVision{Width: 64, Layers: 3, Intermediate: 96, Patch: 4, ImageSize: 24, SigLIP: true}
	// TinyStyleAdapter takes TinyCLIPVisionL's hidden states to 8 tokens of
	// TinyPatchUNet's context width.
	TinyStyleAdapter = RandomStyleModel{Width: 64, Layers: 2, Tokens: 8, Context: 32}
	// TinyRedux takes TinySigLIP's hidden states to 48-wide tokens (hidden 3×48 as in
	// ReduxImageEncoder).
	TinyRedux = RandomStyleModel{Redux: true, In: 64, Hidden: 144, Out: 48}
)

// TinyUnCLIPSpec is the unCLIP tests' checkpoint: the tiny SD2 layout (v-prediction)
// with a 64-wide label vector and a 2-layer, 32-wide OpenCLIP vision tower (patch 8 on
// 32² images, 32-wide image embeddings), float32, seed 81.
func TinyUnCLIPSpec() RandomSpec {
	s := TinyRandomSpec(detect.FamilySD2)
	s.UNet.ADM = 64
	s.VPrediction = true
	s.UnCLIPVision = &RandomCLIPVision{Width: 32, Layers: 2, Intermediate: 64, Patch: 8, ImageSize: 32, Projection: 32}
	s.DType, s.Seed = weights.F32, 81
	return s
}

// TinyGLIGENSpec is the GLIGEN tests' SD1 checkpoint: the tiny SD1 layout with a
// 64-channel UNet, so that a GLIGEN for its 64-wide CLIP (64-wide heads, as
// load_gligen splits them for text widths other than 768) fits every transformer;
// float32.
func TinyGLIGENSpec() RandomSpec {
	s := TinyRandomSpec(detect.FamilySD1)
	s.UNet.ModelChannels = 64
	s.DType = weights.F32
	return s
}

// WriteRandomGLIGEN writes a GLIGEN file for the UNet u with GLIGENLoader's key names:
// a gated self-attention fuser in every transformer block of u (keys without a model
// prefix, as the released files have them) and a position net for keyDim-wide text
// embeddings (768 makes the fusers' attention 8 heads, as for SD1.x).
func WriteRandomGLIGEN(w io.Writer, u RandomUNet, keyDim int, seed uint64, dtype weights.DType) error {
	if keyDim <= 0 {
		return fmt.Errorf("sd: random GLIGEN key width %d", keyDim)
	}
	var un, ts randomTensors
	un.unet("", u)
	for _, t := range un {
		p, ok := strings.CutSuffix(t.Name, "attn1.to_q.weight")
		if !ok {
			continue
		}
		ch := t.Shape[0]
		f := p + "fuser."
		ts.linear(f+"linear", ch, keyDim, true)
		ts.linear(f+"attn.to_q", ch, ch, false)
		ts.linear(f+"attn.to_k", ch, ch, false)
		ts.linear(f+"attn.to_v", ch, ch, false)
		ts.linear(f+"attn.to_out.0", ch, ch, true)
		ts.linear(f+"ff.net.0.proj", 8*ch, ch, true)
		ts.linear(f+"ff.net.2", ch, 4*ch, true)
		ts.norm(f+"norm1", ch)
		ts.norm(f+"norm2", ch)
		// Trained gates are open: tanh(alpha) well away from 0.
		ts.add(f+"alpha_attn", 0.3, 0.6)
		ts.add(f+"alpha_dense", 0.3, 0.4)
	}
	if len(ts) == 0 {
		return fmt.Errorf("sd: random GLIGEN: the UNet %+v has no transformer blocks", u)
	}
	const pos = 64 // fourier features of a box
	ts.linear("position_net.linears.0", 512, keyDim+pos, true)
	ts.linear("position_net.linears.2", 512, 512, true)
	ts.linear("position_net.linears.4", keyDim, 512, true)
	ts.add("position_net.null_positive_feature", 0.1, 0, keyDim)
	ts.add("position_net.null_position_feature", 0.1, 0, pos)
	return WriteRandomTensors(w, ts, seed, dtype)
}

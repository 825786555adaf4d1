package mmdit

import (
	"fmt"
	"math"
	"slices"
	"strconv"
)

// Random-weight models with the real key layout, at any size: full-size ones to measure
// speed without a download, tiny ones for tests. diffusion/sd writes them (alone or in
// an all-in-one checkpoint with text encoders and VAE).

// RandomSpec sizes an MMDiT.
type RandomSpec struct {
	// Depth sets the hidden size (64·Depth) and the head count (Depth).
	Depth int
	// Blocks is the number of joint blocks (0: Depth).
	Blocks     int
	InChannels int // 16 for SD3
	PatchSize  int // 2
	// ADMInChannels is the pooled vector's width (2048; 0: no y_embedder).
	ADMInChannels int
	// ContextInDim is the text tokens' width (4096; 0: no context embedder).
	ContextInDim int
	// PosEmbedMaxSize is M of the M×M position table (192 for SD3 medium; 0: none).
	PosEmbedMaxSize int
	// QKNorm adds RMS norms of q and k (SD3.5).
	QKNorm bool
	// XBlockSelfAttn lists the blocks whose x-block has a second attention (SD3.5
	// medium: 0–12).
	XBlockSelfAttn []int
}

// SD3MediumSpec is SD3 medium's architecture (2.0 B parameters).
func SD3MediumSpec() RandomSpec {
	return RandomSpec{Depth: 24, InChannels: 16, PatchSize: 2, ADMInChannels: 2048, ContextInDim: 4096, PosEmbedMaxSize: 192}
}

// SD35MediumSpec is SD3.5 medium's: SD3 medium with q/k norms and dual attention in
// the first 13 x-blocks.
func SD35MediumSpec() RandomSpec {
	s := SD3MediumSpec()
	s.PosEmbedMaxSize = 384
	s.QKNorm = true
	for i := 0; i <= 12; i++ {
		s.XBlockSelfAttn = append(s.XBlockSelfAttn, i)
	}
	return s
}

// SD35LargeSpec is SD3.5 large's (8.1 B parameters).
func SD35LargeSpec() RandomSpec {
	return RandomSpec{Depth: 38, InChannels: 16, PatchSize: 2, ADMInChannels: 2048, ContextInDim: 4096, PosEmbedMaxSize: 192, QKNorm: true}
}

// RandomTensor is one tensor of a random model: Offset + Scale·N(0, 1) per value.
type RandomTensor struct {
	Name          string
	Shape         []int
	Scale, Offset float64
}

// Tensors lists the model's tensors under prefix, named as ComfyUI's state dict.
func (s RandomSpec) Tensors(prefix string) ([]RandomTensor, error) {
	if s.Depth <= 0 || s.InChannels <= 0 || s.PatchSize <= 0 {
		return nil, fmt.Errorf("mmdit: random spec needs a depth, input channels and a patch size: %+v", s)
	}
	blocks := s.Blocks
	if blocks == 0 {
		blocks = s.Depth
	}
	h := 64 * s.Depth
	p := s.PatchSize
	var ts []RandomTensor
	add := func(name string, scale, offset float64, shape ...int) {
		ts = append(ts, RandomTensor{Name: prefix + name, Shape: shape, Scale: scale, Offset: offset})
	}
	linear := func(name string, out, in int, bias bool) {
		add(name+".weight", 1/math.Sqrt(float64(in)), 0, out, in)
		if bias {
			add(name+".bias", 0.02, 0, out)
		}
	}
	add("x_embedder.proj.weight", 1/math.Sqrt(float64(s.InChannels*p*p)), 0, h, s.InChannels, p, p)
	add("x_embedder.proj.bias", 0.02, 0, h)
	if s.PosEmbedMaxSize > 0 {
		add("pos_embed", 0.5, 0, 1, s.PosEmbedMaxSize*s.PosEmbedMaxSize, h)
	}
	linear("t_embedder.mlp.0", h, 256, true)
	linear("t_embedder.mlp.2", h, h, true)
	if s.ADMInChannels > 0 {
		linear("y_embedder.mlp.0", h, s.ADMInChannels, true)
		linear("y_embedder.mlp.2", h, h, true)
	}
	if s.ContextInDim > 0 {
		linear("context_embedder", h, s.ContextInDim, true)
	}
	attn := func(name string, proj bool) {
		linear(name+".qkv", 3*h, h, true)
		if proj {
			linear(name+".proj", h, h, true)
		}
		if s.QKNorm {
			add(name+".ln_q.weight", 0.1, 1, 64)
			add(name+".ln_k.weight", 0.1, 1, 64)
		}
	}
	for i := 0; i < blocks; i++ {
		for _, part := range []string{"context_block", "x_block"} {
			b := "joint_blocks." + strconv.Itoa(i) + "." + part
			preOnly := part == "context_block" && i == blocks-1
			dual := part == "x_block" && slices.Contains(s.XBlockSelfAttn, i)
			mods := 6
			switch {
			case preOnly:
				mods = 2
			case dual:
				mods = 9
			}
			attn(b+".attn", !preOnly)
			if dual {
				attn(b+".attn2", true)
			}
			if !preOnly {
				linear(b+".mlp.fc1", 4*h, h, true)
				linear(b+".mlp.fc2", h, 4*h, true)
			}
			linear(b+".adaLN_modulation.1", mods*h, h, true)
		}
	}
	linear("final_layer.adaLN_modulation.1", 2*h, h, true)
	linear("final_layer.linear", p*p*s.InChannels, h, true)
	return ts, nil
}

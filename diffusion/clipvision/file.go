package clipvision

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// File is a tower loaded from a file it aliases; Close unmaps it.
type File struct {
	*Model
	file *tensorfile.File
}

// Close releases the file mapping; the model must no longer be used.
func (f *File) Close() error { return f.file.Close() }

// LoadFile loads a CLIP vision file as comfy/clip_vision.py load does: keys in
// transformers layout at the top level, or an OpenCLIP visual tower under "visual.".
// The file stays mapped.
func LoadFile(rt *gpu.Runtime, path string) (*File, error) {
	f, err := tensorfile.Open(path, tensorfile.Safetensors, tensorfile.Torch)
	if err != nil {
		return nil, fmt.Errorf("clipvision: %w", err)
	}
	src := statedict.NewFileSource(rt, f)
	prefix := ""
	if src.Has("visual.transformer.resblocks.0.attn.in_proj_weight") {
		prefix = "visual."
	}
	m, err := LoadSource(rt, src, prefix)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return &File{Model: m, file: f}, nil
}

// LoadSource loads the tower under prefix of a file source: OpenCLIP's layout
// (prefix+"transformer.resblocks.…", as unCLIP checkpoints hold it under
// "embedder.model.visual.") is served under transformers names by aliases
// (comfy/clip_vision.py convert_to_transformers, utils.transformers_convert), else the
// keys are transformers' under prefix. Weights are served as ComfyUI holds a CLIP
// vision model on every device: float16 (text_encoder_dtype), except the pre- and
// post-layer norms and the projection, which it builds in float32.
func LoadSource(rt *gpu.Runtime, src *statedict.FileSource, prefix string) (*Model, error) {
	if src.Has(prefix + "transformer.resblocks.0.attn.in_proj_weight") {
		var err error
		if prefix, err = aliasOpenCLIP(src, prefix); err != nil {
			return nil, err
		}
	} else if !hasLayers(src.Keys(), prefix) {
		return nil, fmt.Errorf("clipvision: no CLIP vision model (no %svision_model.encoder.layers.* or %stransformer.resblocks.* tensors)", prefix, prefix)
	}
	return Load(rt, f16Source{src, rt, prefix}, prefix)
}

// aliasOpenCLIP serves an OpenCLIP visual tower under prefix in transformers layout
// under prefix+"hf." and returns that prefix.
func aliasOpenCLIP(src *statedict.FileSource, prefix string) (string, error) {
	hf := prefix + "hf."
	alias := func(to, from string) {
		if src.Has(from) {
			src.Alias(hf+to, statedict.Derived{Stored: from})
		}
	}
	alias("vision_model.embeddings.class_embedding", prefix+"class_embedding")
	alias("vision_model.embeddings.patch_embedding.weight", prefix+"conv1.weight")
	alias("vision_model.embeddings.position_embedding.weight", prefix+"positional_embedding")
	for _, n := range []string{"weight", "bias"} {
		alias("vision_model.post_layernorm."+n, prefix+"ln_post."+n)
		alias("vision_model.pre_layrnorm."+n, prefix+"ln_pre."+n)
	}
	if src.Has(prefix + "proj") {
		src.Alias(hf+"visual_projection.weight", statedict.Derived{Stored: prefix + "proj", Transpose: true})
	}
	for i := 0; ; i++ {
		from := prefix + "transformer.resblocks." + strconv.Itoa(i) + "."
		if !src.Has(from + "attn.in_proj_weight") {
			break
		}
		to := "vision_model.encoder.layers." + strconv.Itoa(i) + "."
		for _, n := range [][2]string{
			{"layer_norm1.", "ln_1."}, {"layer_norm2.", "ln_2."},
			{"self_attn.out_proj.", "attn.out_proj."},
			{"mlp.fc1.", "mlp.c_fc."}, {"mlp.fc2.", "mlp.c_proj."},
		} {
			alias(to+n[0]+"weight", from+n[1]+"weight")
			alias(to+n[0]+"bias", from+n[1]+"bias")
		}
		info, _ := src.File().Info(from + "attn.in_proj_weight")
		if len(info.Shape) != 2 || info.Shape[0]%3 != 0 {
			return "", fmt.Errorf("clipvision: %sattn.in_proj_weight has shape %v, want (3·width, width)", from, info.Shape)
		}
		w := int(info.Shape[0] / 3)
		for j, qkv := range []string{"q_proj", "k_proj", "v_proj"} {
			src.Alias(hf+to+"self_attn."+qkv+".weight", statedict.Derived{Stored: from + "attn.in_proj_weight", From: j * w, N: w})
			if src.Has(from + "attn.in_proj_bias") {
				src.Alias(hf+to+"self_attn."+qkv+".bias", statedict.Derived{Stored: from + "attn.in_proj_bias", From: j * w, N: w})
			}
		}
	}
	return hf, nil
}

// f16Source serves F32 and BF16 tensors rounded to F16 (nearest even), except those
// ComfyUI's CLIPVision creates without a dtype (pre_layrnorm, post_layernorm,
// visual_projection: float32), so that the outputs match ComfyUI's for float32 files.
type f16Source struct {
	statedict.Source
	rt     *gpu.Runtime
	prefix string
}

// Tensor implements statedict.Source.
func (s f16Source) Tensor(key string) (*gpu.Tensor, error) {
	t, err := s.Source.Tensor(key)
	if err != nil || (t.DType() != gpu.F32 && t.DType() != gpu.BF16) {
		return t, err
	}
	rel := strings.TrimPrefix(key, s.prefix)
	if strings.HasPrefix(rel, "vision_model.pre_layrnorm.") || strings.HasPrefix(rel, "vision_model.post_layernorm.") ||
		rel == "visual_projection.weight" {
		return t, nil
	}
	h, err := gpu.Cast(s.rt, t, gpu.F16)
	t.Release()
	if err != nil {
		return nil, fmt.Errorf("clipvision: %s: %w", key, err)
	}
	return h, nil
}

// Bytes is the size of the tensors the file maps (what a memory budget counts).
func (f *File) Bytes() int64 {
	var n int64
	for _, in := range f.file.Tensors() {
		n += in.Size
	}
	return n
}

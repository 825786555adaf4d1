package flux

import (
	"fmt"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// markerKey is the tensor whose name locates a Flux transformer in a file
// (comfy/model_detection.py looks for the same key).
const markerKey = "double_blocks.0.img_attn.norm.key_norm.scale"

// LoadFile loads the Flux transformer of a file: a diffusion-model safetensors file
// (bare keys, bf16/fp16/fp8 or f32), a single-file checkpoint (keys under
// "model.diffusion_model."), a ComfyUI-GGUF file (bare keys, GGUF block types) or a
// PyTorch checkpoint, opened by weights/tensorfile. The file stays memory-mapped and
// the weights alias it until Close.
func LoadFile(rt *gpu.Runtime, path string, opts Options) (*Model, error) {
	f, err := tensorfile.Open(path)
	if err != nil {
		return nil, fmt.Errorf("flux: %w", err)
	}
	src := statedict.NewFileSource(rt, f)
	prefix, ok := findPrefix(src.Keys())
	if !ok {
		f.Close()
		return nil, fmt.Errorf("flux: %s: no Flux transformer (no %s tensor)", path, markerKey)
	}
	m, err := Load(rt, src, prefix, opts)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	m.file = f
	return m, nil
}

// findPrefix returns the part of the marker key's name before "double_blocks.", the
// shortest one when several models share the file.
func findPrefix(keys []string) (string, bool) {
	best, found := "", false
	for _, k := range keys {
		if p, ok := strings.CutSuffix(k, markerKey); ok && (p == "" || strings.HasSuffix(p, ".")) {
			if !found || len(p) < len(best) {
				best, found = p, true
			}
		}
	}
	return best, found
}

// gpuDType maps a stored dtype name (safetensors or GGUF spelling) to the runtime's.
func gpuDType(name string) (gpu.DType, bool) {
	for d := gpu.F32; d.Valid(); d++ {
		if d.String() == name {
			return d, true
		}
	}
	return 0, false
}

// castSource wraps src so that every float tensor but those keep reports is stored as
// UNETLoader's weight_dtype asks; "" and "default" return src unchanged.
func castSource(rt *gpu.Runtime, src statedict.Source, weightDType string, keep func(key string) bool) (statedict.Source, error) {
	var d gpu.DType
	switch weightDType {
	case "", "default":
		return src, nil
	case "fp8_e4m3fn", "fp8_e4m3fn_fast":
		d = gpu.F8E4M3FN
	case "fp8_e5m2":
		d = gpu.F8E5M2
	default:
		return nil, fmt.Errorf("flux: weight dtype %q is not one of default, fp8_e4m3fn, fp8_e4m3fn_fast, fp8_e5m2", weightDType)
	}
	return &castingSource{Source: src, rt: rt, dtype: d, keep: keep}, nil
}

// castingSource converts float tensors to one dtype as they are bound.
type castingSource struct {
	statedict.Source
	rt    *gpu.Runtime
	dtype gpu.DType
	keep  func(key string) bool
}

func (s *castingSource) Tensor(key string) (*gpu.Tensor, error) {
	t, err := s.Source.Tensor(key)
	if err != nil || !t.DType().IsFloat() || t.DType() == s.dtype || s.keep(key) {
		return t, err
	}
	c, err := gpu.Cast(s.rt, t, s.dtype)
	t.Release()
	return c, err
}

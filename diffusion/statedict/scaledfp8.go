package statedict

import (
	"fmt"
	"slices"
	"strings"

	"github.com/forgeflow/forgeflow/gpu"
)

// Scaled-fp8 files (ComfyUI's "fp8 scaled" checkpoints, comfy/ops.py scaled_fp8_ops)
// mark themselves with a "scaled_fp8" tensor whose dtype names the float8 type and
// store each linear layer's weight as float8 with a one-element float32 "scale_weight"
// (and "scale_input", which only ComfyUI's fp8 matrix products on GPUs read). ComfyUI
// builds every linear layer of such a model in the float8 type, so a linear layer's
// weight and bias stored wider are rounded to it on load, and a layer without a
// scale_weight has a scale of 1; other layers (norms, convolutions, embedding tables)
// keep the model's type. ScaledFP8 and NewScaledFP8Source give a network's loader the
// same tensors; the network multiplies each product by its layer's scale.

// ScaledFP8Marker is the key, after a model's prefix, that marks a scaled-fp8 file.
const ScaledFP8Marker = "scaled_fp8"

// ScaledFP8Key reports whether key is one a scaled-fp8 file adds (the marker, a
// scale_weight or a scale_input), whatever the prefix: a weight_dtype conversion must
// leave them as stored, as ComfyUI does.
func ScaledFP8Key(key string) bool {
	return key == ScaledFP8Marker || strings.HasSuffix(key, "."+ScaledFP8Marker) ||
		strings.HasSuffix(key, ".scale_weight") || strings.HasSuffix(key, ".scale_input")
}

// ScaledFP8 reports whether src holds a scaled-fp8 model under prefix and its float8
// type (the marker's dtype; a float32 marker means e4m3fn, as in ComfyUI). Scales
// without the marker are an error: ComfyUI would build plain layers and ignore them.
func ScaledFP8(src Source, prefix string) (gpu.DType, bool, error) {
	if !slices.Contains(src.Keys(), prefix+ScaledFP8Marker) {
		for _, k := range src.Keys() {
			if strings.HasPrefix(k, prefix) && strings.HasSuffix(k, ".scale_weight") {
				return 0, false, fmt.Errorf("statedict: %s without a %s%s marker: not a scaled-fp8 file ComfyUI would scale", k, prefix, ScaledFP8Marker)
			}
		}
		return 0, false, nil
	}
	t, err := src.Tensor(prefix + ScaledFP8Marker)
	if err != nil {
		return 0, false, fmt.Errorf("statedict: %s%s: %w", prefix, ScaledFP8Marker, err)
	}
	defer t.Release()
	switch d := t.DType(); d {
	case gpu.F8E4M3FN, gpu.F8E5M2:
		return d, true, nil
	case gpu.F32:
		return gpu.F8E4M3FN, true, nil
	default:
		return 0, false, fmt.Errorf("statedict: %s%s is %s, not a float8 type (or float32 for e4m3fn)", prefix, ScaledFP8Marker, d)
	}
}

// NewScaledFP8Source serves src as a scaled-fp8 model of float8 type d is built: the
// weight and bias of each linear layer (linear reports whether a parameter key belongs
// to one) stored in d, converted from a wider stored dtype as PyTorch copies into a
// float8 parameter (GGUF blocks are refused: no such file exists); every scale_weight
// and scale_input as an F32 scalar, checked to hold one value.
func NewScaledFP8Source(rt *gpu.Runtime, src Source, d gpu.DType, linear func(key string) bool) Source {
	return &scaledFP8Source{Source: src, rt: rt, dtype: d, linear: linear}
}

type scaledFP8Source struct {
	Source
	rt     *gpu.Runtime
	dtype  gpu.DType
	linear func(key string) bool
}

// Tensor implements Source.
func (s *scaledFP8Source) Tensor(key string) (*gpu.Tensor, error) {
	t, err := s.Source.Tensor(key)
	if err != nil {
		return nil, err
	}
	to := s.dtype
	switch {
	case strings.HasSuffix(key, ".scale_weight") || strings.HasSuffix(key, ".scale_input"):
		if t.Numel() != 1 {
			shape := t.Shape()
			t.Release()
			return nil, fmt.Errorf("statedict: %s has shape %v, want one value", key, shape)
		}
		to = gpu.F32
	case !s.linear(key):
		return t, nil
	}
	if t.DType() == to {
		return t, nil
	}
	if !t.DType().IsFloat() {
		d := t.DType()
		t.Release()
		return nil, fmt.Errorf("statedict: %s: a %s tensor in a scaled-fp8 model", key, d)
	}
	c, err := gpu.Cast(s.rt, t, to)
	t.Release()
	if err != nil {
		return nil, fmt.Errorf("statedict: %s: %w", key, err)
	}
	return c, nil
}

package controlnet

import (
	"fmt"
	"sort"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
)

// modelWeights serves the tensors of a model's UNet layers under their keys inside the
// UNet ("input_blocks.1.0.in_layers.2.weight"), as ComfyUI's diffusion_model.state_dict()
// gives them to a control-lora or a diff ControlNet, and the run-time LoRA patches of
// its layers by weight key.
type modelWeights struct {
	rt      *gpu.Runtime
	keys    []string
	tensors map[string]*gpu.Tensor
	patches map[string][]nn.Patch
}

// weightsOf reads the layers of m's UNet. With patched, they are the layers m samples
// with (its LoRA stack merged in or carried as run-time patches): ComfyUI's
// ControlLora.pre_run copies the weights after the model was patched for sampling.
// Without, they are the UNet as loaded: a diff ControlNet adds the model's state dict
// when DiffControlNetLoader runs, before any LoRA is applied.
func weightsOf(m *sd.Model, patched bool) (*modelWeights, error) {
	if !patched {
		m = m.WithoutLoRA()
	}
	if m.UNet == nil {
		return nil, fmt.Errorf("the model %s is not an SD UNet model", m.Name)
	}
	root, ok := m.UNet.Prefix()
	if !ok {
		return nil, fmt.Errorf("the model %s was not loaded from a checkpoint file", m.Name)
	}
	w := &modelWeights{rt: m.Runtime, tensors: map[string]*gpu.Tensor{}, patches: map[string][]nn.Patch{}}
	add := func(key string, t *gpu.Tensor) {
		if t != nil {
			w.tensors[key] = t
			w.keys = append(w.keys, key)
		}
	}
	err := nn.Layers(m.UNet, func(l nn.Layer) error {
		p, ok := l.Prefix()
		rel, under := strings.CutPrefix(p, root)
		if !ok || !under {
			return nil
		}
		switch l := l.(type) {
		case *nn.Linear:
			add(rel+"weight", l.Weight)
			add(rel+"bias", l.Bias)
			add(rel+"scale_weight", l.ScaleWeight)
			if len(l.Patches) > 0 {
				w.patches[rel+"weight"] = l.Patches
			}
		case *nn.Conv:
			add(rel+"weight", l.Weight)
			add(rel+"bias", l.Bias)
			if len(l.Patches) > 0 {
				w.patches[rel+"weight"] = l.Patches
			}
		case *nn.Norm:
			add(rel+"weight", l.Weight)
			add(rel+"bias", l.Bias)
		case *nn.RMSNorm:
			add(rel+"weight", l.Weight)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(w.keys)
	return w, nil
}

func (w *modelWeights) Keys() []string { return w.keys }

// Tensor returns a view of the model's tensor, which the caller may release without
// touching the model's own.
func (w *modelWeights) Tensor(key string) (*gpu.Tensor, error) {
	t, ok := w.tensors[key]
	if !ok {
		return nil, fmt.Errorf("controlnet: the model has no tensor %q", key)
	}
	return gpu.Reshape(w.rt, t, t.Shape()...)
}

// carryPatches gives every layer of the trunk whose weight came from the model (not
// replaced by a full tensor of the control file: keep reports those) the model layer's
// run-time patches, so that the trunk computes with the weights the UNet samples with.
func (w *modelWeights) carryPatches(trunk any, fromModel func(key string) bool) error {
	if len(w.patches) == 0 {
		return nil
	}
	return nn.Layers(trunk, func(l nn.Layer) error {
		p, ok := l.Prefix()
		if !ok || !fromModel(p+"weight") {
			return nil
		}
		ps := w.patches[p+"weight"]
		if ps == nil {
			return nil
		}
		switch l := l.(type) {
		case *nn.Linear:
			l.Patches = ps
		case *nn.Conv:
			l.Patches = ps
		}
		return nil
	})
}

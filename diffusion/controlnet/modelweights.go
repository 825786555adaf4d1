package controlnet

import (
	"fmt"
	"sort"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/diffusion/unet"
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

// weightsOf reads the layers m's UNet samples with: its LoRA stack merged in or kept as
// run-time patches. ComfyUI reads them after patching the model in both cases:
// ControlLora.pre_run, and a diff ControlNet's loader, which loads the model
// (load_models_gpu applies its patches) before it adds model_state_dict().
func weightsOf(m *sd.Model) (*modelWeights, error) {
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

// folded serves the same tensors with each layer's run-time patches added into its
// weight (float32): what ComfyUI's model_state_dict() holds once the model is patched,
// for a diff ControlNet, which adds it to its own weights rounded to their dtype.
func (w *modelWeights) folded() statedict.Source { return foldedWeights{w} }

type foldedWeights struct{ *modelWeights }

func (f foldedWeights) Tensor(key string) (*gpu.Tensor, error) {
	t, err := f.modelWeights.Tensor(key)
	ps := f.patches[key]
	if err != nil || len(ps) == 0 {
		return t, err
	}
	defer t.Release()
	acc, err := toF32(f.rt, t)
	if err != nil {
		return nil, fmt.Errorf("controlnet: %s: %w", key, err)
	}
	for _, p := range ps {
		d, err := lowRankProduct(f.rt, p.Up, p.Down, acc.Shape())
		if err != nil {
			acc.Release()
			return nil, fmt.Errorf("controlnet: LoRA patch of %s: %w", key, err)
		}
		sum, err := gpu.Add(f.rt, acc, d)
		acc.Release()
		d.Release()
		if err != nil {
			return nil, err
		}
		acc = sum
	}
	return acc, nil
}

// carryPatches gives every layer of a ControlNet trunk whose weight came from the model
// (fromModel, by the key inside the UNet) the model layer's run-time patches, so that
// the trunk computes with the weights the UNet samples with.
func (w *modelWeights) carryPatches(trunk *unet.Model, fromModel func(key string) bool) error {
	if len(w.patches) == 0 {
		return nil
	}
	root, _ := trunk.Prefix()
	return nn.Layers(trunk, func(l nn.Layer) error {
		p, ok := l.Prefix()
		rel, under := strings.CutPrefix(p, root)
		if !ok || !under || !fromModel(rel+"weight") {
			return nil
		}
		ps := w.patches[rel+"weight"]
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

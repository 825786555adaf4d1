package controlnet

import (
	"fmt"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
)

// controlLoRA is a control-lora file (comfy/controlnet.py ControlLora): a ControlNet
// stored as the difference to the model it is used with. At each sampling run the
// network is built on that model's UNet: its embeddings, input blocks and middle block,
// with the file's full tensors (".weight", ".bias": the hint encoder, zero convs,
// norms) replacing the model's and each "up"/"down" pair adding up·down to the weight
// of its layer (ControlLoraOps).
type controlLoRA struct {
	src statedict.Source
}

// isTrunkKey reports whether a UNet key is one ComfyUI's set_attr_param copies into
// the ControlNet (the parts the two networks share).
func isTrunkKey(k string) bool {
	for _, p := range []string{"time_embed.", "label_emb.", "input_blocks.", "middle_block."} {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

// build makes the ControlNet for model m (ControlLora.pre_run): m's UNet attention
// layout, the weights m samples with (LoRAs included) overlaid with the file's.
func (c *controlLoRA) build(m *sd.Model) (*Model, error) {
	base, err := weightsOf(m)
	if err != nil {
		return nil, fmt.Errorf("controlnet: control-lora: %w", err)
	}
	ov := &loraOverlay{rt: m.Runtime, base: base, lora: c.src, own: map[string]bool{}}
	seen := map[string]bool{}
	for _, k := range base.Keys() {
		if isTrunkKey(k) && !seen[k] {
			ov.keys = append(ov.keys, k)
			seen[k] = true
		}
	}
	for _, k := range c.src.Keys() {
		if strings.Contains(k, "__") || k == "lora_controlnet" {
			continue
		}
		ov.own[k] = true
		if (strings.HasSuffix(k, ".weight") || strings.HasSuffix(k, ".bias")) && !seen[k] {
			ov.keys = append(ov.keys, k)
			seen[k] = true
		}
	}
	cm, err := LoadModel(m.Runtime, ov, "", m.UNet.Heads, false)
	if err != nil {
		return nil, fmt.Errorf("controlnet: control-lora on %s: %w", m.Name, err)
	}
	// A layer the file gives in full drops the model's weight and its LoRA with it.
	if err := base.carryPatches(cm.Trunk, func(k string) bool { return !ov.own[k] }); err != nil {
		return nil, fmt.Errorf("controlnet: control-lora on %s: %w", m.Name, err)
	}
	return cm, nil
}

// loraOverlay serves the control-lora network's tensors: the file's where it has them,
// else the model's, plus up·down for layers with a low-rank pair.
type loraOverlay struct {
	rt         *gpu.Runtime
	base, lora statedict.Source
	own        map[string]bool
	keys       []string
}

func (o *loraOverlay) Keys() []string { return o.keys }

func (o *loraOverlay) Tensor(key string) (*gpu.Tensor, error) {
	var w *gpu.Tensor
	var err error
	if o.own[key] {
		w, err = o.lora.Tensor(key)
	} else {
		w, err = o.base.Tensor(key)
	}
	if err != nil {
		return nil, err
	}
	layer, ok := strings.CutSuffix(key, ".weight")
	if !ok || !o.own[layer+".up"] || !o.own[layer+".down"] {
		return w, nil
	}
	defer w.Release()
	delta, err := o.lowRank(layer, w.Shape())
	if err != nil {
		return nil, err
	}
	defer delta.Release()
	wf, err := toF32(o.rt, w)
	if err != nil {
		return nil, err
	}
	defer wf.Release()
	return gpu.Add(o.rt, wf, delta)
}

// lowRank is the file's up·down for layer, shaped as the weight.
func (o *loraOverlay) lowRank(layer string, shape []int) (*gpu.Tensor, error) {
	up, err := o.lora.Tensor(layer + ".up")
	if err != nil {
		return nil, err
	}
	defer up.Release()
	down, err := o.lora.Tensor(layer + ".down")
	if err != nil {
		return nil, err
	}
	defer down.Release()
	d, err := lowRankProduct(o.rt, up, down, shape)
	if err != nil {
		return nil, fmt.Errorf("controlnet: control-lora %s: %w", layer, err)
	}
	return d, nil
}

// lowRankProduct is up.flatten(1) @ down.flatten(1) in float32, shaped as a weight of
// the given shape.
func lowRankProduct(rt *gpu.Runtime, up, down *gpu.Tensor, shape []int) (*gpu.Tensor, error) {
	flat := func(t *gpu.Tensor) (*gpu.Tensor, error) {
		f, err := toF32(rt, t)
		if err != nil {
			return nil, err
		}
		rest := 1
		for _, d := range f.Shape()[1:] {
			rest *= d
		}
		return then(f, func(x *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Reshape(rt, x, x.Dim(0), rest) })
	}
	u, err := flat(up)
	if err != nil {
		return nil, err
	}
	defer u.Release()
	d, err := flat(down)
	if err != nil {
		return nil, err
	}
	defer d.Release()
	n := 1
	for _, x := range shape {
		n *= x
	}
	if u.Dim(1) != d.Dim(0) || u.Dim(0)*d.Dim(1) != n {
		return nil, fmt.Errorf("up %v · down %v does not make a %v weight", up.Shape(), down.Shape(), shape)
	}
	p, err := gpu.MatMul(rt, u, d)
	if err != nil {
		return nil, err
	}
	return then(p, func(x *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Reshape(rt, x, shape...) })
}

// toF32 returns t as a contiguous float32 tensor (a new reference). A matrix of GGUF
// blocks (a quantized UNet's linear weight) is dequantized by gathering all its rows.
func toF32(rt *gpu.Runtime, t *gpu.Tensor) (*gpu.Tensor, error) {
	switch {
	case t.DType() == gpu.F32:
		return gpu.Contiguous(rt, t)
	case t.DType().IsFloat():
		return gpu.Cast(rt, t, gpu.F32)
	case t.Rank() == 2:
		rows := make([]int, t.Dim(0))
		for i := range rows {
			rows[i] = i
		}
		return gpu.Embedding(rt, t, rows)
	}
	return nil, fmt.Errorf("a %s weight cannot be read as float32", t)
}

// Interface guards.
var (
	_ statedict.Source = (*loraOverlay)(nil)
	_ statedict.Source = (*diffSource)(nil)
)

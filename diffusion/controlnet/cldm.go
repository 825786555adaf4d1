package controlnet

import (
	"context"
	"fmt"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
)

// Model is comfy/cldm/cldm.py ControlNet: a trunk with the UNet's embeddings, input
// blocks and middle block, a hint encoder that turns the control image into a feature
// map added after the first input block, and a 1×1 "zero" conv on every input block's
// output and on the middle block's. Names follow the checkpoint keys.
type Model struct {
	Trunk *unet.Model
	// Hint is input_hint_block: eight 3×3 convs with SiLU between them; the third, fifth
	// and seventh have stride 2, so the hint is 8× the latent's size.
	Hint struct {
		C0  nn.Conv `sd:"0"`
		C2  nn.Conv `sd:"2"`
		C4  nn.Conv `sd:"4"`
		C6  nn.Conv `sd:"6"`
		C8  nn.Conv `sd:"8"`
		C10 nn.Conv `sd:"10"`
		C12 nn.Conv `sd:"12"`
		C14 nn.Conv `sd:"14"`
	} `sd:"input_hint_block"`
	ZeroConvs []struct {
		Conv nn.Conv `sd:"0"`
	} `sd:"zero_convs"`
	MiddleOut nn.Conv `sd:"middle_block_out.0"`
	// Union holds a union / promax ControlNet's control-type parts, nil otherwise.
	Union *Union
}

// HintChannels is the number of channels the hint encoder takes (3 for an RGB hint).
func (m *Model) HintChannels() int { return m.Hint.C0.Weight.Dim(1) }

// ModelChannels is the trunk's base width.
func (m *Model) ModelChannels() int { return m.Trunk.ModelChannels }

// LoadModel binds a ControlNet from the cldm-layout tensors under prefix ("" or
// "control_model."). heads is the attention layout; the zero value takes ComfyUI's
// (comfy/model_detection.py via controlnet_config): 8 heads for an SD1.5-shaped trunk
// (320 channels, 768-wide context, conv projections), else 64 channels per head.
// union binds the control-type parts (task_embedding, transformer_layes,
// spatial_ch_projs, control_add_embedding) when the source holds them.
func LoadModel(rt *gpu.Runtime, src statedict.Source, prefix string, heads unet.Heads, union bool) (*Model, error) {
	if heads.Count <= 0 && heads.Dim <= 0 {
		heads = defaultHeads(src, prefix)
	}
	tr, err := unet.LoadTrunk(rt, src, prefix, heads)
	if err != nil {
		return nil, fmt.Errorf("controlnet: %w", err)
	}
	m := &Model{Trunk: tr}
	if _, err := statedict.Bind(rt, src, prefix, m); err != nil {
		return nil, fmt.Errorf("controlnet: %w", err)
	}
	if len(m.ZeroConvs) != len(tr.Input) {
		return nil, fmt.Errorf("controlnet: %d zero convs for %d input blocks", len(m.ZeroConvs), len(tr.Input))
	}
	if out := m.Hint.C14.Weight.Dim(0); out != tr.ModelChannels {
		return nil, fmt.Errorf("controlnet: the hint encoder gives %d channels, the trunk takes %d", out, tr.ModelChannels)
	}
	if union && has(src, prefix+"task_embedding") {
		if m.Union, err = loadUnion(rt, src, prefix); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// defaultHeads is the head layout ComfyUI's model detection gives a ControlNet:
// supported_models.SD15 (8 heads) when the trunk matches its unet_config, else the
// 64-channel heads of every other family and of supported_models_base.BASE.
func defaultHeads(src statedict.Source, prefix string) unet.Heads {
	mc, ctxDim, linear := 0, 0, false
	if s := shapeOf(src, prefix+"time_embed.0.weight"); len(s) == 2 {
		mc = s[1]
	}
	for _, k := range src.Keys() {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok || !(strings.HasPrefix(rest, "input_blocks.") || strings.HasPrefix(rest, "middle_block.")) {
			continue
		}
		if strings.HasSuffix(rest, ".attn2.to_k.weight") && ctxDim == 0 {
			if s := shapeOf(src, k); len(s) == 2 {
				ctxDim = s[1]
			}
		}
		if strings.HasSuffix(rest, ".proj_in.weight") {
			if s := shapeOf(src, k); len(s) == 2 {
				linear = true
			}
		}
	}
	if mc == 320 && ctxDim == 768 && !linear && !has(src, prefix+"label_emb.0.0.weight") {
		return unet.Heads{Count: 8}
	}
	return unet.Heads{Dim: 64}
}

// shapeOf returns a tensor's shape, nil when absent.
func shapeOf(src statedict.Source, key string) []int {
	if !has(src, key) {
		return nil
	}
	t, err := src.Tensor(key)
	if err != nil {
		return nil
	}
	defer t.Release()
	return t.Shape()
}

func has(src statedict.Source, key string) bool {
	for _, k := range src.Keys() {
		if k == key {
			return true
		}
	}
	return false
}

// guidedHint runs input_hint_block on a hint (B, C, 8H, 8W): (B, model channels, H, W).
func (m *Model) guidedHint(rt *gpu.Runtime, hint *gpu.Tensor) (*gpu.Tensor, error) {
	convs := []*nn.Conv{&m.Hint.C0, &m.Hint.C2, &m.Hint.C4, &m.Hint.C6, &m.Hint.C8, &m.Hint.C10, &m.Hint.C12, &m.Hint.C14}
	h, err := gpu.Contiguous(rt, hint)
	if err != nil {
		return nil, err
	}
	for i, c := range convs {
		stride := 1
		if i == 2 || i == 4 || i == 6 {
			stride = 2
		}
		if h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return c.Same(rt, t, stride) }); err != nil {
			return nil, fmt.Errorf("controlnet: input_hint_block.%d: %w", 2*i, err)
		}
		if i == len(convs)-1 {
			break
		}
		if h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.SiLU(rt, t) }); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// forward is ControlNet.forward after the hint encoder: the trunk with guided (the
// batch's hint features) added after the first input block and embAdd (or nil) to the
// timestep embedding, then the zero convs. The result is ComfyUI's dict: "output" one
// residual per input block in block order, "middle" one.
func (m *Model) forward(ctx context.Context, rt *gpu.Runtime, in unet.Inputs, guided, embAdd *gpu.Tensor) (*residuals, error) {
	tr, err := m.Trunk.Encode(ctx, rt, in, embAdd, guided)
	if err != nil {
		return nil, fmt.Errorf("controlnet: %w", err)
	}
	defer tr.Release()
	out := &residuals{}
	for i, b := range tr.Blocks {
		z, err := m.ZeroConvs[i].Conv.Same(rt, b, 1)
		if err != nil {
			out.release()
			return nil, fmt.Errorf("controlnet: zero_convs.%d: %w", i, err)
		}
		out.output = append(out.output, z)
	}
	mid, err := m.MiddleOut.Same(rt, tr.Middle, 1)
	if err != nil {
		out.release()
		return nil, fmt.Errorf("controlnet: middle_block_out: %w", err)
	}
	out.middle = []*gpu.Tensor{mid}
	return out, nil
}

// residuals is ComfyUI's control dict: lists of residuals (nil entries allowed) in the
// order the control model returns them; the UNet pops each list from its end.
type residuals struct {
	input, middle, output []*gpu.Tensor
}

func (r *residuals) release() {
	if r == nil {
		return
	}
	release(r.input...)
	release(r.middle...)
	release(r.output...)
}

// toControl hands the lists to the UNet, indexed by block: input block i takes the
// i-th entry from the end of "input", output block j the j-th from the end of
// "output", the middle block the last entry of "middle".
func (r *residuals) toControl() *unet.Control {
	rev := func(l []*gpu.Tensor) []*gpu.Tensor {
		out := make([]*gpu.Tensor, len(l))
		for i := range l {
			out[i] = l[len(l)-1-i]
		}
		return out
	}
	c := &unet.Control{Input: rev(r.input), Output: rev(r.output)}
	if len(r.middle) > 0 {
		c.Middle = r.middle[len(r.middle)-1]
		release(r.middle[:len(r.middle)-1]...)
	}
	return c
}

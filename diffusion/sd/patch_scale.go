package sd

import (
	"errors"
	"fmt"

	"github.com/forgeflow/forgeflow/diffusion/lora"
)

// Weight scaling (comfy_extras/nodes_attention_multiply.py): the attention multiply
// nodes scale parameters of a model or CLIP through the same weight-patch stack as
// LoRAs (lora.ScaleSet), so weights keep their stored dtype, unpatched layers keep
// sharing the loaded tensors and a LoRA stacked before or after composes in ComfyUI's
// order.

// ScaleWeights returns a copy of m in which every parameter key (ComfyUI's state-dict
// name, "diffusion_model.…") is multiplied by factor(key); keys whose factor is 1 keep
// their tensors. A model with nothing to scale is returned as it is. mode is the patch
// mode of a model that has no LoRA yet (lora.Auto merges float weights). A network that
// takes no weight patches (SD3's MMDiT) has no parameter to scale: m is returned, as
// ComfyUI's key match finds none there either.
func (m *Model) ScaleWeights(factor func(key string) float64, mode lora.Mode) (*Model, error) {
	params, _, err := LoRAParams(m, nil)
	if err != nil {
		if ue := (*UnsupportedError)(nil); errors.As(err, &ue) {
			return m, nil
		}
		return nil, err
	}
	set, err := scaleSet(params, factor)
	if err != nil || set == nil {
		return m, err
	}
	out, _, err := m.WithLoRA(set, 1, mode)
	return out, err
}

// ScaleWeights returns a copy of c in which every text-encoder parameter key
// ("clip_l.transformer.text_model.…", "t5xxl.transformer.…") is multiplied by
// factor(key), as Model.ScaleWeights does.
func (c *CLIP) ScaleWeights(factor func(key string) float64, mode lora.Mode) (*CLIP, error) {
	_, params, err := LoRAParams(nil, c)
	if err != nil {
		return nil, err
	}
	set, err := scaleSet(params, factor)
	if err != nil || set == nil {
		return c, err
	}
	res, err := c.WithLoRA(set, 1, mode)
	if err != nil {
		return nil, err
	}
	return res.CLIP, nil
}

// scaleSet is the scale patch set of the parameters whose factor is not 1, nil when
// there is none.
func scaleSet(params []lora.Param, factor func(string) float64) (*lora.Set, error) {
	factors := map[string]float64{}
	for _, p := range params {
		if f := factor(p.Key); f != 1 {
			factors[p.Key] = f
		}
	}
	if len(factors) == 0 {
		return nil, nil
	}
	set, err := lora.ScaleSet(factors)
	if err != nil {
		return nil, fmt.Errorf("sd: %w", err)
	}
	return set, nil
}

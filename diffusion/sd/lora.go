package sd

import (
	"fmt"
	"log/slog"
	"sort"

	"github.com/forgeflow/forgeflow/diffusion/clip"
	"github.com/forgeflow/forgeflow/diffusion/flux"
	"github.com/forgeflow/forgeflow/diffusion/lora"
	"github.com/forgeflow/forgeflow/diffusion/t5"
	"github.com/forgeflow/forgeflow/diffusion/unet"
)

// LoRAOptions configure LoadLoRA.
type LoRAOptions struct {
	// Mode is how patched weights are computed, for a model or text encoder that has no
	// LoRA yet (a stacked LoRA keeps the first one's mode): lora.Auto merges float
	// weights and patches quantized ones at run time.
	Mode   lora.Mode
	Logger *slog.Logger
}

// LoRAKeyMap is the key map of a model and a CLIP (either may be nil): ComfyUI's
// model_lora_keys_unet followed by model_lora_keys_clip.
func LoRAKeyMap(m *Model, c *CLIP) (lora.KeyMap, error) {
	km, _, err := loraKeys(m, c)
	return km, err
}

// LoRAParams lists the parameters of m's UNet and of c's text encoders (either may be
// nil) under ComfyUI's state-dict names ("diffusion_model.…", "clip_l.transformer.…"),
// with their shapes: what LoRA key maps are built from.
func LoRAParams(m *Model, c *CLIP) (model, text []lora.Param, err error) {
	if m != nil {
		switch {
		case m.fluxNet(lora.Auto) != nil:
			model, err = m.fluxNet(lora.Auto).Params()
		default:
			var n *lora.Network[unet.Model]
			if n, err = m.loraNet(lora.Auto); err != nil {
				return nil, nil, err
			}
			model, err = n.Params()
		}
		if err != nil {
			return nil, nil, fmt.Errorf("sd: model %s: %w", m.Name, err)
		}
	}
	if c != nil {
		for _, te := range c.Encoders {
			p, err := te.loraNet(lora.Auto).Params()
			if err != nil {
				return nil, nil, fmt.Errorf("sd: text encoder %s: %w", te.Name, err)
			}
			text = append(text, p...)
		}
		if c.T5 != nil {
			p, err := c.T5.loraNet(lora.Auto).Params()
			if err != nil {
				return nil, nil, fmt.Errorf("sd: T5 text encoder: %w", err)
			}
			text = append(text, p...)
		}
	}
	return model, text, nil
}

// loraKeys returns the key map and the set of parameter keys of m and c that LoRA
// networks patch.
func loraKeys(m *Model, c *CLIP) (lora.KeyMap, map[string]bool, error) {
	mp, tp, err := LoRAParams(m, c)
	if err != nil {
		return nil, nil, err
	}
	km, params := lora.KeyMap{}, map[string]bool{}
	for _, p := range append(mp, tp...) {
		params[p.Key] = true
	}
	switch {
	case m != nil && m.fluxNet(lora.Auto) != nil:
		// As the CLIP embeddings below: the QK norms' scales are in ComfyUI's state dict,
		// and no network patches them.
		km.Add(lora.FluxKeyMap(append(mp, fluxQKNorms(m.fluxNet(lora.Auto).Base)...)))
	case m != nil:
		km.Add(lora.UNetKeyMap(mp))
	}
	if c != nil {
		// ComfyUI's state dict also has the embeddings, the projections and T5's relative
		// attention bias: the text models' tensor fields take their patches; the
		// projections, outside the text models, are reported NOT LOADED.
		for _, te := range c.Encoders {
			e := te.Encoder.Model.Embeddings
			tp = append(tp, lora.Param{Key: lora.CLIPPrefix(te.Name) + "embeddings.token_embedding.weight", Shape: e.Token.Shape()},
				lora.Param{Key: lora.CLIPPrefix(te.Name) + "embeddings.position_embedding.weight", Shape: e.Position.Shape()})
			if pr := te.Encoder.Projection; pr != nil {
				tp = append(tp, lora.Param{Key: "clip_" + te.Name + ".transformer.text_projection.weight", Shape: pr.Shape()})
			}
		}
		if c.T5 != nil {
			m := c.T5.Encoder.Model
			tp = append(tp, lora.Param{Key: lora.T5Prefix + "shared.weight", Shape: m.Shared.Shape()})
			for i, b := range m.Blocks {
				if rb := b.Attn.RelativeBias; rb != nil {
					tp = append(tp, lora.Param{Key: fmt.Sprintf("%sencoder.block.%d.layer.0.SelfAttention.relative_attention_bias.weight", lora.T5Prefix, i), Shape: rb.Shape()})
				}
			}
		}
		km.Add(lora.CLIPKeyMap(tp))
	}
	return km, params, nil
}

// LoadLoRA is LoraLoader's comfy.sd.load_lora_for_models: the file's modules matched
// against the keys of m and c (either may be nil: LoraLoaderModelOnly passes no CLIP),
// then applied to the model at strengthModel and to the text encoders at
// strengthCLIP. m and c are not changed; the results share every weight the LoRA does
// not patch. Patches for weights neither part has are logged ("NOT LOADED"), and so
// are updates whose shape does not fit their weight.
func LoadLoRA(m *Model, c *CLIP, f *lora.File, strengthModel, strengthCLIP float64, opts LoRAOptions) (*Model, *CLIP, error) {
	km, params, err := loraKeys(m, c)
	if err != nil {
		return nil, nil, err
	}
	set, err := f.Resolve(km, opts.Logger)
	if err != nil {
		return nil, nil, err
	}
	warn := func(r *lora.Report) {
		if len(r.Skipped) > 0 && opts.Logger != nil {
			opts.Logger.Warn("lora weights not patched: shape mismatch", "file", f.Name(), "count", len(r.Skipped), "first", r.Skipped[0])
		}
	}
	if m != nil {
		var rep *lora.Report
		if m, rep, err = m.WithLoRA(set, strengthModel, opts.Mode); err != nil {
			return nil, nil, err
		}
		warn(rep)
	}
	if c != nil {
		res, err := c.WithLoRA(set, strengthCLIP, opts.Mode)
		if err != nil {
			return nil, nil, err
		}
		c = res.CLIP
		for _, r := range res.Reports {
			warn(r)
		}
	}
	var missed []string
	for k := range set.Patches {
		if !params[k] {
			missed = append(missed, k)
		}
	}
	if len(missed) > 0 && opts.Logger != nil {
		sort.Strings(missed)
		opts.Logger.Warn("lora patches NOT LOADED", "file", f.Name(), "count", len(missed), "first", firstOf(missed))
	}
	return m, c, nil
}

func firstOf(s []string) []string { return s[:min(len(s), 5)] }

// loraNet is the model's LoRA stack (an empty one on the loaded UNet if none). Models
// whose network is neither an SD UNet nor Flux (SD3's MMDiT) take no LoRA yet.
func (m *Model) loraNet(mode lora.Mode) (*lora.Network[unet.Model], error) {
	if m.loras != nil {
		return m.loras, nil
	}
	if m.UNet == nil {
		return nil, &UnsupportedError{Path: m.Name, What: fmt.Sprintf("LoRAs patch SD1.x, SD2.x and SDXL UNets and Flux; this model's network (%T) takes none yet", m.Net)}
	}
	return lora.NewNetwork(m.UNet, lora.UNetPrefix, mode), nil
}

// fluxNet is the Flux transformer's LoRA stack, nil for a model that runs no Flux.
func (m *Model) fluxNet(mode lora.Mode) *lora.Network[flux.Model] {
	if m.fluxLoras != nil {
		return m.fluxLoras
	}
	if f, ok := m.Net.(FluxNetwork); ok && f.Model != nil {
		return lora.NewNetwork(f.Model, lora.UNetPrefix, mode)
	}
	return nil
}

// fluxQKNorms lists a Flux transformer's QK-norm scales as parameters.
func fluxQKNorms(m *flux.Model) []lora.Param {
	var ps []lora.Param
	add := func(key string, qk *flux.QKNorm) {
		ps = append(ps, lora.Param{Key: lora.UNetPrefix + key + "query_norm.scale", Shape: qk.Query.Shape()},
			lora.Param{Key: lora.UNetPrefix + key + "key_norm.scale", Shape: qk.Key.Shape()})
	}
	for i := range m.DoubleBlocks {
		b := &m.DoubleBlocks[i]
		add(fmt.Sprintf("double_blocks.%d.img_attn.norm.", i), &b.ImgAttn.Norm)
		add(fmt.Sprintf("double_blocks.%d.txt_attn.norm.", i), &b.TxtAttn.Norm)
	}
	for i := range m.SingleBlocks {
		add(fmt.Sprintf("single_blocks.%d.norm.", i), &m.SingleBlocks[i].Norm)
	}
	return ps
}

// WithLoRA returns a copy of m with set applied on top of its LoRAs at strength; m is
// unchanged. Only the layers the set patches are recomputed, from the network as loaded.
func (m *Model) WithLoRA(set *lora.Set, strength float64, mode lora.Mode) (*Model, *lora.Report, error) {
	if fn := m.fluxNet(mode); fn != nil {
		n, rep, err := fn.With(m.Runtime, lora.Entry{Set: set, Strength: strength})
		if err != nil {
			return nil, nil, fmt.Errorf("sd: model %s: %w", m.Name, err)
		}
		c := *m
		c.Net, c.fluxLoras = FluxNetwork{n.Net}, n
		return &c, rep, nil
	}
	base, err := m.loraNet(mode)
	if err != nil {
		return nil, nil, err
	}
	n, rep, err := base.With(m.Runtime, lora.Entry{Set: set, Strength: strength})
	if err != nil {
		return nil, nil, fmt.Errorf("sd: model %s: %w", m.Name, err)
	}
	c := *m
	c.UNet, c.loras = n.Net, n
	return &c, rep, nil
}

// WithoutLoRA returns m as loaded, without any LoRA: the cached base network, not a
// copy.
func (m *Model) WithoutLoRA() *Model {
	c := *m
	switch {
	case m.loras != nil:
		c.UNet, c.loras = m.loras.Base, nil
	case m.fluxLoras != nil:
		c.Net, c.fluxLoras = FluxNetwork{m.fluxLoras.Base}, nil
	default:
		return m
	}
	return &c
}

// FluxLoRANetwork returns the Flux transformer's LoRA network, nil for a model without
// LoRA or without Flux.
func (m *Model) FluxLoRANetwork() *lora.Network[flux.Model] { return m.fluxLoras }

// LoRANetwork returns the UNet's LoRA network (the base UNet, the stack, the patched
// UNet), nil for a model without LoRA.
func (m *Model) LoRANetwork() *lora.Network[unet.Model] { return m.loras }

// LoRANetwork returns the text model's LoRA network, nil without LoRA.
func (te *TextEncoder) LoRANetwork() *lora.Network[clip.TextModel] { return te.loras }

// loraNet is the text model's LoRA stack.
func (te *TextEncoder) loraNet(mode lora.Mode) *lora.Network[clip.TextModel] {
	if te.loras != nil {
		return te.loras
	}
	return lora.NewNetwork(te.Encoder.Model, lora.CLIPPrefix(te.Name), mode)
}

// loraNet is the T5 encoder's LoRA stack, its keys under ComfyUI's "t5xxl.transformer.".
func (te *T5Encoder) loraNet(mode lora.Mode) *lora.Network[t5.Model] {
	if te.loras != nil {
		return te.loras
	}
	return lora.NewNetwork(te.Encoder.Model, lora.T5Prefix, mode)
}

// LoRANetwork returns the T5 encoder's LoRA network, nil without LoRA.
func (te *T5Encoder) LoRANetwork() *lora.Network[t5.Model] { return te.loras }

// CLIPLoRA is the result of CLIP.WithLoRA: the patched CLIP and one report per text
// encoder (the T5's last).
type CLIPLoRA struct {
	CLIP    *CLIP
	Reports []*lora.Report
}

// WithLoRA returns a copy of c whose text encoders have set applied at strength; c is
// unchanged.
func (c *CLIP) WithLoRA(set *lora.Set, strength float64, mode lora.Mode) (*CLIPLoRA, error) {
	cp := *c
	cp.Encoders = make([]*TextEncoder, len(c.Encoders))
	out := &CLIPLoRA{CLIP: &cp}
	for i, te := range c.Encoders {
		n, rep, err := te.loraNet(mode).With(c.Runtime, lora.Entry{Set: set, Strength: strength})
		if err != nil {
			return nil, fmt.Errorf("sd: text encoder %s: %w", te.Name, err)
		}
		enc := *te.Encoder
		enc.Model = n.Net
		t := *te
		t.Encoder, t.loras = &enc, n
		cp.Encoders[i] = &t
		out.Reports = append(out.Reports, rep)
	}
	if c.T5 != nil {
		n, rep, err := c.T5.loraNet(mode).With(c.Runtime, lora.Entry{Set: set, Strength: strength})
		if err != nil {
			return nil, fmt.Errorf("sd: T5 text encoder: %w", err)
		}
		enc := *c.T5.Encoder
		enc.Model = n.Net
		t := *c.T5
		t.Encoder, t.loras = &enc, n
		cp.T5 = &t
		out.Reports = append(out.Reports, rep)
	}
	return out, nil
}

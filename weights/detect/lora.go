package detect

import (
	"strings"
)

// LoRAConfig describes a LoRA (or LyCORIS) file: its key style, adapter types and the
// model it patches.
type LoRAConfig struct {
	// Format is the key naming style:
	//   "kohya"      lora_unet_… / lora_te_… / lora_te1_… (sd-scripts, also Flux)
	//   "diffusers"  unet.… / text_encoder.… / transformer.… (diffusers, PEFT saves)
	//   "peft"       base_model.model.…
	//   "comfyui"    diffusion_model.… / text_encoders.… (ComfyUI's own saves, old Flux)
	//   "bfl"        bare Flux names: double_blocks.… / single_blocks.… (BFL's LoRAs)
	//   "lycoris"    lycoris_… (SimpleTuner)
	//   "onetrainer" lora_transformer_…
	//   "xlabs"      double_blocks.N.processor.qkv_lora1.down.weight (XLabs, USO)
	//   "other"      anything else
	Format string
	// Adapters counts patched modules per adapter type: "lora" (up/down or A/B
	// matrices), "loha" (hada_w*), "lokr" (lokr_w*), "diff" (full weight differences).
	Adapters map[string]int
	// Base is the family the LoRA was trained for when the keys or shapes tell it
	// (FamilySD1, FamilySD2, FamilySDXL, FamilySDXLRefiner, FamilyFluxDev for any Flux
	// LoRA), "" when they do not.
	Base Family
	// Rank is the most common rank of the "lora" modules (0 if none).
	Rank        int
	Modules     int
	UNet        bool // patches the diffusion model
	TextEncoder bool // patches a text encoder
	HasAlpha    bool
	DoRA        bool // carries dora_scale vectors
}

// loraSuffixes maps the key endings of comfy/weight_adapter (lora.py, loha.py,
// lokr.py) and comfy/lora.py load_lora to an adapter type; "" marks side tensors
// (alpha, dora_scale) that belong to a module but are not one.
var loraSuffixes = []struct{ suffix, adapter string }{
	{".lora_linear_layer.up.weight", "lora"}, {".lora_linear_layer.down.weight", "lora"},
	{".lora_B.default.weight", "lora"}, {".lora_A.default.weight", "lora"},
	{".lora_up.weight", "lora"}, {".lora_down.weight", "lora"}, {".lora_mid.weight", "lora"},
	{"_lora.up.weight", "lora"}, {"_lora.down.weight", "lora"},
	{".lora.up.weight", "lora"}, {".lora.down.weight", "lora"},
	{".lora_B.weight", "lora"}, {".lora_A.weight", "lora"},
	{".lora_B.bias", "lora"},
	{".lora_B", "lora"}, {".lora_A", "lora"},
	{".hada_w1_a", "loha"}, {".hada_w1_b", "loha"}, {".hada_w2_a", "loha"}, {".hada_w2_b", "loha"},
	{".hada_t1", "loha"}, {".hada_t2", "loha"},
	{".lokr_w1", "lokr"}, {".lokr_w2", "lokr"}, {".lokr_w1_a", "lokr"}, {".lokr_w1_b", "lokr"},
	{".lokr_w2_a", "lokr"}, {".lokr_w2_b", "lokr"}, {".lokr_t2", "lokr"},
	{".diff", "diff"}, {".diff_b", "diff"}, {".w_norm", "diff"}, {".b_norm", "diff"}, {".set_weight", "diff"},
	{".alpha", ""}, {".dora_scale", ""},
}

// splitLoRAKey returns the module name and adapter type of a LoRA key; ok is false for
// keys that are not LoRA keys.
func splitLoRAKey(k string) (module, adapter string, ok bool) {
	if m, ok := xlabsModule(k); ok {
		return m, "lora", true
	}
	for _, s := range loraSuffixes {
		if strings.HasSuffix(k, s.suffix) {
			return k[:len(k)-len(s.suffix)], s.adapter, true
		}
	}
	return "", "", false
}

// xlabsModule recognises the XLabs / USO Flux LoRA names,
// "double_blocks.0.processor.qkv_lora1.down.weight" (comfy/lora_convert.py
// convert_uso_lora): plain ".up/.down.weight" ends count only after a
// ".processor.<x>_lora<n>" module, so that ordinary "up"/"down" layers are not taken for
// LoRA matrices.
func xlabsModule(k string) (string, bool) {
	for _, suf := range []string{".down.weight", ".up.weight"} {
		mod, found := strings.CutSuffix(k, suf)
		if !found {
			continue
		}
		i := strings.LastIndex(mod, ".processor.")
		if i < 0 {
			return "", false
		}
		last := mod[i+len(".processor."):]
		if strings.Contains(last, "_lora") && !strings.Contains(last, ".") {
			return mod, true
		}
	}
	return "", false
}

// isDown reports whether k is the input-side (rank × in) matrix of a "lora" module.
func isDown(k string) bool {
	if _, ok := xlabsModule(k); ok {
		return strings.HasSuffix(k, ".down.weight")
	}
	for _, s := range []string{".lora_down.weight", ".lora_A.weight", ".lora_A.default.weight", "_lora.down.weight", ".lora.down.weight", ".lora_linear_layer.down.weight", ".lora_A"} {
		if strings.HasSuffix(k, s) {
			return true
		}
	}
	return false
}

// detectLoRA returns the LoRA description, or nil when the tensors are not a LoRA: no
// key ends like an adapter's, or (for weight-difference files) some key belongs to no
// adapter.
func detectLoRA(s *sd) *LoRAConfig {
	c := &LoRAConfig{Adapters: map[string]int{}}
	modules := map[string]string{}
	var order []string
	strong, other := 0, 0
	ranks := map[int]int{}
	for _, k := range s.keys {
		mod, adapter, ok := splitLoRAKey(k)
		if !ok {
			other++
			continue
		}
		switch {
		case strings.HasSuffix(k, ".alpha"):
			c.HasAlpha = true
		case strings.HasSuffix(k, ".dora_scale"):
			c.DoRA = true
		}
		if adapter == "" {
			continue
		}
		if adapter != "diff" {
			strong++
		}
		if _, seen := modules[mod]; !seen {
			order = append(order, mod)
			modules[mod] = adapter
		} else if modules[mod] == "diff" && adapter != "diff" {
			modules[mod] = adapter
		}
		if adapter == "lora" && isDown(k) {
			ranks[s.dim(k, 0)]++
		}
	}
	if strong == 0 && (len(modules) == 0 || other > 0) {
		return nil
	}
	for _, a := range modules {
		c.Adapters[a]++
	}
	c.Modules = len(modules)
	for r, n := range ranks {
		if n > ranks[c.Rank] || n == ranks[c.Rank] && r > c.Rank {
			c.Rank = r
		}
	}
	c.Format = loraFormat(order)
	for _, m := range order {
		te, unet := moduleTarget(m)
		c.TextEncoder = c.TextEncoder || te
		c.UNet = c.UNet || unet
	}
	c.Base = s.loraBase(order)
	return c
}

func loraFormat(modules []string) string {
	counts := map[string]int{}
	for _, m := range modules {
		counts[moduleFormat(m)]++
	}
	best := "other"
	for f, n := range counts {
		if n > counts[best] || n == counts[best] && f < best {
			best = f
		}
	}
	return best
}

func moduleFormat(m string) string {
	switch {
	case strings.HasPrefix(m, "lora_unet_"), strings.HasPrefix(m, "lora_te"), strings.HasPrefix(m, "lora_prior_unet_"):
		return "kohya"
	case strings.HasPrefix(m, "lycoris_"):
		return "lycoris"
	case strings.HasPrefix(m, "lora_transformer_"):
		return "onetrainer"
	case strings.HasPrefix(m, "base_model.model."):
		return "peft"
	case strings.HasPrefix(m, "unet."), strings.HasPrefix(m, "text_encoder."), strings.HasPrefix(m, "text_encoder_2."),
		strings.HasPrefix(m, "transformer."):
		return "diffusers"
	case strings.HasPrefix(m, "diffusion_model."), strings.HasPrefix(m, "model.diffusion_model."), strings.HasPrefix(m, "text_encoders."):
		return "comfyui"
	case strings.Contains(m, ".processor.") && strings.Contains(m, "_lora"):
		return "xlabs"
	case strings.HasPrefix(m, "double_blocks."), strings.HasPrefix(m, "single_blocks."), strings.HasPrefix(m, "img_in"),
		strings.HasPrefix(m, "txt_in"), strings.HasPrefix(m, "final_layer."):
		return "bfl"
	}
	return "other"
}

// moduleTarget tells whether a module patches a text encoder or the diffusion model.
func moduleTarget(m string) (textEncoder, unet bool) {
	switch {
	case strings.HasPrefix(m, "lora_te"), strings.HasPrefix(m, "text_encoder"), strings.HasPrefix(m, "text_encoders."),
		strings.HasPrefix(m, "lycoris_te"):
		return true, false
	}
	return false, true
}

// loraBase guesses the model a LoRA patches: Flux block names; else the context width
// its cross-attention key projection reads (768 SD1, 1024 SD2, 2048 SDXL, 1280 the
// refiner); else the names: two text encoders or SDXL's input_blocks naming → SDXL;
// a single text encoder, or a down block 0 with attention (SDXL has none there) → SD1.
func (s *sd) loraBase(modules []string) Family {
	for _, m := range modules {
		if strings.Contains(m, "double_blocks") || strings.Contains(m, "single_blocks") || strings.Contains(m, "single_transformer_blocks") {
			return FamilyFluxDev
		}
	}
	for _, k := range s.keys {
		if !isDown(k) {
			continue
		}
		mod, _, _ := splitLoRAKey(k)
		if !strings.HasSuffix(mod, "attn2_to_k") && !strings.HasSuffix(mod, "attn2.to_k") {
			continue
		}
		switch s.dim(k, -1) {
		case 768:
			return FamilySD1
		case 1024:
			return FamilySD2
		case 2048:
			return FamilySDXL
		case 1280:
			return FamilySDXLRefiner
		}
	}
	sd1 := false
	for _, m := range modules {
		switch {
		case strings.HasPrefix(m, "lora_te1_"), strings.HasPrefix(m, "lora_te2_"), strings.HasPrefix(m, "text_encoder_2."),
			strings.HasPrefix(m, "lora_unet_input_blocks_"), strings.HasPrefix(m, "lora_unet_output_blocks_"), strings.HasPrefix(m, "lora_unet_middle_block_"):
			return FamilySDXL
		case strings.Contains(m, "down_blocks_0_attentions"), strings.Contains(m, "down_blocks.0.attentions"),
			strings.HasPrefix(m, "lora_te_"), strings.HasPrefix(m, "text_encoder."):
			// One text encoder, or attention at the first level: SD1.x (an SD2.x LoRA
			// has the same names; only the context width above tells it apart).
			sd1 = true
		}
	}
	if sd1 {
		return FamilySD1
	}
	return ""
}

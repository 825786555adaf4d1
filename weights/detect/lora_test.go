package detect

import (
	"fmt"
	"testing"
)

// loraModule adds one LoRA module in the given key style.
func (ts *tensors) loraModule(style, module string, out, in, rank int) {
	switch style {
	case "kohya":
		ts.add(module+".lora_down.weight", rank, in)
		ts.add(module+".lora_up.weight", out, rank)
		ts.add(module + ".alpha")
	case "peft":
		ts.add(module+".lora_A.weight", rank, in)
		ts.add(module+".lora_B.weight", out, rank)
	case "diffusers_old":
		ts.add(module+"_lora.down.weight", rank, in)
		ts.add(module+"_lora.up.weight", out, rank)
	case "loha":
		ts.add(module+".hada_w1_a", out, rank)
		ts.add(module+".hada_w1_b", rank, in)
		ts.add(module+".hada_w2_a", out, rank)
		ts.add(module+".hada_w2_b", rank, in)
		ts.add(module + ".alpha")
	case "lokr":
		ts.add(module+".lokr_w1", 8, 8)
		ts.add(module+".lokr_w2_a", out/8, rank)
		ts.add(module+".lokr_w2_b", rank, in/8)
		ts.add(module + ".alpha")
	case "xlabs":
		ts.add(module+".down.weight", rank, in)
		ts.add(module+".up.weight", out, rank)
	case "dora":
		ts.add(module+".lora_down.weight", rank, in)
		ts.add(module+".lora_up.weight", out, rank)
		ts.add(module+".dora_scale", out, 1)
	default:
		panic(style)
	}
}

func TestLoRAFlavours(t *testing.T) {
	build := func(f func(ts *tensors)) tensors {
		var ts tensors
		f(&ts)
		return ts
	}
	cases := []struct {
		name     string
		ts       tensors
		format   string
		adapters map[string]int
		base     Family
		rank     int
		unet, te bool
		dora     bool
		alpha    bool
		modules  int
	}{
		{"kohya sd1", build(func(ts *tensors) {
			ts.loraModule("kohya", "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k", 320, 768, 16)
			ts.loraModule("kohya", "lora_unet_down_blocks_0_attentions_0_proj_in", 320, 320, 16)
			ts.loraModule("kohya", "lora_te_text_model_encoder_layers_0_self_attn_q_proj", 768, 768, 8)
		}), "kohya", map[string]int{"lora": 3}, FamilySD1, 16, true, true, false, true, 3},
		{"kohya sdxl", build(func(ts *tensors) {
			ts.loraModule("kohya", "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", 640, 640, 32)
			ts.loraModule("kohya", "lora_te1_text_model_encoder_layers_0_mlp_fc1", 3072, 768, 32)
			ts.loraModule("kohya", "lora_te2_text_model_encoder_layers_0_mlp_fc1", 5120, 1280, 32)
		}), "kohya", map[string]int{"lora": 3}, FamilySDXL, 32, true, true, false, true, 3},
		{"diffusers/peft sdxl", build(func(ts *tensors) {
			ts.loraModule("peft", "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k", 640, 2048, 4)
			ts.loraModule("peft", "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v", 640, 2048, 4)
		}), "diffusers", map[string]int{"lora": 2}, FamilySDXL, 4, true, false, false, false, 2},
		{"old diffusers sd2", build(func(ts *tensors) {
			ts.loraModule("diffusers_old", "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k", 320, 1024, 4)
		}), "diffusers", map[string]int{"lora": 1}, FamilySD2, 4, true, false, false, false, 1},
		{"peft base_model", build(func(ts *tensors) {
			ts.loraModule("peft", "base_model.model.double_blocks.0.img_attn.qkv", 9216, 3072, 16)
		}), "peft", map[string]int{"lora": 1}, FamilyFluxDev, 16, true, false, false, false, 1},
		{"lycoris loha", build(func(ts *tensors) {
			ts.loraModule("loha", "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_q", 320, 320, 8)
			ts.loraModule("loha", "lora_te_text_model_encoder_layers_0_self_attn_q_proj", 768, 768, 8)
		}), "kohya", map[string]int{"loha": 2}, FamilySD1, 0, true, true, false, true, 2},
		{"lycoris lokr simpletuner", build(func(ts *tensors) {
			ts.loraModule("lokr", "lycoris_transformer_blocks_0_attn_to_q", 3072, 3072, 8)
			ts.loraModule("lokr", "lycoris_single_transformer_blocks_0_attn_to_q", 3072, 3072, 8)
		}), "lycoris", map[string]int{"lokr": 2}, FamilyFluxDev, 0, true, false, false, true, 2},
		{"dora", build(func(ts *tensors) {
			ts.loraModule("dora", "lora_unet_down_blocks_0_attentions_0_proj_in", 320, 320, 8)
		}), "kohya", map[string]int{"lora": 1}, FamilySD1, 8, true, false, true, false, 1},
		{"flux kohya", build(func(ts *tensors) {
			ts.loraModule("kohya", "lora_unet_double_blocks_0_img_attn_qkv", 9216, 3072, 16)
			ts.loraModule("kohya", "lora_unet_single_blocks_0_linear1", 21504, 3072, 16)
			ts.loraModule("kohya", "lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 768, 768, 16)
		}), "kohya", map[string]int{"lora": 3}, FamilyFluxDev, 16, true, true, false, true, 3},
		{"flux diffusers", build(func(ts *tensors) {
			ts.loraModule("peft", "transformer.transformer_blocks.0.attn.to_q", 3072, 3072, 64)
			ts.loraModule("peft", "transformer.single_transformer_blocks.0.proj_out", 3072, 15360, 64)
		}), "diffusers", map[string]int{"lora": 2}, FamilyFluxDev, 64, true, false, false, false, 2},
		{"flux bfl", build(func(ts *tensors) {
			ts.loraModule("peft", "double_blocks.0.img_attn.qkv", 9216, 3072, 128)
			ts.loraModule("peft", "single_blocks.0.linear1", 21504, 3072, 128)
			ts.add("img_in.lora_A.weight", 128, 128)
			ts.add("img_in.lora_B.weight", 3072, 128)
			ts.add("img_in.lora_B.bias", 3072)
		}), "bfl", map[string]int{"lora": 3}, FamilyFluxDev, 128, true, false, false, false, 3},
		{"flux comfyui", build(func(ts *tensors) {
			ts.loraModule("kohya", "diffusion_model.double_blocks.0.img_attn.qkv", 9216, 3072, 8)
			ts.loraModule("kohya", "diffusion_model.single_blocks.1.linear2", 3072, 15360, 8)
		}), "comfyui", map[string]int{"lora": 2}, FamilyFluxDev, 8, true, false, false, true, 2},
		{"xlabs flux", build(func(ts *tensors) {
			ts.loraModule("xlabs", "double_blocks.0.processor.qkv_lora1", 9216, 3072, 16)
			ts.loraModule("xlabs", "double_blocks.0.processor.proj_lora2", 3072, 3072, 16)
			ts.loraModule("xlabs", "single_blocks.1.processor.qkv_lora", 9216, 3072, 16)
		}), "xlabs", map[string]int{"lora": 3}, FamilyFluxDev, 16, true, false, false, false, 3},
		{"onetrainer flux", build(func(ts *tensors) {
			ts.loraModule("kohya", "lora_transformer_single_transformer_blocks_0_attn_to_k", 3072, 3072, 8)
		}), "onetrainer", map[string]int{"lora": 1}, FamilyFluxDev, 8, true, false, false, true, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := mustDetect(t, tc.ts)
			if m.Kind != KindLoRA || m.Family != FamilyLoRA || m.LoRA == nil {
				t.Fatalf("kind %s family %s", m.Kind, m.Family)
			}
			l := m.LoRA
			got := fmt.Sprint(l.Format, l.Adapters, l.Base, l.Rank, l.UNet, l.TextEncoder, l.DoRA, l.HasAlpha, l.Modules)
			want := fmt.Sprint(tc.format, tc.adapters, tc.base, tc.rank, tc.unet, tc.te, tc.dora, tc.alpha, tc.modules)
			if got != want {
				t.Fatalf("got  %s\nwant %s", got, want)
			}
		})
	}
}

func TestNotALoRA(t *testing.T) {
	// A model whose keys merely end in ".alpha" (an activation parameter), ".up.weight"
	// or ".down.weight" is no LoRA.
	ts := tinyUNet.build()
	ts.add("snake.alpha", 4)
	ts.add("extra.up.weight", 4, 4)
	ts.add("extra.processor.down.weight", 4, 4)
	m := mustDetect(t, ts)
	if m.Kind != KindDiffusionModel {
		t.Fatalf("kind %s", m.Kind)
	}
}

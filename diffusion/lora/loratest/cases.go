package loratest

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/forgeflow/forgeflow/diffusion/flux"
	"github.com/forgeflow/forgeflow/diffusion/lora"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/detect"
)

// Shapes returns the shape of the weight a LoRA module name patches in the model a
// case is built for (the caller resolves it through the model's key map).
type Shapes func(module string) ([]int, error)

// Case is a reference case: LoRA files for a tiny checkpoint of Family
// (sd.TinyRandomSpec, stored as F32), applied one after the other as chained
// LoraLoader nodes. The same cases are applied by ComfyUI in the reference peer
// (tools/refpeer/lora_apply.py) and by the tests, which compare the patched weights.
type Case struct {
	Name   string
	Family detect.Family
	LoRAs  []CaseLoRA
}

// CaseLoRA is one LoRA of a case: how its file is written, and its strengths.
type CaseLoRA struct {
	Seed                        uint64
	Write                       func(f *File, shape Shapes) error
	StrengthModel, StrengthCLIP float64
}

// Build writes the case's LoRA files with shapes from shape.
func (c Case) Build(shape Shapes) ([]*File, error) {
	var fs []*File
	for i, l := range c.LoRAs {
		f := New(l.Seed)
		if err := l.Write(f, shape); err != nil {
			return nil, fmt.Errorf("loratest: case %s, LoRA %d: %w", c.Name, i, err)
		}
		fs = append(fs, f)
	}
	return fs, nil
}

// addLoRA adds an up/down pair sized for module's weight.
func addLoRA(f *File, shape Shapes, module string, s Style, rank int, alpha float64) error {
	w, err := shape(module)
	if err != nil {
		return err
	}
	f.LoRA(module, s, w[0], rank, alpha, w[1:]...)
	return nil
}

// each runs the adders in order and returns the first error.
func each(adders ...func() error) error {
	for _, a := range adders {
		if err := a(); err != nil {
			return err
		}
	}
	return nil
}

// RefCases lists the reference cases: every adapter kind and key style on SD1, the
// SDXL, SDXL refiner and SD2 text-encoder and UNet names, a stack of two LoRAs, and the
// Flux key styles (kohya, diffusers/ai-toolkit q/k/v onto the fused weights, OneTrainer,
// SimpleTuner LyCORIS, ComfyUI's own names).
func RefCases() []Case {
	one := func(name string, fam detect.Family, seed uint64, sm, sc float64, w func(f *File, shape Shapes) error) Case {
		return Case{Name: name, Family: fam, LoRAs: []CaseLoRA{{Seed: seed, Write: w, StrengthModel: sm, StrengthCLIP: sc}}}
	}
	const sd1, sd2, sdxl, refiner = detect.FamilySD1, detect.FamilySD2, detect.FamilySDXL, detect.FamilySDXLRefiner
	return []Case{
		one("sd1_kohya", sd1, 11, 0.8, 0.6, func(f *File, s Shapes) error {
			return each(
				func() error {
					return addLoRA(f, s, "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", Kohya, 4, 2)
				},
				func() error { return addLoRA(f, s, "lora_unet_down_blocks_1_attentions_0_proj_in", Kohya, 4, 4) },
				func() error { return addLoRA(f, s, "lora_unet_up_blocks_0_resnets_1_conv2", Kohya, 2, 1) },
				func() error {
					return addLoRA(f, s, "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_0_proj", Kohya, 4, 0)
				},
				func() error { return addLoRA(f, s, "lora_te_text_model_encoder_layers_1_mlp_fc2", Kohya, 4, 3) },
			)
		}),
		one("sd1_diffusers_peft", sd1, 12, 1.1, 0.9, func(f *File, s Shapes) error {
			return each(
				func() error {
					return addLoRA(f, s, "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k", DiffusersOld, 4, 0)
				},
				func() error {
					return addLoRA(f, s, "unet.up_blocks.1.attentions.0.transformer_blocks.0.attn1.processor.to_out", Diffusers, 2, 0)
				},
				func() error { return addLoRA(f, s, "unet.down_blocks.1.resnets.0.conv1", PEFT, 4, 8) },
				func() error {
					return addLoRA(f, s, "text_encoder.text_model.encoder.layers.0.self_attn.out_proj", PEFT, 2, 4)
				},
				func() error {
					return addLoRA(f, s, "up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor.to_q", Transformers, 2, 0)
				},
			)
		}),
		one("sd1_lycoris", sd1, 13, 0.7, 1, func(f *File, s Shapes) error {
			f.LoConTucker("lycoris_down_blocks_0_resnets_0_conv2", 32, 32, 3, 4, 2)
			f.LoHa("lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_v", 64, 64, 0, 4, 2)
			f.LoHa("lora_unet_up_blocks_0_resnets_0_conv1", 64, 128, 3, 2, 0)
			f.LoKr("lora_te_text_model_encoder_layers_0_mlp_fc1", LoKr{A: 4, B: 8, C: 64, D: 8, Rank2: 4, Alpha: 3})
			// No Tucker core here: ComfyUI 0.3.64 fails on LoKr's (torch.kron of the
			// non-contiguous einsum result; it logs an error and leaves the weight).
			f.LoKr("lora_unet_down_blocks_1_resnets_0_conv1", LoKr{A: 4, B: 2, C: 16, D: 16, Rank1: 2, K: 3, Alpha: 1.5})
			f.LoKr("lora_unet_mid_block_attentions_0_proj_out", LoKr{A: 8, B: 8, C: 8, D: 8, K: 0})
			return nil
		}),
		one("sd1_diff_dora", sd1, 14, 0.5, 1.5, func(f *File, s Shapes) error {
			f.Random("diffusion_model.input_blocks.1.1.transformer_blocks.0.ff.net.2.diff", 0.1, 32, 128)
			f.Random("diffusion_model.input_blocks.1.1.transformer_blocks.0.ff.net.2.diff_b", 0.1, 32)
			f.Random("diffusion_model.input_blocks.1.1.norm.w_norm", 0.1, 32)
			f.Random("diffusion_model.input_blocks.1.1.norm.b_norm", 0.1, 32)
			f.Random("diffusion_model.out.0.set_weight", 1, 32)
			f.Random("text_encoders.clip_l.transformer.text_model.encoder.layers.1.self_attn.q_proj.diff", 0.1, 64, 64)
			if err := addLoRA(f, s, "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_k", Kohya, 4, 2); err != nil {
				return err
			}
			f.Random("lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_k.dora_scale", 1, 64, 1)
			if err := addLoRA(f, s, "lora_te_text_model_encoder_layers_1_self_attn_v_proj", Kohya, 4, 0); err != nil {
				return err
			}
			f.Random("lora_te_text_model_encoder_layers_1_self_attn_v_proj.dora_scale", 1, 1, 64)
			if err := addLoRA(f, s, "lora_unet_down_blocks_0_resnets_0_conv1", Kohya, 2, 1); err != nil {
				return err
			}
			f.Random("lora_unet_down_blocks_0_resnets_0_conv1.dora_scale", 1, 32, 1, 1, 1)
			return nil
		}),
		{Name: "sd1_stack", Family: sd1, LoRAs: []CaseLoRA{
			{Seed: 15, StrengthModel: 0.6, StrengthCLIP: 0.4, Write: func(f *File, s Shapes) error {
				return each(
					func() error {
						return addLoRA(f, s, "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_v", Kohya, 4, 2)
					},
					func() error {
						return addLoRA(f, s, "lora_te_text_model_encoder_layers_0_self_attn_q_proj", Kohya, 2, 0)
					},
				)
			}},
			{Seed: 16, StrengthModel: -0.8, StrengthCLIP: 1.2, Write: func(f *File, s Shapes) error {
				f.LoHa("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_v", 32, 32, 0, 2, 1)
				if err := addLoRA(f, s, "lora_te_text_model_encoder_layers_0_self_attn_q_proj", Kohya, 3, 1); err != nil {
					return err
				}
				f.Random("lora_te_text_model_encoder_layers_0_self_attn_q_proj.dora_scale", 1, 64, 1)
				return nil
			}},
		}},
		one("sdxl_names", sdxl, 21, 0.9, 0.7, func(f *File, s Shapes) error {
			return each(
				func() error {
					return addLoRA(f, s, "lora_unet_input_blocks_3_1_transformer_blocks_0_attn2_to_k", Kohya, 4, 2)
				},
				func() error { return addLoRA(f, s, "lora_unet_output_blocks_1_1_proj_out", Kohya, 4, 0) },
				func() error { return addLoRA(f, s, "lora_unet_up_blocks_0_upsamplers_0_conv", Kohya, 2, 1) },
				func() error { return addLoRA(f, s, "lora_unet_add_embedding_linear_1", Kohya, 2, 0) },
				func() error {
					return addLoRA(f, s, "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.processor.to_q", DiffusersOld, 2, 0)
				},
				func() error {
					return addLoRA(f, s, "lora_te1_text_model_encoder_layers_0_self_attn_q_proj", Kohya, 4, 2)
				},
				func() error { return addLoRA(f, s, "lora_te2_text_model_encoder_layers_2_mlp_fc2", Kohya, 4, 1) },
				func() error {
					return addLoRA(f, s, "text_encoder_2.text_model.encoder.layers.1.self_attn.out_proj", PEFT, 2, 0)
				},
				func() error { return addLoRA(f, s, "text_encoder.text_model.encoder.layers.2.mlp.fc1", PEFT, 2, 0) },
			)
		}),
		one("sdxl_refiner_names", refiner, 31, 1, 0.8, func(f *File, s Shapes) error {
			return each(
				func() error { return addLoRA(f, s, "lora_te_text_model_encoder_layers_1_mlp_fc1", Kohya, 4, 2) },
				func() error {
					return addLoRA(f, s, "lora_prior_te_text_model_encoder_layers_2_self_attn_k_proj", Kohya, 2, 0)
				},
				func() error {
					return addLoRA(f, s, "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_ff_net_2", Kohya, 4, 2)
				},
			)
		}),
		one("flux_names", detect.FamilyFluxDev, 51, 0.9, 0, func(f *File, s Shapes) error {
			if err := each(
				func() error { return addLoRA(f, s, "lora_unet_double_blocks_0_img_attn_qkv", Kohya, 4, 2) },
				func() error { return addLoRA(f, s, "lora_unet_single_blocks_0_linear2", Kohya, 4, 0) },
				func() error { return addLoRA(f, s, "transformer.transformer_blocks.0.attn.to_q", PEFT, 4, 4) },
				func() error { return addLoRA(f, s, "transformer.transformer_blocks.0.attn.add_k_proj", PEFT, 2, 0) },
				func() error { return addLoRA(f, s, "transformer.single_transformer_blocks.0.proj_mlp", PEFT, 4, 2) },
				func() error { return addLoRA(f, s, "transformer.single_transformer_blocks.0.attn.to_v", PEFT, 2, 0) },
				func() error { return addLoRA(f, s, "transformer.norm_out.linear", PEFT, 2, 0) },
				func() error { return addLoRA(f, s, "lora_transformer_transformer_blocks_0_ff_net_0_proj", Kohya, 4, 1) },
				func() error { return addLoRA(f, s, "diffusion_model.double_blocks.0.txt_attn.proj", Kohya, 2, 0) },
			); err != nil {
				return err
			}
			f.LoHa("lycoris_single_transformer_blocks_0_attn_to_k", 256, 256, 0, 2, 1)
			f.Random("diffusion_model.double_blocks.0.img_mod.lin.diff_b", 0.1, 6*256)
			return nil
		}),
		one("sd2_names", sd2, 41, 0.75, 1.25, func(f *File, s Shapes) error {
			return each(
				func() error {
					return addLoRA(f, s, "lora_te_text_model_encoder_layers_0_self_attn_k_proj", Kohya, 4, 2)
				},
				func() error { return addLoRA(f, s, "lora_te1_text_model_encoder_layers_2_mlp_fc2", Kohya, 2, 0) },
				func() error { return addLoRA(f, s, "lora_unet_down_blocks_0_attentions_1_proj_in", Kohya, 4, 4) },
				func() error { return addLoRA(f, s, "lora_unet_up_blocks_3_resnets_2_conv_shortcut", Kohya, 2, 0) },
			)
		}),
	}
}

// Checkpoint is the tiny checkpoint a case's family uses: sd.TinyRandomSpec stored as
// F32, so that the reference (ComfyUI computes patches in float32) and the engine
// start from the same values.
func Checkpoint(fam detect.Family) sd.RandomSpec {
	s := sd.TinyRandomSpec(fam)
	s.DType = weights.F32
	return s
}

// WriteCase writes the case's checkpoint and LoRA files into dir
// (<case>.ckpt.safetensors, <case>.<i>.safetensors) and returns their paths. shape
// comes from the checkpoint as it loads: through sd for the SD families, as a bare
// Flux transformer (flux.TinyRandomSpec with guidance, F32) for FamilyFluxDev.
func WriteCase(rt *gpu.Runtime, c Case, dir string) (ckpt string, loras []string, err error) {
	ckpt = filepath.Join(dir, c.Name+".ckpt.safetensors")
	var km lora.KeyMap
	var params []lora.Param
	if c.Family == detect.FamilyFluxDev {
		if err := writeFile(ckpt, func(w io.Writer) error { return flux.WriteRandomSafetensors(w, flux.TinyRandomSpec(true), gpu.F32) }); err != nil {
			return "", nil, err
		}
		m, err := flux.LoadFile(rt, ckpt, flux.Options{})
		if err != nil {
			return "", nil, err
		}
		defer m.Close()
		if params, err = lora.NewNetwork(m, lora.UNetPrefix, lora.Auto).Params(); err != nil {
			return "", nil, err
		}
		km = lora.FluxKeyMap(params)
	} else {
		if err := writeFile(ckpt, func(w io.Writer) error { return sd.WriteRandomCheckpoint(w, Checkpoint(c.Family)) }); err != nil {
			return "", nil, err
		}
		ck, err := sd.LoadCheckpoint(rt, ckpt, sd.LoadOptions{FP32TextEncoder: true, SkipVAE: true})
		if err != nil {
			return "", nil, err
		}
		defer ck.Close()
		if km, err = sd.LoRAKeyMap(ck.Model, ck.CLIP); err != nil {
			return "", nil, err
		}
		mp, tp, err := sd.LoRAParams(ck.Model, ck.CLIP)
		if err != nil {
			return "", nil, err
		}
		params = append(mp, tp...)
	}
	shapes := map[string][]int{}
	for _, p := range params {
		shapes[p.Key] = p.Shape
	}
	files, err := c.Build(func(module string) ([]int, error) {
		t, ok := km[module]
		if !ok {
			return nil, fmt.Errorf("%s names no weight of a %s model", module, c.Family)
		}
		s := append([]int(nil), shapes[t.Key]...)
		if t.Length > 0 {
			s[0] = t.Length // a module patching rows of a fused weight
		}
		return s, nil
	})
	if err != nil {
		return "", nil, err
	}
	for i, f := range files {
		p := filepath.Join(dir, fmt.Sprintf("%s.%d.safetensors", c.Name, i))
		if err := writeFile(p, f.Write); err != nil {
			return "", nil, err
		}
		loras = append(loras, p)
	}
	return ckpt, loras, nil
}

func writeFile(path string, w func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := w(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

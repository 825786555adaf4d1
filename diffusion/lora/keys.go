package lora

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Target is the model weight a LoRA module patches, in ComfyUI's state-dict naming
// ("diffusion_model.input_blocks.1.1.proj_in.weight", "clip_l.transformer.text_model.
// encoder.layers.0.mlp.fc1.weight"). A module that patches part of a fused weight (a
// diffusers to_q onto Flux's qkv) covers Length rows from Start; Length 0 is the whole
// weight. SwapHalves exchanges the two halves of the update's rows before it is added
// (ComfyUI's swap_scale_shift, for diffusers' norm_out onto Flux's final modulation).
type Target struct {
	Key           string
	Start, Length int
	SwapHalves    bool
}

// KeyMap maps LoRA module names (a LoRA key without its adapter suffix:
// "lora_unet_down_blocks_0_resnets_0_conv1", "unet.mid_block.attentions.0.proj_in") to
// the weights they patch: ComfyUI's key_map of comfy/lora.py model_lora_keys_unet and
// model_lora_keys_clip. Build it from the model's keys with UNetKeyMap, CLIPKeyMap (and
// FluxKeyMap), and join the maps of the parts a loader patches with Add.
type KeyMap map[string]Target

// Add copies every entry of o into m; o's entries win.
func (m KeyMap) Add(o KeyMap) {
	for k, v := range o {
		m[k] = v
	}
}

// Param is one tensor of a model in ComfyUI's naming, with its shape.
type Param struct {
	Key   string
	Shape []int
}

// The ComfyUI state-dict prefixes of the networks a LoRA patches.
const (
	UNetPrefix = "diffusion_model."
	T5Prefix   = "t5xxl.transformer."
)

// CLIPPrefix is the state-dict prefix of the CLIP text model named name ("l", "g",
// "h"): ComfyUI's clip_<name>.transformer.text_model.
func CLIPPrefix(name string) string { return "clip_" + name + ".transformer.text_model." }

// UNetKeyMap is model_lora_keys_unet for an SD1.x/SD2.x/SDXL UNet whose parameters are
// params (keys under "diffusion_model."): every weight under its own name
// ("diffusion_model.x.y", also the bias and other keys as they are) and kohya's
// "lora_unet_x_y"; every weight under its diffusers name (utils.unet_to_diffusers, here
// derived from the blocks the keys show) as "lora_unet_down_blocks_…", SimpleTuner's
// "lycoris_down_blocks_…" and the diffusers attention-processor names
// ("[unet.]down_blocks.….attn1.processor.to_q", "….processor.to_out").
//
// Beyond ComfyUI 0.3.64, which maps diffusers attention layers only under their
// processor names, the plain diffusers/PEFT names ("unet.….attn1.to_q",
// "unet.….attn1.to_out.0") map too: PEFT-trained SD and SDXL LoRAs store them so, and
// ComfyUI drops those modules ("lora key not loaded").
func UNetKeyMap(params []Param) KeyMap {
	m := KeyMap{}
	for _, p := range params {
		rest, ok := strings.CutPrefix(p.Key, UNetPrefix)
		if !ok {
			continue
		}
		if mod, ok := strings.CutSuffix(rest, ".weight"); ok {
			m["lora_unet_"+underscore(mod)] = Target{Key: p.Key}
			m[UNetPrefix+mod] = Target{Key: p.Key}
		} else {
			m[p.Key] = Target{Key: p.Key}
		}
	}
	for diff, ours := range unetToDiffusers(params) {
		// As in ComfyUI, also for weights the model lacks (a resnet without a shortcut,
		// the last level's samplers): modules naming them are then "NOT LOADED".
		t := Target{Key: UNetPrefix + ours + ".weight"}
		m["lora_unet_"+underscore(diff)] = t
		m["lycoris_"+underscore(diff)] = t
		proc := strings.ReplaceAll(diff, ".to_", ".processor.to_")
		if p, ok := strings.CutSuffix(proc, ".to_out.0"); ok {
			proc = p + ".to_out"
		}
		for _, p := range []string{"", "unet."} {
			m[p+proc] = t
			m[p+diff] = t // PEFT names (see above)
		}
	}
	return m
}

func underscore(s string) string { return strings.ReplaceAll(s, ".", "_") }

// unetBlock is what one input/output block of a UNet holds, read from its keys.
type unetBlock struct {
	res   bool
	depth int  // transformer blocks of its attention (0: none)
	down  bool // input block: a stride-2 conv (op)
	up    int  // output block: module index of the upsampler conv, -1 for none
}

// unetToDiffusers re-derives comfy/utils.py unet_to_diffusers from the blocks present in
// params instead of the UNet config: diffusers module name → module name under
// "diffusion_model.". Levels are told apart by the downsamplers (input blocks) and
// upsamplers (output blocks), which is what the config's num_res_blocks and
// channel_mult describe. Like ComfyUI's it names some modules the model lacks (every
// resnet's conv_shortcut, the middle attention, the last levels' samplers, label_emb).
func unetToDiffusers(params []Param) map[string]string {
	in, out := map[int]*unetBlock{}, map[int]*unetBlock{}
	midDepth := 0
	for _, p := range params {
		rest, ok := strings.CutPrefix(p.Key, UNetPrefix)
		if !ok {
			continue
		}
		var blocks map[int]*unetBlock
		switch {
		case strings.HasPrefix(rest, "input_blocks."):
			blocks, rest = in, rest[len("input_blocks."):]
		case strings.HasPrefix(rest, "output_blocks."):
			blocks, rest = out, rest[len("output_blocks."):]
		case strings.HasPrefix(rest, "middle_block.1.transformer_blocks."):
			midDepth = max(midDepth, depthOf(rest[len("middle_block.1.transformer_blocks."):])+1)
			continue
		default:
			continue
		}
		parts := strings.SplitN(rest, ".", 3)
		if len(parts) < 3 {
			continue
		}
		n, err1 := strconv.Atoi(parts[0])
		mod, err2 := strconv.Atoi(parts[1])
		if err1 != nil || err2 != nil {
			continue
		}
		b := blocks[n]
		if b == nil {
			b = &unetBlock{up: -1}
			blocks[n] = b
		}
		switch {
		case mod == 0 && strings.HasPrefix(parts[2], "in_layers."):
			b.res = true
		case mod == 0 && strings.HasPrefix(parts[2], "op."):
			b.down = true
		case mod == 1 && strings.HasPrefix(parts[2], "transformer_blocks."):
			b.depth = max(b.depth, depthOf(parts[2][len("transformer_blocks."):])+1)
		case mod > 0 && strings.HasPrefix(parts[2], "conv."):
			b.up = mod
		}
	}
	if len(in) == 0 {
		return nil // not an SD UNet (ComfyUI maps no diffusers names without num_res_blocks)
	}
	d := map[string]string{}
	addRes := func(from, to string) {
		for _, r := range resnetNames {
			d[from+"."+r[1]] = to + "." + r[0]
		}
	}
	addAttn := func(from, to string, depth int) {
		for _, a := range []string{"proj_in", "proj_out", "norm"} {
			d[from+"."+a] = to + "." + a
		}
		for i := 0; i < depth; i++ {
			for _, t := range transformerNames {
				d[fmt.Sprintf("%s.transformer_blocks.%d.%s", from, i, t)] = fmt.Sprintf("%s.transformer_blocks.%d.%s", to, i, t)
			}
		}
	}
	// Input blocks 1…: resnets (with attention) per level, then a downsampler; the last
	// level's downsampler is mapped to the block after it, which does not exist.
	level, i, next := 0, 0, 1
	for _, n := range sortedBlocks(in) {
		b := in[n]
		to := "input_blocks." + strconv.Itoa(n)
		switch {
		case b.down:
			d[fmt.Sprintf("down_blocks.%d.downsamplers.0.conv", level)] = to + ".0.op"
			level, i = level+1, 0
		case b.res:
			from := fmt.Sprintf("down_blocks.%d", level)
			addRes(fmt.Sprintf("%s.resnets.%d", from, i), to+".0")
			if b.depth > 0 {
				addAttn(fmt.Sprintf("%s.attentions.%d", from, i), to+".1", b.depth)
			}
			i++
		}
		next = n + 1
	}
	if i > 0 {
		d[fmt.Sprintf("down_blocks.%d.downsamplers.0.conv", level)] = fmt.Sprintf("input_blocks.%d.0.op", next)
	}
	addAttn("mid_block.attentions.0", "middle_block.1", midDepth)
	addRes("mid_block.resnets.0", "middle_block.0")
	addRes("mid_block.resnets.1", "middle_block.2")
	// Output blocks: resnets (with attention) per level, the level's last block
	// carrying the upsampler.
	level, i = 0, 0
	var last *unetBlock
	lastN := 0
	for _, n := range sortedBlocks(out) {
		b := out[n]
		to := "output_blocks." + strconv.Itoa(n)
		from := fmt.Sprintf("up_blocks.%d", level)
		if b.res {
			addRes(fmt.Sprintf("%s.resnets.%d", from, i), to+".0")
		}
		if b.depth > 0 {
			addAttn(fmt.Sprintf("%s.attentions.%d", from, i), to+".1", b.depth)
		}
		i++
		if b.up >= 0 {
			d[from+".upsamplers.0.conv"] = fmt.Sprintf("%s.%d.conv", to, b.up)
			level, i = level+1, 0
		}
		last, lastN = b, n
	}
	if i > 0 && last != nil {
		// The last level has no upsampler; ComfyUI maps one where it would sit.
		c := 1
		if last.depth > 0 {
			c = 2
		}
		d[fmt.Sprintf("up_blocks.%d.upsamplers.0.conv", level)] = fmt.Sprintf("output_blocks.%d.%d.conv", lastN, c)
	}
	for _, b := range basicNames {
		d[b[1]] = b[0]
	}
	return d
}

func depthOf(s string) int {
	n, _ := strconv.Atoi(strings.SplitN(s, ".", 2)[0])
	return n
}

func sortedBlocks(m map[int]*unetBlock) []int {
	ns := make([]int, 0, len(m))
	for n := range m {
		ns = append(ns, n)
	}
	sort.Ints(ns)
	return ns
}

// resnetNames, transformerNames and basicNames are comfy/utils.py's UNET_MAP_RESNET,
// TRANSFORMER_BLOCKS and UNET_MAP_BASIC at module level: {ours, diffusers}.
var resnetNames = [][2]string{
	{"in_layers.2", "conv1"}, {"emb_layers.1", "time_emb_proj"}, {"out_layers.3", "conv2"},
	{"skip_connection", "conv_shortcut"}, {"in_layers.0", "norm1"}, {"out_layers.0", "norm2"},
}

var transformerNames = []string{
	"norm1", "norm2", "norm3", "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
	"attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2",
}

var basicNames = [][2]string{
	{"label_emb.0.0", "class_embedding.linear_1"}, {"label_emb.0.2", "class_embedding.linear_2"},
	{"label_emb.0.0", "add_embedding.linear_1"}, {"label_emb.0.2", "add_embedding.linear_2"},
	{"input_blocks.0.0", "conv_in"}, {"out.0", "conv_norm_out"}, {"out.2", "conv_out"},
	{"time_embed.0", "time_embedding.linear_1"}, {"time_embed.2", "time_embedding.linear_2"},
}

// clipLayerNames is comfy/lora.py's LORA_CLIP_MAP: transformers module → kohya name.
var clipLayerNames = [][2]string{
	{"mlp.fc1", "mlp_fc1"}, {"mlp.fc2", "mlp_fc2"}, {"self_attn.k_proj", "self_attn_k_proj"},
	{"self_attn.q_proj", "self_attn_q_proj"}, {"self_attn.v_proj", "self_attn_v_proj"},
	{"self_attn.out_proj", "self_attn_out_proj"},
}

// CLIPKeyMap is model_lora_keys_clip for text encoders whose parameters are params, keys
// under "clip_l.", "clip_g.", "clip_h." and "t5xxl.transformer.": every weight as
// "text_encoders.<key>"; the CLIP layers under kohya's names — lora_te_ (and lora_te1_)
// for CLIP-L or CLIP-H; for CLIP-G lora_te2_ beside a CLIP-L (SDXL) and lora_te_ /
// lora_prior_te_ alone (the refiner) — and diffusers' text_encoder[_2].text_model.…; T5
// layers as lora_teN_ after the CLIPs present (OneTrainer), Flux's also as lora_te2_.
func CLIPKeyMap(params []Param) KeyMap {
	m := KeyMap{}
	has := map[string]bool{}
	for _, p := range params {
		has[p.Key] = true
		if mod, ok := strings.CutSuffix(p.Key, ".weight"); ok {
			m["text_encoders."+mod] = Target{Key: p.Key}
		}
	}
	lPresent, gPresent := false, false
	for b := 0; b < 32; b++ {
		for _, c := range clipLayerNames {
			kohya := fmt.Sprintf("text_model_encoder_layers_%d_%s", b, c[1])
			diff := fmt.Sprintf("text_model.encoder.layers.%d.%s", b, c[0])
			at := func(name string) (Target, bool) {
				k := fmt.Sprintf("%sencoder.layers.%d.%s.weight", CLIPPrefix(name), b, c[0])
				return Target{Key: k}, has[k]
			}
			if t, ok := at("h"); ok {
				m["lora_te_"+kohya], m["lora_te1_"+kohya], m["text_encoder."+diff] = t, t, t
			}
			if t, ok := at("l"); ok {
				m["lora_te_"+kohya], m["lora_te1_"+kohya], m["text_encoder."+diff] = t, t, t
				lPresent = true
			}
			if t, ok := at("g"); ok {
				gPresent = true
				if lPresent {
					m["lora_te2_"+kohya], m["text_encoder_2."+diff] = t, t
				} else {
					m["lora_te_"+kohya], m["text_encoder."+diff], m["lora_prior_te_"+kohya] = t, t, t
				}
			}
		}
	}
	for _, p := range params {
		rest, ok := strings.CutPrefix(p.Key, T5Prefix)
		if !ok {
			continue
		}
		mod, ok := strings.CutSuffix(rest, ".weight")
		if !ok {
			continue
		}
		idx := 1
		if gPresent {
			idx++
		}
		if lPresent {
			idx++
			if idx == 2 {
				m["lora_te2_"+underscore(mod)] = Target{Key: p.Key} // OneTrainer Flux
				idx++
			}
		}
		m[fmt.Sprintf("lora_te%d_%s", idx, underscore(mod))] = Target{Key: p.Key}
	}
	if k := "clip_g.transformer.text_projection.weight"; has[k] {
		m["lora_prior_te_text_projection"], m["lora_te2_text_projection"] = Target{Key: k}, Target{Key: k}
	}
	if k := "clip_l.transformer.text_projection.weight"; has[k] {
		m["lora_te1_text_projection"] = Target{Key: k}
	}
	return m
}

// FluxKeyMap is model_lora_keys_unet for a Flux transformer whose parameters are params
// (keys under "diffusion_model."): every weight under its own name and kohya's
// "lora_unet_x_y" (as UNetKeyMap); every weight under its diffusers name
// (utils.flux_to_diffusers) as "transformer.…", SimpleTuner's "lycoris_…" and
// OneTrainer's "lora_transformer_…", the separate q, k, v (and single blocks' MLP input)
// of diffusers onto rows of the fused qkv and linear1 weights, norm_out onto the final
// modulation with its shift and scale halves swapped; and "….linear1_qkv" (XLabs/USO
// after convert_lora) onto the q, k, v rows of each single block's linear1.
func FluxKeyMap(params []Param) KeyMap {
	m := KeyMap{}
	hidden, double, single := 0, 0, 0
	var linear1 []string
	for _, p := range params {
		rest, ok := strings.CutPrefix(p.Key, UNetPrefix)
		if !ok {
			continue
		}
		if mod, ok := strings.CutSuffix(rest, ".weight"); ok {
			m["lora_unet_"+underscore(mod)] = Target{Key: p.Key}
			m[UNetPrefix+mod] = Target{Key: p.Key}
			if strings.Contains(rest, ".linear1.") {
				linear1 = append(linear1, p.Key)
			}
		} else {
			m[p.Key] = Target{Key: p.Key}
		}
		switch {
		case rest == "img_in.weight" && len(p.Shape) > 0:
			hidden = p.Shape[0]
		case strings.HasPrefix(rest, "double_blocks."):
			double = max(double, depthOf(rest[len("double_blocks."):])+1)
		case strings.HasPrefix(rest, "single_blocks."):
			single = max(single, depthOf(rest[len("single_blocks."):])+1)
		}
	}
	for _, k := range linear1 {
		m[strings.TrimSuffix(k, ".linear1.weight")+".linear1_qkv"] = Target{Key: k, Length: 3 * hidden}
	}
	for diff, t := range fluxToDiffusers(hidden, double, single) {
		name := strings.TrimSuffix(diff, ".weight")
		if name == diff {
			continue // ComfyUI maps the diffusers weights only
		}
		m["transformer."+name] = t
		m["lycoris_"+underscore(name)] = t
		m["lora_transformer_"+underscore(name)] = t
	}
	return m
}

// fluxToDiffusers re-derives comfy/utils.py flux_to_diffusers for hidden width h and
// the block counts: diffusers parameter name → Target under "diffusion_model.".
func fluxToDiffusers(h, double, single int) map[string]Target {
	d := map[string]Target{}
	to := func(key string) Target { return Target{Key: UNetPrefix + key} }
	rows := func(key string, start, n int) Target { return Target{Key: UNetPrefix + key, Start: start, Length: n} }
	for i := 0; i < double; i++ {
		from, dst := fmt.Sprintf("transformer_blocks.%d.", i), fmt.Sprintf("double_blocks.%d.", i)
		for _, end := range []string{"weight", "bias"} {
			for j, n := range []string{"q", "k", "v"} {
				d[from+"attn.to_"+n+"."+end] = rows(dst+"img_attn.qkv."+end, j*h, h)
				d[from+"attn.add_"+n+"_proj."+end] = rows(dst+"txt_attn.qkv."+end, j*h, h)
			}
		}
		for _, b := range [][2]string{
			{"attn.to_out.0.weight", "img_attn.proj.weight"}, {"attn.to_out.0.bias", "img_attn.proj.bias"},
			{"norm1.linear.weight", "img_mod.lin.weight"}, {"norm1.linear.bias", "img_mod.lin.bias"},
			{"norm1_context.linear.weight", "txt_mod.lin.weight"}, {"norm1_context.linear.bias", "txt_mod.lin.bias"},
			{"attn.to_add_out.weight", "txt_attn.proj.weight"}, {"attn.to_add_out.bias", "txt_attn.proj.bias"},
			{"ff.net.0.proj.weight", "img_mlp.0.weight"}, {"ff.net.0.proj.bias", "img_mlp.0.bias"},
			{"ff.net.2.weight", "img_mlp.2.weight"}, {"ff.net.2.bias", "img_mlp.2.bias"},
			{"ff_context.net.0.proj.weight", "txt_mlp.0.weight"}, {"ff_context.net.0.proj.bias", "txt_mlp.0.bias"},
			{"ff_context.net.2.weight", "txt_mlp.2.weight"}, {"ff_context.net.2.bias", "txt_mlp.2.bias"},
			{"attn.norm_q.weight", "img_attn.norm.query_norm.scale"}, {"attn.norm_k.weight", "img_attn.norm.key_norm.scale"},
			{"attn.norm_added_q.weight", "txt_attn.norm.query_norm.scale"}, {"attn.norm_added_k.weight", "txt_attn.norm.key_norm.scale"},
		} {
			d[from+b[0]] = to(dst + b[1])
		}
	}
	for i := 0; i < single; i++ {
		from, dst := fmt.Sprintf("single_transformer_blocks.%d.", i), fmt.Sprintf("single_blocks.%d.", i)
		for _, end := range []string{"weight", "bias"} {
			for j, n := range []string{"q", "k", "v"} {
				d[from+"attn.to_"+n+"."+end] = rows(dst+"linear1."+end, j*h, h)
			}
			d[from+"proj_mlp."+end] = rows(dst+"linear1."+end, 3*h, 4*h)
		}
		for _, b := range [][2]string{
			{"norm.linear.weight", "modulation.lin.weight"}, {"norm.linear.bias", "modulation.lin.bias"},
			{"proj_out.weight", "linear2.weight"}, {"proj_out.bias", "linear2.bias"},
			{"attn.norm_q.weight", "norm.query_norm.scale"}, {"attn.norm_k.weight", "norm.key_norm.scale"},
		} {
			d[from+b[0]] = to(dst + b[1])
		}
	}
	for _, b := range [][2]string{
		{"final_layer.linear", "proj_out"}, {"img_in", "x_embedder"},
		{"time_in.in_layer", "time_text_embed.timestep_embedder.linear_1"}, {"time_in.out_layer", "time_text_embed.timestep_embedder.linear_2"},
		{"txt_in", "context_embedder"},
		{"vector_in.in_layer", "time_text_embed.text_embedder.linear_1"}, {"vector_in.out_layer", "time_text_embed.text_embedder.linear_2"},
		{"guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1"}, {"guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2"},
		{"pos_embed_input", "controlnet_x_embedder"},
	} {
		for _, end := range []string{".weight", ".bias"} {
			d[b[1]+end] = to(b[0] + end)
		}
	}
	for _, end := range []string{".weight", ".bias"} {
		t := to("final_layer.adaLN_modulation.1" + end)
		t.SwapHalves = true
		d["norm_out.linear"+end] = t
	}
	return d
}

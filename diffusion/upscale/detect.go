package upscale

import (
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
)

// Architecture detection as spandrel does it (spandrel/__helpers/main_registry.py, each
// architecture's __init__.py KeyCondition, commit b0c3eb2 of chaiNNer-org/spandrel):
// the architectures are tried in the registry's order and the first whose key
// condition holds is the file's. forgeflow runs three of them; for the others the
// condition is reduced to keys that tell that architecture apart, enough to name it in
// the error.

// arch is one entry of the registry: its name, its key condition and, for the
// architectures forgeflow runs, the loader.
type arch struct {
	name  string
	match func(has func(string) bool) bool
	load  func(rt *gpu.Runtime, sd *stateDict) (*Model, error)
}

// allOf is true when every key is present.
func allOf(keys ...string) func(has func(string) bool) bool {
	return func(has func(string) bool) bool {
		for _, k := range keys {
			if !has(k) {
				return false
			}
		}
		return true
	}
}

// anyOf is true when one of the conditions holds.
func anyOf(conds ...func(has func(string) bool) bool) func(has func(string) bool) bool {
	return func(has func(string) bool) bool {
		for _, c := range conds {
			if c(has) {
				return true
			}
		}
		return false
	}
}

// registry lists spandrel's MAIN_REGISTRY in its order.
var registry = []arch{
	{name: "RealESRGAN Compact", match: allOf("body.0.weight", "body.1.weight"), load: loadCompact},
	{name: "Swift-SRGAN", match: allOf("initial.cnn.depthwise.weight", "final_conv.pointwise.weight")},
	{name: "HAT", match: allOf("relative_position_index_SA", "layers.0.residual_group.blocks.0.conv_block.cab.0.weight")},
	{name: "GRL", match: anyOf(allOf("conv_first.weight", "norm_start.weight", "norm_end.weight"),
		allOf("model.conv_first.weight", "model.norm_start.weight"), allOf("model_g.conv_first.weight", "model_g.norm_start.weight"))},
	{name: "Swin2SR", match: allOf("layers.0.residual_group.blocks.0.norm1.weight", "patch_embed.proj.weight", "conv_first.weight",
		"layers.0.residual_group.blocks.0.attn.relative_position_index")},
	{name: "SwinIR", match: allOf("layers.0.residual_group.blocks.0.norm1.weight", "layers.0.residual_group.blocks.0.attn.relative_position_index")},
	{name: "GFPGAN", match: allOf("toRGB.0.weight", "stylegan_decoder.style_mlp.1.weight")},
	{name: "RestoreFormer", match: allOf("quantize.embedding.weight", "encoder.conv_in.weight", "quant_conv.weight")},
	{name: "LaMa", match: anyOf(allOf("model.model.1.bn_l.running_mean"), allOf("generator.model.1.bn_l.running_mean"))},
	{name: "OmniSR", match: allOf("residual_layer.0.residual_layer.0.layer.0.fn.0.weight", "input.weight", "up.0.weight")},
	{name: "SCUNet", match: allOf("m_head.0.weight", "m_tail.0.weight")},
	{name: "FBCNN", match: allOf("m_head.weight", "qf_pred.0.res.0.weight")},
	{name: "Uformer", match: allOf("input_proj.proj.0.weight", "output_proj.proj.0.weight")},
	{name: "RGT", match: allOf("before_RG.1.weight", "layers.0.blocks.0.gamma")},
	{name: "DAT", match: allOf("before_RG.1.weight", "layers.0.blocks.0.ffn.sg.norm.weight")},
	{name: "CRAFT", match: allOf("conv_first.weight", "layers.0.residual_group.hf_blocks.0.attn.temperature")},
	{name: "KBNet", match: anyOf(allOf("intro.weight", "encoders.0.0.attgamma"), allOf("patch_embed.proj.weight", "latent.0.ffn.qkv.weight", "refinement.0.attn.dwconv.0.weight"))},
	{name: "DITN", match: allOf("sft.weight", "UFONE.0.ITLs.0.attn.temperature")},
	{name: "MMRealSR", match: allOf("am_list.0.fc.0.weight", "de_net.conv_first.0.weight")},
	{name: "SPAN", match: allOf("conv_1.sk.weight", "block_1.c1_r.sk.weight", "block_1.c1_r.eval_conv.weight",
		"block_1.c3_r.eval_conv.weight", "conv_cat.weight", "conv_2.sk.weight", "conv_2.eval_conv.weight", "upsampler.0.weight"), load: loadSPAN},
	{name: "RealCUGAN", match: allOf("unet1.conv1.conv.0.weight", "unet2.conv1.conv.0.weight")},
	{name: "SAFMN", match: allOf("to_feat.weight", "feats.0.safm.mfr.0.weight")},
	{name: "SAFMN BCIE", match: allOf("to_feat.1.weight", "feats.0.layers.0.safm.mfr.0.weight")},
	{name: "DCTLSA", match: allOf("fea_conv.weight", "B1.body.0.transformer_body.0.blocks.0.attn.qkv.weight")},
	{name: "FFTformer", match: allOf("patch_embed.proj.weight", "encoder_level1.0.ffn.fft")},
	{name: "NAFNet", match: allOf("intro.weight", "ending.weight", "middle_blks.0.beta")},
	{name: "ATD", match: allOf("relative_position_index_SA", "layers.0.residual_group.td")},
	{name: "MixDehazeNet", match: allOf("patch_embed.proj.weight", "layer1.blocks.0.conv3_19.weight")},
	{name: "DRUNet", match: allOf("m_head.weight", "m_down1.0.res.0.weight", "m_tail.weight")},
	{name: "DnCNN", match: anyOf(
		allOf("model.0.weight", "model.0.bias", "model.2.weight", "model.2.bias", "model.4.weight", "model.6.weight",
			"model.8.weight", "model.10.weight", "model.12.weight", "model.14.weight"),
		allOf("model.0.weight", "model.0.bias", "model.2.weight", "model.3.running_mean", "model.5.weight", "model.6.running_mean"))},
	{name: "IPT", match: allOf("sub_mean.weight", "add_mean.weight", "head.0.0.weight")},
	{name: "DRCT", match: allOf("layers.0.swin1.norm1.weight", "layers.0.adjust1.weight")},
	{name: "ESRGAN", match: anyOf(
		allOf("model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight"),
		allOf("conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight", "conv_last.weight"),
		allOf("conv_first.weight", "RRDB_trunk.0.RDB1.conv1.weight", "trunk_conv.weight", "conv_last.weight"),
		allOf("model.0.weight", "model.1.sub.0.RDB1.conv1x1.weight")), load: loadESRGAN},
	{name: "PLKSR", match: allOf("feats.0.weight", "feats.1.refine.weight")},
	{name: "RetinexFormer", match: allOf("body.0.estimator.conv1.weight", "body.0.denoiser.embedding.weight")},
	{name: "HVI-CIDNet", match: allOf("HVE_block0.1.weight", "HVE_block1.prelu.weight")},
	{name: "SeemoRe", match: allOf("conv_1.weight", "body.0.local_block.norm_1.weight")},
	{name: "MoSR", match: allOf("gblocks.0.weight", "gblocks.1.norm.weight")},
	{name: "MoESR", match: allOf("in_to_dim.weight", "blocks.0.blocks.0.gamma")},
	{name: "RCAN", match: allOf("tail.1.weight", "body.0.body.0.body.3.conv_du.0.weight")},
	{name: "FDAT", match: allOf("groups.0.blocks.0.attn.bias", "upsampler.MetaUpsample")},
	{name: "AuraSR", match: allOf("mid_attn.layers.0.0.to_out.weight", "final_res_block.block1.proj.weights")},
}

// supportedList names the architectures forgeflow runs, for error messages.
func supportedList() string {
	var names []string
	for _, a := range registry {
		if a.load != nil {
			names = append(names, a.name)
		}
	}
	return strings.Join(names, ", ")
}

// unwrapKeys are the entries spandrel's canonicalize_state_dict looks inside
// (spandrel/__helpers/canonicalize.py), in its order; "state_dict" and a root holding
// a single dict are already unwrapped by weights/torch, as comfy.utils.load_torch_file
// does.
var unwrapKeys = []string{"model_state_dict", "state_dict", "params_ema", "params-ema", "params", "model", "net"}

// detect returns the file's state dict under spandrel's canonical names and the first
// architecture that matches it, or nil. Nested dicts of a torch file arrive flattened
// ("params_ema.conv_first.weight"), which a flat key such as ESRGAN's "model.0.weight"
// cannot be told from; so the keys as stored are tried first, then each unwrapping, and
// in each the common prefixes "module." (ComfyUI's UpscaleModelLoader also strips it)
// and "netG." are removed.
func detect(src *statedict.FileSource) (*stateDict, *arch) {
	stored := src.Keys()
	views := []map[string]string{identity(stored)}
	for _, w := range unwrapKeys {
		if v := stripPrefix(stored, w+"."); v != nil {
			views = append(views, v)
			break
		}
	}
	for _, v := range views {
		for _, p := range []string{"module.", "netG."} {
			if s := stripCommon(v, p); s != nil {
				v = s
			}
		}
		has := func(k string) bool { _, ok := v[k]; return ok }
		for i := range registry {
			if registry[i].match(has) {
				return newStateDict(src, v), &registry[i]
			}
		}
	}
	return nil, nil
}

func identity(keys []string) map[string]string {
	m := make(map[string]string, len(keys))
	for _, k := range keys {
		m[k] = k
	}
	return m
}

// stripPrefix maps the keys under prefix to their rest, or nil when none is.
func stripPrefix(keys []string, prefix string) map[string]string {
	var m map[string]string
	for _, k := range keys {
		if rest, ok := strings.CutPrefix(k, prefix); ok && rest != "" {
			if m == nil {
				m = map[string]string{}
			}
			m[rest] = k
		}
	}
	return m
}

// stripCommon removes prefix from every name when all of them carry it (spandrel's
// remove_common_prefix), or returns nil.
func stripCommon(v map[string]string, prefix string) map[string]string {
	if len(v) == 0 {
		return nil
	}
	m := make(map[string]string, len(v))
	for k, s := range v {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			return nil
		}
		m[rest] = s
	}
	return m
}

package sd

import (
	"regexp"
	"strconv"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// Diffusers-layout VAE files (AutoencoderKL's diffusion_pytorch_model.safetensors) name
// the same tensors differently; ComfyUI converts them on load (comfy/diffusers_convert.py
// convert_vae_state_dict). Here the source serves the original names as aliases, so the
// autoencoder binds either layout without copying. Re-derived mapping, for any number of
// levels n:
//
//	{encoder,decoder}.conv_norm_out        → norm_out
//	encoder.down_blocks.i.resnets.j.       → encoder.down.i.block.j.
//	encoder.down_blocks.i.downsamplers.0.  → encoder.down.i.downsample.
//	decoder.up_blocks.i.resnets.j.         → decoder.up.(n−1−i).block.j.
//	decoder.up_blocks.i.upsamplers.0.      → decoder.up.(n−1−i).upsample.
//	mid_block.resnets.k.                   → mid.block_(k+1).
//	mid_block.attentions.0.{group_norm, query|to_q, key|to_k, value|to_v, proj_attn|to_out.0}
//	                                       → mid.attn_1.{norm, q, k, v, proj_out}, the (C, C)
//	                                         linear weights viewed as (C, C, 1, 1) convolutions
//	conv_shortcut                          → nin_shortcut

var (
	diffDown = regexp.MustCompile(`^encoder\.down_blocks\.(\d+)\.(resnets\.(\d+)|downsamplers\.0)\.`)
	diffUp   = regexp.MustCompile(`^decoder\.up_blocks\.(\d+)\.(resnets\.(\d+)|upsamplers\.0)\.`)
	diffMid  = regexp.MustCompile(`^(encoder|decoder)\.mid_block\.(resnets\.(\d+)|attentions\.0)\.`)
)

var diffAttn = map[string]string{
	"group_norm": "norm", "query": "q", "to_q": "q", "key": "k", "to_k": "k",
	"value": "v", "to_v": "v", "proj_attn": "proj_out", "to_out.0": "proj_out",
}

// isDiffusersVAE reports whether the keys under prefix are a diffusers-layout VAE.
func isDiffusersVAE(f *tensorfile.File, prefix string) bool {
	_, ok := f.Info(prefix + "decoder.up_blocks.0.resnets.0.norm1.weight")
	return ok
}

// addDiffusersVAEAliases serves the diffusers-layout VAE under prefix with the original
// names under prefix+"ldm.", and returns that prefix.
func addDiffusersVAEAliases(src *statedict.FileSource, prefix string) string {
	levels := 0
	for {
		if !src.Has(prefix + "decoder.up_blocks." + strconv.Itoa(levels) + ".resnets.0.norm1.weight") {
			break
		}
		levels++
	}
	to := prefix + "ldm."
	for _, k := range keysUnder(src.File(), prefix) {
		name, attnWeight := diffusersVAEName(strings.TrimPrefix(k, prefix), levels)
		d := statedict.Derived{Stored: k}
		if info, _ := src.File().Info(k); attnWeight && len(info.Shape) == 2 {
			d.Shape = []int{int(info.Shape[0]), int(info.Shape[1]), 1, 1}
		}
		src.Alias(to+name, d)
	}
	return to
}

// diffusersVAEName maps one diffusers VAE key to the original name; attnWeight reports
// a mid-block attention projection weight (a linear layer in diffusers).
func diffusersVAEName(k string, levels int) (string, bool) {
	k = strings.Replace(k, "conv_norm_out.", "norm_out.", 1)
	k = strings.Replace(k, ".conv_shortcut.", ".nin_shortcut.", 1)
	if m := diffDown.FindStringSubmatch(k); m != nil {
		rest := k[len(m[0]):]
		if m[3] != "" {
			return "encoder.down." + m[1] + ".block." + m[3] + "." + rest, false
		}
		return "encoder.down." + m[1] + ".downsample." + rest, false
	}
	if m := diffUp.FindStringSubmatch(k); m != nil {
		i, _ := strconv.Atoi(m[1])
		level := strconv.Itoa(levels - 1 - i)
		rest := k[len(m[0]):]
		if m[3] != "" {
			return "decoder.up." + level + ".block." + m[3] + "." + rest, false
		}
		return "decoder.up." + level + ".upsample." + rest, false
	}
	if m := diffMid.FindStringSubmatch(k); m != nil {
		rest := k[len(m[0]):]
		if m[3] != "" {
			n, _ := strconv.Atoi(m[3])
			return m[1] + ".mid.block_" + strconv.Itoa(n+1) + "." + rest, false
		}
		for from, to := range diffAttn {
			if r, ok := strings.CutPrefix(rest, from+"."); ok {
				return m[1] + ".mid.attn_1." + to + "." + r, to != "norm" && r == "weight"
			}
		}
	}
	return k, false
}

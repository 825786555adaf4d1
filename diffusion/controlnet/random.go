package controlnet

import (
	"fmt"
	"math"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/sd"
)

// Random-weight control models with the real key layouts, for tests and for the
// reference runs against ComfyUI (written with sd.WriteRandomTensors). Values are
// seeded per tensor name, like sd's random checkpoints.

// randomList collects tensors: weights N(0, 1/fan_in), biases N(0, 0.05²), norms
// 1 + N(0, 0.1²).
type randomList []sd.RandomTensor

func (l *randomList) add(name string, scale, offset float64, shape ...int) {
	*l = append(*l, sd.RandomTensor{Name: name, Shape: shape, Scale: scale, Offset: offset})
}

func (l *randomList) conv(name string, out, in, k int) {
	l.add(name+".weight", 1/math.Sqrt(float64(in*k*k)), 0, out, in, k, k)
	l.add(name+".bias", 0.05, 0, out)
}

func (l *randomList) linear(name string, out, in int) {
	l.add(name+".weight", 1/math.Sqrt(float64(in)), 0, out, in)
	l.add(name+".bias", 0.05, 0, out)
}

func (l *randomList) norm(name string, n int) {
	l.add(name+".weight", 0.1, 1, n)
	l.add(name+".bias", 0.05, 0, n)
}

// trunkTensors are the UNet tensors a ControlNet of spec u copies, under prefix.
func trunkTensors(prefix string, u sd.RandomUNet) []sd.RandomTensor {
	var out []sd.RandomTensor
	for _, t := range sd.RandomUNetTensors("", u) {
		if isTrunkKey(t.Name) {
			t.Name = prefix + t.Name
			out = append(out, t)
		}
	}
	return out
}

// blockChannels lists the output width of each input block of a UNet of spec u.
func blockChannels(u sd.RandomUNet) []int {
	ch := []int{u.ModelChannels}
	for l, m := range u.Mult {
		for range u.ResBlocks {
			ch = append(ch, m*u.ModelChannels)
		}
		if l != len(u.Mult)-1 {
			ch = append(ch, m*u.ModelChannels)
		}
	}
	return ch
}

// hintAndZero adds the hint encoder, the zero convs and middle_block_out.
func (l *randomList) hintAndZero(prefix string, u sd.RandomUNet, hintChannels int) {
	widths := []int{hintChannels, 16, 16, 32, 32, 96, 96, 256, u.ModelChannels}
	for i := 0; i < 8; i++ {
		l.conv(fmt.Sprintf("%sinput_hint_block.%d", prefix, 2*i), widths[i+1], widths[i], 3)
	}
	chs := blockChannels(u)
	for i, c := range chs {
		l.conv(fmt.Sprintf("%szero_convs.%d.0", prefix, i), c, c, 1)
	}
	l.conv(prefix+"middle_block_out.0", chs[len(chs)-1], chs[len(chs)-1], 1)
}

// RandomControlNet lists a ControlNet for a UNet of spec u in the cldm layout under
// prefix ("" or "control_model."), taking hints of hintChannels. unionTypes > 0 adds
// a union ControlNet's parts for that many control types (the trunk must then be 320
// channels wide, as the union parts are).
func RandomControlNet(prefix string, u sd.RandomUNet, hintChannels, unionTypes int) []sd.RandomTensor {
	l := randomList(trunkTensors(prefix, u))
	l.hintAndZero(prefix, u, hintChannels)
	if unionTypes > 0 {
		const c = 320
		emb := 4 * u.ModelChannels
		l.add(prefix+"task_embedding", 1, 0, unionTypes, c)
		p := prefix + "transformer_layes.0."
		l.linear(p+"attn.in_proj", 3*c, c)
		l.linear(p+"attn.out_proj", c, c)
		l.norm(p+"ln_1", c)
		l.linear(p+"mlp.c_fc", 4*c, c)
		l.linear(p+"mlp.c_proj", c, 4*c)
		l.norm(p+"ln_2", c)
		l.linear(prefix+"spatial_ch_projs", c, c)
		l.linear(prefix+"control_add_embedding.linear_1", emb, 256*unionTypes)
		l.linear(prefix+"control_add_embedding.linear_2", emb, emb)
	}
	return l
}

// RandomDiffControlNet lists a "difference" ControlNet (control_model. keys holding
// the ControlNet minus the model's trunk, and the "difference" marker).
func RandomDiffControlNet(u sd.RandomUNet, hintChannels int) []sd.RandomTensor {
	l := randomList(RandomControlNet("control_model.", u, hintChannels, 0))
	for i := range l {
		if isTrunkKey(strings.TrimPrefix(l[i].Name, "control_model.")) {
			l[i].Scale *= 0.1
		}
	}
	l.add("difference", 0, 0, 1)
	return l
}

// RandomControlLoRA lists a control-lora for a UNet of spec u: a rank-rank up/down
// pair for every conv and linear weight of the trunk, the trunk's biases and norms in
// full, the hint encoder and zero convs, and the lora_controlnet marker.
func RandomControlLoRA(u sd.RandomUNet, hintChannels, rank int) []sd.RandomTensor {
	var l randomList
	for _, t := range trunkTensors("", u) {
		layer, isWeight := strings.CutSuffix(t.Name, ".weight")
		if !isWeight || len(t.Shape) < 2 {
			l = append(l, t)
			continue
		}
		out, rest := t.Shape[0], t.Shape[1:]
		in := 1
		for _, d := range rest {
			in *= d
		}
		upShape := []int{out, rank}
		downShape := append([]int{rank}, rest...)
		if len(rest) == 3 {
			upShape = []int{out, rank, 1, 1}
		}
		l.add(layer+".up", 0.02, 0, upShape...)
		l.add(layer+".down", 1/math.Sqrt(float64(in)), 0, downShape...)
	}
	l.hintAndZero("", u, hintChannels)
	l.add("lora_controlnet", 0, 0, 1)
	return l
}

// RandomAdapter lists a full T2I-Adapter (Adapter with sk=True) of base width c:
// four levels of c, 2c, 4c, 4c with perLevel blocks, hint channels hint (1 or 3),
// block2/in_conv kernel ksize, downsampling by conv (useConv) or pooling; xl for the
// SDXL layout (unshuffle 16, level 1 at the same size).
func RandomAdapter(c, perLevel, hint, ksize int, useConv, xl bool) []sd.RandomTensor {
	var l randomList
	u := 8
	if xl {
		u = 16
	}
	widths := []int{c, 2 * c, 4 * c, 4 * c}
	l.conv("conv_in", c, hint*u*u, 3)
	prev := c
	for level, w := range widths {
		for j := 0; j < perLevel; j++ {
			p := fmt.Sprintf("body.%d.", level*perLevel+j)
			if j == 0 && level > 0 && (!xl || level == 2) && useConv {
				l.conv(p+"down_opt.op", prev, prev, 3)
			}
			if j == 0 && prev != w {
				l.conv(p+"in_conv", w, prev, ksize)
			}
			l.conv(p+"block1", w, w, 3)
			l.conv(p+"block2", w, w, ksize)
		}
		prev = w
	}
	return l
}

// RandomLightAdapter lists an Adapter_light with the given level widths (ComfyUI's
// files: 320, 640, 1280, 1280), perLevel residual blocks per extractor and 1- or
// 3-channel hints.
func RandomLightAdapter(widths []int, perLevel, hint int) []sd.RandomTensor {
	var l randomList
	prev := hint * 64
	for i, w := range widths {
		p := fmt.Sprintf("body.%d.", i)
		inter := w / 4
		l.conv(p+"in_conv", inter, prev, 1)
		for k := 0; k < perLevel; k++ {
			l.conv(fmt.Sprintf("%sbody.%d.block1", p, k), inter, inter, 3)
			l.conv(fmt.Sprintf("%sbody.%d.block2", p, k), inter, inter, 3)
		}
		l.conv(p+"out_conv", w, inter, 1)
		prev = w
	}
	return l
}

package detect

import (
	"fmt"

	"github.com/forgeflow/forgeflow/weights"
)

// The builders below list tensors with the names and shapes the real models have
// (ComfyUI's module trees: openaimodel.UNetModel, flux.model.Flux, mmdit, the KL
// autoencoder, CLIP and T5), at any size. Shapes only: detection never needs data
// (except the SD2 rule, tested through Input.Values), so full-size models cost nothing.

type tensors []weights.TensorInfo

func (ts *tensors) add(name string, shape ...int) {
	s := make([]int64, len(shape))
	for i, d := range shape {
		s[i] = int64(d)
	}
	*ts = append(*ts, weights.TensorInfo{Name: name, DType: weights.F16, Shape: s})
}

// linear adds name.weight [out, in] and name.bias [out].
func (ts *tensors) linear(name string, out, in int, bias bool) {
	ts.add(name+".weight", out, in)
	if bias {
		ts.add(name+".bias", out)
	}
}

func (ts *tensors) conv(name string, out, in, k int) {
	ts.add(name+".weight", out, in, k, k)
	ts.add(name+".bias", out)
}

func (ts *tensors) norm(name string, n int) {
	ts.add(name+".weight", n)
	ts.add(name+".bias", n)
}

func (ts *tensors) prefixed(p string, other tensors) {
	for _, t := range other {
		t.Name = p + t.Name
		*ts = append(*ts, t)
	}
}

// unetSpec is a UNetModel configuration: per level a channel multiplier, a res block
// count and a transformer depth (input and output blocks alike).
type unetSpec struct {
	in, out, mc int
	mult, nres  []int
	depth       []int
	midDepth    int // transformer blocks in the middle (0: none, middle has res blocks only)
	ctx         int
	linear      bool
	adm         int
}

func (u unetSpec) resBlock(ts *tensors, p string, in, out, ted int) {
	ts.norm(p+"in_layers.0", in)
	ts.conv(p+"in_layers.2", out, in, 3)
	ts.linear(p+"emb_layers.1", out, ted, true)
	ts.norm(p+"out_layers.0", out)
	ts.conv(p+"out_layers.3", out, out, 3)
	if in != out {
		ts.conv(p+"skip_connection", out, in, 1)
	}
}

func (u unetSpec) transformer(ts *tensors, p string, ch, depth int) {
	ts.norm(p+"norm", ch)
	if u.linear {
		ts.linear(p+"proj_in", ch, ch, true)
		ts.linear(p+"proj_out", ch, ch, true)
	} else {
		ts.conv(p+"proj_in", ch, ch, 1)
		ts.conv(p+"proj_out", ch, ch, 1)
	}
	for d := range depth {
		b := fmt.Sprintf("%stransformer_blocks.%d.", p, d)
		for _, a := range []string{"attn1", "attn2"} {
			kv := ch
			if a == "attn2" {
				kv = u.ctx
			}
			ts.linear(b+a+".to_q", ch, ch, false)
			ts.linear(b+a+".to_k", ch, kv, false)
			ts.linear(b+a+".to_v", ch, kv, false)
			ts.linear(b+a+".to_out.0", ch, ch, true)
		}
		ts.linear(b+"ff.net.0.proj", ch*8, ch, true)
		ts.linear(b+"ff.net.2", ch, ch*4, true)
		ts.norm(b+"norm1", ch)
		ts.norm(b+"norm2", ch)
		ts.norm(b+"norm3", ch)
	}
}

func (u unetSpec) build() tensors {
	var ts tensors
	ted := u.mc * 4
	ts.linear("time_embed.0", ted, u.mc, true)
	ts.linear("time_embed.2", ted, ted, true)
	if u.adm > 0 {
		ts.linear("label_emb.0.0", ted, u.adm, true)
		ts.linear("label_emb.0.2", ted, ted, true)
	}
	ts.conv("input_blocks.0.0", u.mc, u.in, 3)
	ch := u.mc
	skips := []int{ch}
	blk := 1
	for l, m := range u.mult {
		for range u.nres[l] {
			p := fmt.Sprintf("input_blocks.%d.", blk)
			u.resBlock(&ts, p+"0.", ch, m*u.mc, ted)
			ch = m * u.mc
			if u.depth[l] > 0 {
				u.transformer(&ts, p+"1.", ch, u.depth[l])
			}
			skips = append(skips, ch)
			blk++
		}
		if l != len(u.mult)-1 {
			ts.conv(fmt.Sprintf("input_blocks.%d.0.op", blk), ch, ch, 3)
			skips = append(skips, ch)
			blk++
		}
	}
	u.resBlock(&ts, "middle_block.0.", ch, ch, ted)
	if u.midDepth > 0 {
		u.transformer(&ts, "middle_block.1.", ch, u.midDepth)
		u.resBlock(&ts, "middle_block.2.", ch, ch, ted)
	} else {
		u.resBlock(&ts, "middle_block.1.", ch, ch, ted)
	}
	blk = 0
	for l := len(u.mult) - 1; l >= 0; l-- {
		for i := range u.nres[l] + 1 {
			p := fmt.Sprintf("output_blocks.%d.", blk)
			skip := skips[len(skips)-1]
			skips = skips[:len(skips)-1]
			out := u.mult[l] * u.mc
			u.resBlock(&ts, p+"0.", ch+skip, out, ted)
			ch = out
			j := 1
			if u.depth[l] > 0 {
				u.transformer(&ts, p+"1.", ch, u.depth[l])
				j = 2
			}
			if l > 0 && i == u.nres[l] {
				ts.conv(fmt.Sprintf("%s%d.conv", p, j), ch, ch, 3)
			}
			blk++
		}
	}
	ts.norm("out.0", ch)
	ts.conv("out.2", u.out, u.mc, 3)
	return ts
}

var (
	sd15UNet = unetSpec{in: 4, out: 4, mc: 320, mult: []int{1, 2, 4, 4}, nres: []int{2, 2, 2, 2}, depth: []int{1, 1, 1, 0}, midDepth: 1, ctx: 768}
	sd21UNet = unetSpec{in: 4, out: 4, mc: 320, mult: []int{1, 2, 4, 4}, nres: []int{2, 2, 2, 2}, depth: []int{1, 1, 1, 0}, midDepth: 1, ctx: 1024, linear: true}
	sdxlUNet = unetSpec{in: 4, out: 4, mc: 320, mult: []int{1, 2, 4}, nres: []int{2, 2, 2}, depth: []int{0, 2, 10}, midDepth: 10, ctx: 2048, linear: true, adm: 2816}
	refUNet  = unetSpec{in: 4, out: 4, mc: 384, mult: []int{1, 2, 4, 4}, nres: []int{2, 2, 2, 2}, depth: []int{0, 4, 4, 0}, midDepth: 4, ctx: 1280, linear: true, adm: 2560}
	tinyUNet = unetSpec{in: 4, out: 4, mc: 32, mult: []int{1, 2}, nres: []int{1, 1}, depth: []int{0, 1}, midDepth: 1, ctx: 32}
)

// fluxSpec sizes a Flux transformer.
type fluxSpec struct {
	hidden, headDim, depth, single, ctx, vec, in int
	guidance                                     bool
}

func (f fluxSpec) build() tensors {
	var ts tensors
	h := f.hidden
	ts.linear("img_in", h, f.in*4, true)
	ts.linear("txt_in", h, f.ctx, true)
	for _, e := range []string{"time_in", "vector_in", "guidance_in"} {
		if e == "guidance_in" && !f.guidance {
			continue
		}
		in := 256
		if e == "vector_in" {
			in = f.vec
		}
		ts.linear(e+".in_layer", h, in, true)
		ts.linear(e+".out_layer", h, h, true)
	}
	for i := range f.depth {
		for _, s := range []string{"img", "txt"} {
			p := fmt.Sprintf("double_blocks.%d.%s_", i, s)
			ts.linear(p+"attn.qkv", 3*h, h, true)
			ts.linear(p+"attn.proj", h, h, true)
			ts.add(p+"attn.norm.query_norm.scale", f.headDim)
			ts.add(p+"attn.norm.key_norm.scale", f.headDim)
			ts.linear(p+"mlp.0", 4*h, h, true)
			ts.linear(p+"mlp.2", h, 4*h, true)
			ts.linear(p+"mod.lin", 6*h, h, true)
		}
	}
	for i := range f.single {
		p := fmt.Sprintf("single_blocks.%d.", i)
		ts.linear(p+"linear1", 3*h+4*h, h, true)
		ts.linear(p+"linear2", h, h+4*h, true)
		ts.linear(p+"modulation.lin", 3*h, h, true)
		ts.add(p+"norm.query_norm.scale", f.headDim)
		ts.add(p+"norm.key_norm.scale", f.headDim)
	}
	ts.linear("final_layer.linear", 4*16, h, true)
	ts.linear("final_layer.adaLN_modulation.1", 2*h, h, true)
	return ts
}

var fluxDev = fluxSpec{hidden: 3072, headDim: 128, depth: 19, single: 38, ctx: 4096, vec: 768, in: 16, guidance: true}

// sd3MMDiT lists the tensors detection reads from an SD3 medium MMDiT (depth 24).
func sd3MMDiT() tensors {
	var ts tensors
	ts.add("x_embedder.proj.weight", 1536, 16, 2, 2)
	ts.add("x_embedder.proj.bias", 1536)
	ts.add("pos_embed", 1, 36864, 1536)
	ts.linear("context_embedder", 1536, 4096, true)
	ts.linear("y_embedder.mlp.0", 1536, 2048, true)
	for i := range 24 {
		for _, b := range []string{"context_block", "x_block"} {
			ts.linear(fmt.Sprintf("joint_blocks.%d.%s.attn.qkv", i, b), 3*1536, 1536, true)
		}
	}
	ts.linear("final_layer.linear", 64, 1536, true)
	return ts
}

// vaeSpec sizes a KL autoencoder.
type vaeSpec struct {
	ch, z, nres int
	mult        []int
	quant       bool
}

func (v vaeSpec) build() tensors {
	var ts tensors
	res := func(p string, in, out int) {
		ts.norm(p+"norm1", in)
		ts.conv(p+"conv1", out, in, 3)
		ts.norm(p+"norm2", out)
		ts.conv(p+"conv2", out, out, 3)
		if in != out {
			ts.conv(p+"nin_shortcut", out, in, 1)
		}
	}
	mid := func(p string, c int) {
		res(p+"mid.block_1.", c, c)
		ts.norm(p+"mid.attn_1.norm", c)
		for _, n := range []string{"q", "k", "v", "proj_out"} {
			ts.conv(p+"mid.attn_1."+n, c, c, 1)
		}
		res(p+"mid.block_2.", c, c)
	}
	ts.conv("encoder.conv_in", v.ch, 3, 3)
	ch := v.ch
	for l, m := range v.mult {
		for b := range v.nres {
			res(fmt.Sprintf("encoder.down.%d.block.%d.", l, b), ch, m*v.ch)
			ch = m * v.ch
		}
		if l != len(v.mult)-1 {
			ts.conv(fmt.Sprintf("encoder.down.%d.downsample.conv", l), ch, ch, 3)
		}
	}
	mid("encoder.", ch)
	ts.norm("encoder.norm_out", ch)
	ts.conv("encoder.conv_out", 2*v.z, ch, 3)
	if v.quant {
		ts.conv("quant_conv", 2*v.z, 2*v.z, 1)
		ts.conv("post_quant_conv", v.z, v.z, 1)
	}
	top := v.mult[len(v.mult)-1] * v.ch
	ts.conv("decoder.conv_in", top, v.z, 3)
	mid("decoder.", top)
	ch = top
	for l := len(v.mult) - 1; l >= 0; l-- {
		for b := range v.nres + 1 {
			res(fmt.Sprintf("decoder.up.%d.block.%d.", l, b), ch, v.mult[l]*v.ch)
			ch = v.mult[l] * v.ch
		}
		if l != 0 {
			ts.conv(fmt.Sprintf("decoder.up.%d.upsample.conv", l), ch, ch, 3)
		}
	}
	ts.norm("decoder.norm_out", ch)
	ts.conv("decoder.conv_out", 3, ch, 3)
	return ts
}

var (
	sdVAE   = vaeSpec{ch: 128, z: 4, nres: 2, mult: []int{1, 2, 4, 4}, quant: true}
	fluxVAE = vaeSpec{ch: 128, z: 16, nres: 2, mult: []int{1, 2, 4, 4}}
)

// clipHF lists a transformers CLIPTextModel ("text_model." names).
func clipHF(layers, hidden, inter int, projection bool) tensors {
	var ts tensors
	ts.add("text_model.embeddings.token_embedding.weight", 49408, hidden)
	ts.add("text_model.embeddings.position_embedding.weight", 77, hidden)
	for i := range layers {
		p := fmt.Sprintf("text_model.encoder.layers.%d.", i)
		for _, n := range []string{"q_proj", "k_proj", "v_proj", "out_proj"} {
			ts.linear(p+"self_attn."+n, hidden, hidden, true)
		}
		ts.norm(p+"layer_norm1", hidden)
		ts.norm(p+"layer_norm2", hidden)
		ts.linear(p+"mlp.fc1", inter, hidden, true)
		ts.linear(p+"mlp.fc2", hidden, inter, true)
	}
	ts.norm("text_model.final_layer_norm", hidden)
	if projection {
		ts.add("text_projection.weight", hidden, hidden)
	}
	return ts
}

// clipOpen lists an open_clip text tower (transformer.resblocks names).
func clipOpen(layers, hidden int) tensors {
	var ts tensors
	ts.add("token_embedding.weight", 49408, hidden)
	ts.add("positional_embedding", 77, hidden)
	for i := range layers {
		p := fmt.Sprintf("transformer.resblocks.%d.", i)
		ts.add(p+"attn.in_proj_weight", 3*hidden, hidden)
		ts.add(p+"attn.in_proj_bias", 3*hidden)
		ts.linear(p+"attn.out_proj", hidden, hidden, true)
		ts.norm(p+"ln_1", hidden)
		ts.norm(p+"ln_2", hidden)
		ts.linear(p+"mlp.c_fc", 4*hidden, hidden, true)
		ts.linear(p+"mlp.c_proj", hidden, 4*hidden, true)
	}
	ts.norm("ln_final", hidden)
	ts.add("text_projection", hidden, hidden)
	return ts
}

// t5 lists a transformers T5 encoder; gguf=true uses llama.cpp's names instead.
func t5(layers, dModel, heads, dkv, dff int, gated, gguf bool) tensors {
	var ts tensors
	inner := heads * dkv
	if gguf {
		ts.add("token_embd.weight", 32128, dModel)
		for i := range layers {
			p := fmt.Sprintf("enc.blk.%d.", i)
			ts.add(p+"attn_q.weight", inner, dModel)
			ts.add(p+"attn_k.weight", inner, dModel)
			ts.add(p+"attn_v.weight", inner, dModel)
			ts.add(p+"attn_o.weight", dModel, inner)
			if i == 0 {
				ts.add(p+"attn_rel_b.weight", 32, heads)
			}
			ts.add(p+"attn_norm.weight", dModel)
			ts.add(p+"ffn_gate.weight", dff, dModel)
			ts.add(p+"ffn_up.weight", dff, dModel)
			ts.add(p+"ffn_down.weight", dModel, dff)
			ts.add(p+"ffn_norm.weight", dModel)
		}
		ts.add("enc.output_norm.weight", dModel)
		return ts
	}
	ts.add("shared.weight", 32128, dModel)
	for i := range layers {
		p := fmt.Sprintf("encoder.block.%d.layer.", i)
		for _, n := range []string{"q", "k", "v"} {
			ts.add(p+"0.SelfAttention."+n+".weight", inner, dModel)
		}
		ts.add(p+"0.SelfAttention.o.weight", dModel, inner)
		if i == 0 {
			ts.add(p+"0.SelfAttention.relative_attention_bias.weight", 32, heads)
		}
		ts.add(p+"0.layer_norm.weight", dModel)
		if gated {
			ts.add(p+"1.DenseReluDense.wi_0.weight", dff, dModel)
			ts.add(p+"1.DenseReluDense.wi_1.weight", dff, dModel)
		} else {
			ts.add(p+"1.DenseReluDense.wi.weight", dff, dModel)
		}
		ts.add(p+"1.DenseReluDense.wo.weight", dModel, dff)
		ts.add(p+"1.layer_norm.weight", dModel)
	}
	ts.add("encoder.final_layer_norm.weight", dModel)
	return ts
}

func pre(p string, ts tensors) tensors {
	var out tensors
	out.prefixed(p, ts)
	return out
}

func join(parts ...tensors) tensors {
	var out tensors
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

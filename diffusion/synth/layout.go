package synth

import "fmt"

// Tensor is one entry of a checkpoint layout.
type Tensor struct {
	Name  string
	Shape []int64
}

// Layout is an ordered list of tensors.
type Layout []Tensor

func (l *Layout) add(name string, shape ...int64) {
	*l = append(*l, Tensor{Name: name, Shape: shape})
}

// UNetConfig describes an SD-family UNet (the fields of ComfyUI's unet_config).
type UNetConfig struct {
	InChannels, OutChannels int
	ModelChannels           int
	ChannelMult             []int
	NumResBlocks            int
	// TransformerDepth per level (0: no transformer at that level); the middle block
	// uses TransformerDepthMiddle.
	TransformerDepth       []int
	TransformerDepthMiddle int
	ContextDim             int
	UseLinearInTransformer bool
	ADMInChannels          int // SDXL label_emb input, 0 for none
}

// SD15UNet is the SD1.x UNet.
func SD15UNet() UNetConfig {
	return UNetConfig{InChannels: 4, OutChannels: 4, ModelChannels: 320, ChannelMult: []int{1, 2, 4, 4}, NumResBlocks: 2,
		TransformerDepth: []int{1, 1, 1, 0}, TransformerDepthMiddle: 1, ContextDim: 768}
}

// SDXLUNet is the SDXL base UNet.
func SDXLUNet() UNetConfig {
	return UNetConfig{InChannels: 4, OutChannels: 4, ModelChannels: 320, ChannelMult: []int{1, 2, 4}, NumResBlocks: 2,
		TransformerDepth: []int{0, 2, 10}, TransformerDepthMiddle: 10, ContextDim: 2048, UseLinearInTransformer: true, ADMInChannels: 2816}
}

func norm(l *Layout, p string, c int) {
	l.add(p+".weight", int64(c))
	l.add(p+".bias", int64(c))
}

func conv(l *Layout, p string, out, in, k int) {
	l.add(p+".weight", int64(out), int64(in), int64(k), int64(k))
	l.add(p+".bias", int64(out))
}

func linear(l *Layout, p string, out, in int, bias bool) {
	l.add(p+".weight", int64(out), int64(in))
	if bias {
		l.add(p+".bias", int64(out))
	}
}

func resBlock(l *Layout, p string, in, out, emb int) {
	norm(l, p+".in_layers.0", in)
	conv(l, p+".in_layers.2", out, in, 3)
	linear(l, p+".emb_layers.1", out, emb, true)
	norm(l, p+".out_layers.0", out)
	conv(l, p+".out_layers.3", out, out, 3)
	if in != out {
		conv(l, p+".skip_connection", out, in, 1)
	}
}

func spatialTransformer(l *Layout, p string, ch, depth, ctx int, linearProj bool) {
	norm(l, p+".norm", ch)
	if linearProj {
		linear(l, p+".proj_in", ch, ch, true)
	} else {
		conv(l, p+".proj_in", ch, ch, 1)
	}
	for d := 0; d < depth; d++ {
		b := fmt.Sprintf("%s.transformer_blocks.%d", p, d)
		linear(l, b+".attn1.to_q", ch, ch, false)
		linear(l, b+".attn1.to_k", ch, ch, false)
		linear(l, b+".attn1.to_v", ch, ch, false)
		linear(l, b+".attn1.to_out.0", ch, ch, true)
		linear(l, b+".ff.net.0.proj", ch*8, ch, true)
		linear(l, b+".ff.net.2", ch, ch*4, true)
		linear(l, b+".attn2.to_q", ch, ch, false)
		linear(l, b+".attn2.to_k", ch, ctx, false)
		linear(l, b+".attn2.to_v", ch, ctx, false)
		linear(l, b+".attn2.to_out.0", ch, ch, true)
		norm(l, b+".norm1", ch)
		norm(l, b+".norm2", ch)
		norm(l, b+".norm3", ch)
	}
	if linearProj {
		linear(l, p+".proj_out", ch, ch, true)
	} else {
		conv(l, p+".proj_out", ch, ch, 1)
	}
}

// UNet returns the UNet's tensors under prefix (e.g. "model.diffusion_model.").
func UNet(c UNetConfig, prefix string) Layout {
	var l Layout
	mc := c.ModelChannels
	emb := mc * 4
	linear(&l, prefix+"time_embed.0", emb, mc, true)
	linear(&l, prefix+"time_embed.2", emb, emb, true)
	if c.ADMInChannels > 0 {
		linear(&l, prefix+"label_emb.0.0", emb, c.ADMInChannels, true)
		linear(&l, prefix+"label_emb.0.2", emb, emb, true)
	}
	conv(&l, prefix+"input_blocks.0.0", mc, c.InChannels, 3)
	chans := []int{mc}
	ch := mc
	block := 1
	for level, mult := range c.ChannelMult {
		for r := 0; r < c.NumResBlocks; r++ {
			p := fmt.Sprintf("%sinput_blocks.%d", prefix, block)
			resBlock(&l, p+".0", ch, mult*mc, emb)
			ch = mult * mc
			if c.TransformerDepth[level] > 0 {
				spatialTransformer(&l, p+".1", ch, c.TransformerDepth[level], c.ContextDim, c.UseLinearInTransformer)
			}
			chans = append(chans, ch)
			block++
		}
		if level != len(c.ChannelMult)-1 {
			conv(&l, fmt.Sprintf("%sinput_blocks.%d.0.op", prefix, block), ch, ch, 3)
			chans = append(chans, ch)
			block++
		}
	}
	resBlock(&l, prefix+"middle_block.0", ch, ch, emb)
	spatialTransformer(&l, prefix+"middle_block.1", ch, c.TransformerDepthMiddle, c.ContextDim, c.UseLinearInTransformer)
	resBlock(&l, prefix+"middle_block.2", ch, ch, emb)
	block = 0
	for level := len(c.ChannelMult) - 1; level >= 0; level-- {
		mult := c.ChannelMult[level]
		for r := 0; r <= c.NumResBlocks; r++ {
			p := fmt.Sprintf("%soutput_blocks.%d", prefix, block)
			skip := chans[len(chans)-1]
			chans = chans[:len(chans)-1]
			resBlock(&l, p+".0", ch+skip, mult*mc, emb)
			ch = mult * mc
			m := 1
			if c.TransformerDepth[level] > 0 {
				spatialTransformer(&l, p+".1", ch, c.TransformerDepth[level], c.ContextDim, c.UseLinearInTransformer)
				m = 2
			}
			if level > 0 && r == c.NumResBlocks {
				conv(&l, fmt.Sprintf("%s.%d.conv", p, m), ch, ch, 3)
			}
			block++
		}
	}
	norm(&l, prefix+"out.0", mc)
	conv(&l, prefix+"out.2", c.OutChannels, mc, 3)
	return l
}

// VAEConfig describes an AutoencoderKL.
type VAEConfig struct {
	Ch, ZChannels, NumResBlocks int
	ChMult                      []int
}

// SDVAE is the SD1.x/SDXL autoencoder.
func SDVAE() VAEConfig {
	return VAEConfig{Ch: 128, ZChannels: 4, NumResBlocks: 2, ChMult: []int{1, 2, 4, 4}}
}

func vaeRes(l *Layout, p string, in, out int) {
	norm(l, p+".norm1", in)
	conv(l, p+".conv1", out, in, 3)
	norm(l, p+".norm2", out)
	conv(l, p+".conv2", out, out, 3)
	if in != out {
		conv(l, p+".nin_shortcut", out, in, 1)
	}
}

func vaeMid(l *Layout, p string, ch int) {
	vaeRes(l, p+".block_1", ch, ch)
	norm(l, p+".attn_1.norm", ch)
	for _, n := range []string{"q", "k", "v", "proj_out"} {
		conv(l, p+".attn_1."+n, ch, ch, 1)
	}
	vaeRes(l, p+".block_2", ch, ch)
}

// VAE returns the autoencoder's tensors under prefix (e.g. "first_stage_model.").
func VAE(c VAEConfig, prefix string) Layout {
	var l Layout
	e := prefix + "encoder"
	conv(&l, e+".conv_in", c.Ch, 3, 3)
	in := c.Ch
	for i, m := range c.ChMult {
		out := c.Ch * m
		for b := 0; b < c.NumResBlocks; b++ {
			vaeRes(&l, fmt.Sprintf("%s.down.%d.block.%d", e, i, b), in, out)
			in = out
		}
		if i != len(c.ChMult)-1 {
			conv(&l, fmt.Sprintf("%s.down.%d.downsample.conv", e, i), in, in, 3)
		}
	}
	vaeMid(&l, e+".mid", in)
	norm(&l, e+".norm_out", in)
	conv(&l, e+".conv_out", 2*c.ZChannels, in, 3)
	d := prefix + "decoder"
	ch := c.Ch * c.ChMult[len(c.ChMult)-1]
	conv(&l, d+".conv_in", ch, c.ZChannels, 3)
	vaeMid(&l, d+".mid", ch)
	for i := len(c.ChMult) - 1; i >= 0; i-- {
		out := c.Ch * c.ChMult[i]
		for b := 0; b <= c.NumResBlocks; b++ {
			vaeRes(&l, fmt.Sprintf("%s.up.%d.block.%d", d, i, b), ch, out)
			ch = out
		}
		if i != 0 {
			conv(&l, fmt.Sprintf("%s.up.%d.upsample.conv", d, i), ch, ch, 3)
		}
	}
	norm(&l, d+".norm_out", ch)
	conv(&l, d+".conv_out", 3, ch, 3)
	conv(&l, prefix+"quant_conv", 2*c.ZChannels, 2*c.ZChannels, 1)
	conv(&l, prefix+"post_quant_conv", c.ZChannels, c.ZChannels, 1)
	return l
}

// CLIPConfig describes a CLIP text transformer in Hugging Face layout.
type CLIPConfig struct {
	Hidden, Intermediate, Layers, Vocab, Positions int
	Projection                                     bool
}

// CLIPL is OpenAI's CLIP ViT-L/14 text model, SD1.x's text encoder.
func CLIPL() CLIPConfig {
	return CLIPConfig{Hidden: 768, Intermediate: 3072, Layers: 12, Vocab: 49408, Positions: 77}
}

// CLIP returns the text model's tensors under prefix (e.g.
// "cond_stage_model.transformer."), with "text_model." inside it as in SD1.x files.
func CLIP(c CLIPConfig, prefix string) Layout {
	var l Layout
	t := prefix + "text_model."
	l.add(t+"embeddings.token_embedding.weight", int64(c.Vocab), int64(c.Hidden))
	l.add(t+"embeddings.position_embedding.weight", int64(c.Positions), int64(c.Hidden))
	for i := 0; i < c.Layers; i++ {
		p := fmt.Sprintf("%sencoder.layers.%d", t, i)
		norm(&l, p+".layer_norm1", c.Hidden)
		for _, n := range []string{"q_proj", "k_proj", "v_proj", "out_proj"} {
			linear(&l, p+".self_attn."+n, c.Hidden, c.Hidden, true)
		}
		norm(&l, p+".layer_norm2", c.Hidden)
		linear(&l, p+".mlp.fc1", c.Intermediate, c.Hidden, true)
		linear(&l, p+".mlp.fc2", c.Hidden, c.Intermediate, true)
	}
	norm(&l, t+"final_layer_norm", c.Hidden)
	if c.Projection {
		l.add(prefix+"text_projection.weight", int64(c.Hidden), int64(c.Hidden))
	}
	return l
}

// SD15Checkpoint is the layout of a single-file SD1.5 checkpoint.
func SD15Checkpoint() Layout {
	l := UNet(SD15UNet(), "model.diffusion_model.")
	l = append(l, VAE(SDVAE(), "first_stage_model.")...)
	l = append(l, CLIP(CLIPL(), "cond_stage_model.transformer.")...)
	return l
}

// SD15TinyCheckpoint is an SD1.5-structured checkpoint at toy size (the golden fixtures'
// sizes: UNet 32 channels, VAE 32, CLIP width 32 with 3 layers), for tests.
func SD15TinyCheckpoint() Layout {
	l := UNet(UNetConfig{InChannels: 4, OutChannels: 4, ModelChannels: 32, ChannelMult: []int{1, 2}, NumResBlocks: 1,
		TransformerDepth: []int{0, 1}, TransformerDepthMiddle: 1, ContextDim: 32}, "model.diffusion_model.")
	l = append(l, VAE(VAEConfig{Ch: 32, ZChannels: 4, NumResBlocks: 1, ChMult: []int{1, 2}}, "first_stage_model.")...)
	l = append(l, CLIP(CLIPConfig{Hidden: 32, Intermediate: 128, Layers: 3, Vocab: 49408, Positions: 77}, "cond_stage_model.transformer.")...)
	return l
}

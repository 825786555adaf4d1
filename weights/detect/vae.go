package detect

import (
	"fmt"
	"slices"
)

// VAEConfig is the configuration of a KL autoencoder (comfy/ldm/modules/
// diffusionmodules/model.py Encoder/Decoder ddconfig), derived from shapes. ComfyUI
// assumes ch 128 and ch_mult [1 2 4 4] for every such VAE and reads only z_channels;
// the derived values equal those for the released VAEs.
type VAEConfig struct {
	// Prefix: "first_stage_model." in SD checkpoints, "vae." in some Flux ones, "" in a
	// vae file.
	Prefix       string
	InChannels   int // image channels (3)
	OutChannels  int
	Ch           int
	ChMult       []int
	NumResBlocks int
	// LatentChannels is z_channels: 4 for SD1/SD2/SDXL, 16 for SD3 and Flux.
	LatentChannels int
	// EmbedDim is the quant_conv width; 0 when the VAE has no quant convolutions
	// (SD3/Flux VAEs, which ComfyUI wraps in an AutoencodingEngine).
	EmbedDim     int
	DoubleZ      bool
	MidAttention bool
	// AttnLevels lists the resolution levels with attention blocks (none in SD VAEs).
	AttnLevels []int
	HasEncoder bool
	// Unsupported says why forgeflow cannot run this VAE yet; empty when it can.
	Unsupported string
}

// detectVAE finds a KL autoencoder among the tensors (nil when there is none).
func detectVAE(s *sd) *VAEConfig {
	if p, ok := s.prefixOf("decoder.up_blocks.0.resnets.0.norm1.weight"); ok {
		return &VAEConfig{Prefix: p, Unsupported: "diffusers-format VAEs are not converted yet"}
	}
	if p, ok := s.prefixOf("taesd_decoder.1.weight"); ok {
		return &VAEConfig{Prefix: p, LatentChannels: s.dim(p+"taesd_decoder.1.weight", 1), Unsupported: "TAESD is not implemented"}
	}
	p, ok := s.prefixOf("decoder.conv_in.weight")
	if !ok || s.rank(p+"decoder.conv_in.weight") != 4 {
		return nil
	}
	c := &VAEConfig{Prefix: p}
	c.LatentChannels = s.dim(p+"decoder.conv_in.weight", 1)
	c.OutChannels = s.dim(p+"decoder.conv_out.weight", 0)
	c.HasEncoder = s.has(p + "encoder.conv_in.weight")
	if c.HasEncoder {
		c.Ch = s.dim(p+"encoder.conv_in.weight", 0)
		c.InChannels = s.dim(p+"encoder.conv_in.weight", 1)
		c.DoubleZ = s.dim(p+"encoder.conv_out.weight", 0) == 2*c.LatentChannels
		levels := s.countBlocks(p + "encoder.down.%d.")
		for i := range levels {
			out := s.dim(fmt.Sprintf("%sencoder.down.%d.block.0.conv2.weight", p, i), 0)
			c.ChMult = append(c.ChMult, out/max(c.Ch, 1))
			if s.hasPrefix(fmt.Sprintf("%sencoder.down.%d.attn.", p, i)) {
				c.AttnLevels = append(c.AttnLevels, i)
			}
		}
		c.NumResBlocks = s.countBlocks(p + "encoder.down.0.block.%d.")
		c.MidAttention = s.has(p + "encoder.mid.attn_1.q.weight")
	} else {
		// Decoder only: the decoder's last level runs at ch × ch_mult[0], and
		// ch_mult[0] is 1 in every known VAE; each level has num_res_blocks+1 blocks.
		c.Ch = s.dim(p+"decoder.conv_out.weight", 1)
		c.InChannels = c.OutChannels
		levels := s.countBlocks(p + "decoder.up.%d.")
		for i := range levels {
			out := s.dim(fmt.Sprintf("%sdecoder.up.%d.block.0.conv2.weight", p, i), 0)
			c.ChMult = append(c.ChMult, out/max(c.Ch, 1))
			if s.hasPrefix(fmt.Sprintf("%sdecoder.up.%d.attn.", p, i)) {
				c.AttnLevels = append(c.AttnLevels, i)
			}
		}
		c.NumResBlocks = max(s.countBlocks(p+"decoder.up.0.block.%d.")-1, 0)
		c.MidAttention = s.has(p + "decoder.mid.attn_1.q.weight")
	}
	c.AttnLevels = slices.Clip(c.AttnLevels)
	if s.has(p + "post_quant_conv.weight") {
		c.EmbedDim = s.dim(p+"post_quant_conv.weight", 1)
	}
	if s.has(p + "decoder.mid.block_1.mix_factor") {
		c.Unsupported = "video VAEs (SVD temporal decoder) are not implemented"
	}
	return c
}

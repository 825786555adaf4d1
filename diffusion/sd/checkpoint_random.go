package sd

import (
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"

	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/detect"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// Random-weight checkpoints with the real key names and layout of each family, at any
// size: full-size ones to measure speed without downloading a model, tiny ones for
// tests. The module trees follow ComfyUI's openaimodel.UNetModel, the KL autoencoder
// (comfy/ldm/modules/diffusionmodules/model.py), transformers' CLIPTextModel and
// OpenCLIP's text tower. Values are seeded per tensor name, so a file's bytes depend
// only on the spec.

// RandomUNet sizes a UNetModel.
type RandomUNet struct {
	ModelChannels int
	Mult          []int // channel multiplier per level
	ResBlocks     int   // res blocks per level
	Depth         []int // transformer depth per level (0: no attention)
	MidDepth      int
	Context       int  // cross-attention width
	Linear        bool // linear proj_in/proj_out (SD2, SDXL)
	ADM           int  // label_emb input width (SDXL), 0 for none
	// InChannels is the input conv's width: 4 when 0, 9 for an inpainting UNet.
	InChannels int
}

// RandomVAE sizes an AutoencoderKL (mid-block attention): SD's with 4 latent channels
// and quant convolutions, or SD3's and Flux's (Latent 16, NoQuantConv).
type RandomVAE struct {
	Ch        int
	Mult      []int
	ResBlocks int
	// Latent is the latent channel count (0: 4).
	Latent int
	// NoQuantConv leaves out quant_conv and post_quant_conv, as SD3 and Flux VAEs do.
	NoQuantConv bool
}

// FluxRandomVAE is the Flux VAE's architecture (ae.safetensors); SD3's is the same.
func FluxRandomVAE() RandomVAE {
	return RandomVAE{Ch: 128, Mult: []int{1, 2, 4, 4}, ResBlocks: 2, Latent: 16, NoQuantConv: true}
}

// WriteRandomVAE writes a standalone VAE file (keys encoder.* and decoder.* under
// prefix: "" like ae.safetensors, or "vae." / "first_stage_model.").
func WriteRandomVAE(w io.Writer, v RandomVAE, prefix string, seed uint64, dtype weights.DType) error {
	if len(v.Mult) == 0 {
		return fmt.Errorf("sd: random VAE needs channel multipliers")
	}
	var ts randomTensors
	ts.vae(prefix, v)
	return WriteRandomTensors(w, ts, seed, dtype)
}

// RandomText sizes a CLIP text transformer.
type RandomText struct {
	Width, Layers, Vocab int
	Projection           int // OpenCLIP text_projection width
}

// RandomSpec describes a random-weight checkpoint.
type RandomSpec struct {
	Family detect.Family // FamilySD1, FamilySD2, FamilySDXL or FamilySDXLRefiner
	UNet   RandomUNet
	VAE    RandomVAE
	// CLIPL is the transformers-layout CLIP-L (SD1, SDXL); OpenCLIP the OpenCLIP-layout
	// H (SD2) or G (SDXL).
	CLIPL, OpenCLIP RandomText
	// VPrediction gives an SD2 model's v-prediction marker tensor a spread above 0.09
	// (comfy/supported_models.py SD20.model_type); below it otherwise.
	VPrediction bool
	// UnCLIPVision makes an SD2 spec an SD2.1 unCLIP checkpoint: this OpenCLIP vision
	// tower under "embedder.model.visual."; UNet.ADM must then be twice its projection
	// width.
	UnCLIPVision *RandomCLIPVision
	// DType is the storage of every tensor (F16 like the released fp16 files when
	// empty).
	DType weights.DType
	Seed  uint64
}

// SD15RandomSpec is SD1.5's full architecture.
func SD15RandomSpec() RandomSpec {
	return RandomSpec{Family: detect.FamilySD1,
		UNet:  RandomUNet{ModelChannels: 320, Mult: []int{1, 2, 4, 4}, ResBlocks: 2, Depth: []int{1, 1, 1, 0}, MidDepth: 1, Context: 768},
		VAE:   RandomVAE{Ch: 128, Mult: []int{1, 2, 4, 4}, ResBlocks: 2},
		CLIPL: RandomText{Width: 768, Layers: 12, Vocab: 49408}}
}

// SDXLRandomSpec is SDXL base's full architecture.
func SDXLRandomSpec() RandomSpec {
	return RandomSpec{Family: detect.FamilySDXL,
		UNet:     RandomUNet{ModelChannels: 320, Mult: []int{1, 2, 4}, ResBlocks: 2, Depth: []int{0, 2, 10}, MidDepth: 10, Context: 2048, Linear: true, ADM: 2816},
		VAE:      RandomVAE{Ch: 128, Mult: []int{1, 2, 4, 4}, ResBlocks: 2},
		CLIPL:    RandomText{Width: 768, Layers: 12, Vocab: 49408},
		OpenCLIP: RandomText{Width: 1280, Layers: 32, Vocab: 49408, Projection: 1280}}
}

// SDXLRefinerRandomSpec is the SDXL refiner's full architecture.
func SDXLRefinerRandomSpec() RandomSpec {
	return RandomSpec{Family: detect.FamilySDXLRefiner,
		UNet:     RandomUNet{ModelChannels: 384, Mult: []int{1, 2, 4, 4}, ResBlocks: 2, Depth: []int{0, 4, 4, 0}, MidDepth: 4, Context: 1280, Linear: true, ADM: 2560},
		VAE:      RandomVAE{Ch: 128, Mult: []int{1, 2, 4, 4}, ResBlocks: 2},
		OpenCLIP: RandomText{Width: 1280, Layers: 32, Vocab: 49408, Projection: 1280}}
}

// TinyRandomSpec is a small model of a family's layout for tests: 32–64 channels,
// 64-wide text encoders (one 64-wide attention head) over a 1024-token vocabulary, a
// VAE with a spatial factor of 2. SD2's has four levels and twelve output blocks so
// that its v-prediction marker exists.
func TinyRandomSpec(f detect.Family) RandomSpec {
	vae := RandomVAE{Ch: 32, Mult: []int{1, 2}, ResBlocks: 1}
	text := RandomText{Width: 64, Layers: 2, Vocab: 1024, Projection: 64}
	switch f {
	case detect.FamilySD2:
		return RandomSpec{Family: f, VAE: vae, OpenCLIP: RandomText{Width: 64, Layers: 3, Vocab: 1024, Projection: 64},
			UNet: RandomUNet{ModelChannels: 64, Mult: []int{1, 1, 1, 1}, ResBlocks: 2, Depth: []int{1, 0, 0, 0}, MidDepth: 1, Context: 64, Linear: true}}
	case detect.FamilySDXLRefiner:
		return RandomSpec{Family: f, VAE: vae, OpenCLIP: RandomText{Width: 64, Layers: 3, Vocab: 1024, Projection: 64},
			UNet: RandomUNet{ModelChannels: 32, Mult: []int{1, 2}, ResBlocks: 1, Depth: []int{0, 1}, MidDepth: 1, Context: 64, Linear: true, ADM: 64 + 5*256}}
	case detect.FamilySDXL:
		return RandomSpec{Family: f, VAE: vae, CLIPL: RandomText{Width: 64, Layers: 3, Vocab: 1024},
			OpenCLIP: RandomText{Width: 64, Layers: 3, Vocab: 1024, Projection: 64},
			UNet:     RandomUNet{ModelChannels: 32, Mult: []int{1, 2}, ResBlocks: 1, Depth: []int{0, 1}, MidDepth: 1, Context: 128, Linear: true, ADM: 64 + 6*256}}
	}
	return RandomSpec{Family: detect.FamilySD1, VAE: vae, CLIPL: text,
		UNet: RandomUNet{ModelChannels: 32, Mult: []int{1, 2}, ResBlocks: 1, Depth: []int{1, 1}, MidDepth: 1, Context: 64}}
}

// RandomTensor is one tensor of a random checkpoint: values Offset + Scale·N(0, 1),
// drawn from a generator seeded by the spec's seed and the name.
type RandomTensor struct {
	Name          string
	Shape         []int
	Scale, Offset float64
}

// Values draws the tensor's values.
func (t RandomTensor) Values(seed uint64) []float32 {
	h := fnv.New64a()
	h.Write([]byte(t.Name))
	r := rand.New(rand.NewPCG(seed, h.Sum64()))
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(t.Offset + t.Scale*r.NormFloat64())
	}
	return v
}

// randomTensors lists a checkpoint's tensors.
type randomTensors []RandomTensor

func (ts *randomTensors) add(name string, scale, offset float64, shape ...int) {
	*ts = append(*ts, RandomTensor{Name: name, Shape: shape, Scale: scale, Offset: offset})
}

// linear: weight N(0, 1/in), bias N(0, 0.05²).
func (ts *randomTensors) linear(name string, out, in int, bias bool) {
	ts.add(name+".weight", 1/math.Sqrt(float64(in)), 0, out, in)
	if bias {
		ts.add(name+".bias", 0.05, 0, out)
	}
}

func (ts *randomTensors) conv(name string, out, in, k int) {
	ts.add(name+".weight", 1/math.Sqrt(float64(in*k*k)), 0, out, in, k, k)
	ts.add(name+".bias", 0.05, 0, out)
}

// norm: scale 1 + N(0, 0.1²), bias N(0, 0.05²).
func (ts *randomTensors) norm(name string, n int) {
	ts.add(name+".weight", 0.1, 1, n)
	ts.add(name+".bias", 0.05, 0, n)
}

func (ts *randomTensors) resBlock(p string, in, out, emb int) {
	ts.norm(p+"in_layers.0", in)
	ts.conv(p+"in_layers.2", out, in, 3)
	ts.linear(p+"emb_layers.1", out, emb, true)
	ts.norm(p+"out_layers.0", out)
	ts.conv(p+"out_layers.3", out, out, 3)
	if in != out {
		ts.conv(p+"skip_connection", out, in, 1)
	}
}

func (ts *randomTensors) transformer(p string, ch, depth, ctx int, linear bool) {
	ts.norm(p+"norm", ch)
	if linear {
		ts.linear(p+"proj_in", ch, ch, true)
		ts.linear(p+"proj_out", ch, ch, true)
	} else {
		ts.conv(p+"proj_in", ch, ch, 1)
		ts.conv(p+"proj_out", ch, ch, 1)
	}
	for d := 0; d < depth; d++ {
		b := fmt.Sprintf("%stransformer_blocks.%d.", p, d)
		for _, a := range []string{"attn1", "attn2"} {
			kv := ch
			if a == "attn2" {
				kv = ctx
			}
			ts.linear(b+a+".to_q", ch, ch, false)
			ts.linear(b+a+".to_k", ch, kv, false)
			ts.linear(b+a+".to_v", ch, kv, false)
			ts.linear(b+a+".to_out.0", ch, ch, true)
		}
		ts.linear(b+"ff.net.0.proj", ch*8, ch, true) // GEGLU: value and gate
		ts.linear(b+"ff.net.2", ch, ch*4, true)
		ts.norm(b+"norm1", ch)
		ts.norm(b+"norm2", ch)
		ts.norm(b+"norm3", ch)
	}
}

func (ts *randomTensors) unet(p string, u RandomUNet) {
	emb := u.ModelChannels * 4
	ts.linear(p+"time_embed.0", emb, u.ModelChannels, true)
	ts.linear(p+"time_embed.2", emb, emb, true)
	if u.ADM > 0 {
		ts.linear(p+"label_emb.0.0", emb, u.ADM, true)
		ts.linear(p+"label_emb.0.2", emb, emb, true)
	}
	in := u.InChannels
	if in == 0 {
		in = 4
	}
	ts.conv(p+"input_blocks.0.0", u.ModelChannels, in, 3)
	ch := u.ModelChannels
	skips := []int{ch}
	blk := 1
	for l, m := range u.Mult {
		for range u.ResBlocks {
			q := fmt.Sprintf("%sinput_blocks.%d.", p, blk)
			ts.resBlock(q+"0.", ch, m*u.ModelChannels, emb)
			ch = m * u.ModelChannels
			if u.Depth[l] > 0 {
				ts.transformer(q+"1.", ch, u.Depth[l], u.Context, u.Linear)
			}
			skips = append(skips, ch)
			blk++
		}
		if l != len(u.Mult)-1 {
			ts.conv(fmt.Sprintf("%sinput_blocks.%d.0.op", p, blk), ch, ch, 3)
			skips = append(skips, ch)
			blk++
		}
	}
	ts.resBlock(p+"middle_block.0.", ch, ch, emb)
	ts.transformer(p+"middle_block.1.", ch, u.MidDepth, u.Context, u.Linear)
	ts.resBlock(p+"middle_block.2.", ch, ch, emb)
	blk = 0
	for l := len(u.Mult) - 1; l >= 0; l-- {
		for i := 0; i <= u.ResBlocks; i++ {
			q := fmt.Sprintf("%soutput_blocks.%d.", p, blk)
			skip := skips[len(skips)-1]
			skips = skips[:len(skips)-1]
			out := u.Mult[l] * u.ModelChannels
			ts.resBlock(q+"0.", ch+skip, out, emb)
			ch = out
			j := 1
			if u.Depth[l] > 0 {
				ts.transformer(q+"1.", ch, u.Depth[l], u.Context, u.Linear)
				j = 2
			}
			if l > 0 && i == u.ResBlocks {
				ts.conv(fmt.Sprintf("%s%d.conv", q, j), ch, ch, 3)
			}
			blk++
		}
	}
	ts.norm(p+"out.0", ch)
	ts.conv(p+"out.2", 4, u.ModelChannels, 3)
}

func (ts *randomTensors) vae(p string, v RandomVAE) {
	res := func(q string, in, out int) {
		ts.norm(q+"norm1", in)
		ts.conv(q+"conv1", out, in, 3)
		ts.norm(q+"norm2", out)
		ts.conv(q+"conv2", out, out, 3)
		if in != out {
			ts.conv(q+"nin_shortcut", out, in, 1)
		}
	}
	mid := func(q string, c int) {
		res(q+"mid.block_1.", c, c)
		ts.norm(q+"mid.attn_1.norm", c)
		for _, n := range []string{"q", "k", "v", "proj_out"} {
			ts.conv(q+"mid.attn_1."+n, c, c, 1)
		}
		res(q+"mid.block_2.", c, c)
	}
	ts.conv(p+"encoder.conv_in", v.Ch, 3, 3)
	in := v.Ch
	for l, m := range v.Mult {
		for i := 0; i < v.ResBlocks; i++ {
			res(fmt.Sprintf("%sencoder.down.%d.block.%d.", p, l, i), in, v.Ch*m)
			in = v.Ch * m
		}
		if l != len(v.Mult)-1 {
			ts.conv(fmt.Sprintf("%sencoder.down.%d.downsample.conv", p, l), in, in, 3)
		}
	}
	mid(p+"encoder.", in)
	ts.norm(p+"encoder.norm_out", in)
	z := v.Latent
	if z == 0 {
		z = 4
	}
	ts.conv(p+"encoder.conv_out", 2*z, in, 3)
	if !v.NoQuantConv {
		ts.conv(p+"quant_conv", 2*z, 2*z, 1)
		ts.conv(p+"post_quant_conv", z, z, 1)
	}
	in = v.Ch * v.Mult[len(v.Mult)-1]
	ts.conv(p+"decoder.conv_in", in, z, 3)
	mid(p+"decoder.", in)
	for l := len(v.Mult) - 1; l >= 0; l-- {
		for i := 0; i <= v.ResBlocks; i++ {
			res(fmt.Sprintf("%sdecoder.up.%d.block.%d.", p, l, i), in, v.Ch*v.Mult[l])
			in = v.Ch * v.Mult[l]
		}
		if l != 0 {
			ts.conv(fmt.Sprintf("%sdecoder.up.%d.upsample.conv", p, l), in, in, 3)
		}
	}
	ts.norm(p+"decoder.norm_out", in)
	ts.conv(p+"decoder.conv_out", 3, in, 3)
}

// hfCLIP adds a transformers CLIPTextModel under p ("…text_model.").
func (ts *randomTensors) hfCLIP(p string, t RandomText) {
	ts.add(p+"embeddings.token_embedding.weight", 0.02, 0, t.Vocab, t.Width)
	ts.add(p+"embeddings.position_embedding.weight", 0.01, 0, 77, t.Width)
	for i := 0; i < t.Layers; i++ {
		q := fmt.Sprintf("%sencoder.layers.%d.", p, i)
		ts.norm(q+"layer_norm1", t.Width)
		for _, n := range []string{"q_proj", "k_proj", "v_proj", "out_proj"} {
			ts.linear(q+"self_attn."+n, t.Width, t.Width, true)
		}
		ts.norm(q+"layer_norm2", t.Width)
		ts.linear(q+"mlp.fc1", 4*t.Width, t.Width, true)
		ts.linear(q+"mlp.fc2", t.Width, 4*t.Width, true)
	}
	ts.norm(p+"final_layer_norm", t.Width)
}

// openCLIP adds an OpenCLIP text tower under p ("…model.").
func (ts *randomTensors) openCLIP(p string, t RandomText) {
	ts.add(p+"token_embedding.weight", 0.02, 0, t.Vocab, t.Width)
	ts.add(p+"positional_embedding", 0.01, 0, 77, t.Width)
	for i := 0; i < t.Layers; i++ {
		q := fmt.Sprintf("%stransformer.resblocks.%d.", p, i)
		ts.norm(q+"ln_1", t.Width)
		ts.add(q+"attn.in_proj_weight", 1/math.Sqrt(float64(t.Width)), 0, 3*t.Width, t.Width)
		ts.add(q+"attn.in_proj_bias", 0.05, 0, 3*t.Width)
		ts.linear(q+"attn.out_proj", t.Width, t.Width, true)
		ts.norm(q+"ln_2", t.Width)
		ts.linear(q+"mlp.c_fc", 4*t.Width, t.Width, true)
		ts.linear(q+"mlp.c_proj", t.Width, 4*t.Width, true)
	}
	ts.norm(p+"ln_final", t.Width)
	ts.add(p+"text_projection", 1/math.Sqrt(float64(t.Width)), 0, t.Width, t.Projection)
	ts.add(p+"logit_scale", 0, 4.6052, 1)
}

// RandomUNetTensors lists the tensors of a random UNet of spec u under prefix (what a
// ControlNet copies of it, or a bare diffusion-model file).
func RandomUNetTensors(prefix string, u RandomUNet) []RandomTensor {
	var ts randomTensors
	ts.unet(prefix, u)
	return ts
}

// Tensors lists the checkpoint's tensors under ComfyUI's single-file key names.
func (s RandomSpec) Tensors() ([]RandomTensor, error) {
	var ts randomTensors
	u := s.UNet
	if len(u.Mult) == 0 || len(u.Depth) != len(u.Mult) || len(s.VAE.Mult) == 0 {
		return nil, fmt.Errorf("sd: random %s spec: UNet and VAE need channel multipliers (and a depth per UNet level)", s.Family)
	}
	ts.unet(unetPrefix, u)
	ts.vae(vaePrefix, s.VAE)
	switch s.Family {
	case detect.FamilySD1:
		ts.hfCLIP("cond_stage_model.transformer.text_model.", s.CLIPL)
	case detect.FamilySD2:
		ts.openCLIP("cond_stage_model.model.", s.OpenCLIP)
		spread := 0.01
		if s.VPrediction {
			spread = 0.3
		}
		for i := range ts {
			if ts[i].Name == sd2VTensor {
				ts[i].Scale, ts[i].Offset = spread, 0
			}
		}
	case detect.FamilySDXL:
		ts.hfCLIP("conditioner.embedders.0.transformer.text_model.", s.CLIPL)
		ts.openCLIP("conditioner.embedders.1.model.", s.OpenCLIP)
	case detect.FamilySDXLRefiner:
		ts.openCLIP("conditioner.embedders.0.model.", s.OpenCLIP)
	default:
		return nil, fmt.Errorf("sd: random checkpoints of family %s are not implemented", s.Family)
	}
	if v := s.UnCLIPVision; v != nil {
		if s.Family != detect.FamilySD2 || s.UNet.ADM != 2*v.Projection {
			return nil, fmt.Errorf("sd: an unCLIP checkpoint is SD2 with a label vector of twice the vision projection (%d), got %s with %d", 2*v.Projection, s.Family, s.UNet.ADM)
		}
		ts.openCLIPVision(unclipVisionPrefix, *v)
	}
	return ts, nil
}

// WriteRandomCheckpoint writes the spec's checkpoint as safetensors, generating each
// tensor while it is written (a full-size model never sits in memory as float32).
func WriteRandomCheckpoint(w io.Writer, s RandomSpec) error {
	ts, err := s.Tensors()
	if err != nil {
		return err
	}
	return WriteRandomTensors(w, ts, s.Seed, s.DType)
}

// WriteRandomTensors writes tensors with values drawn from seed, stored as dtype (F16
// when empty; F32, F16 or BF16).
func WriteRandomTensors(w io.Writer, ts []RandomTensor, seed uint64, dtype weights.DType) error {
	if dtype == "" {
		dtype = weights.F16
	}
	var g gpu.DType
	switch dtype {
	case weights.F32:
		g = gpu.F32
	case weights.F16:
		g = gpu.F16
	case weights.BF16:
		g = gpu.BF16
	default:
		return fmt.Errorf("sd: random checkpoint dtype %s is not F32, F16 or BF16", dtype)
	}
	es := make([]safetensors.Entry, len(ts))
	for i, t := range ts {
		shape := make([]int64, len(t.Shape))
		for j, d := range t.Shape {
			shape[j] = int64(d)
		}
		es[i] = safetensors.Entry{Name: t.Name, DType: dtype, Shape: shape, WriteData: func(w io.Writer) error {
			v := t.Values(seed)
			size, err := g.StorageBytes(len(v))
			if err != nil {
				return err
			}
			buf := make([]byte, size)
			if err := gpu.EncodeFloat32(g, buf, v); err != nil {
				return err
			}
			_, err = w.Write(buf)
			return err
		}}
	}
	safetensors.SortEntries(es)
	return safetensors.Write(w, es, nil)
}

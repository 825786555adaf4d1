package sd

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// Tiny checkpoints with the real key names and structure of each family (ComfyUI's
// module trees: openaimodel.UNetModel, the KL autoencoder, transformers CLIPTextModel,
// OpenCLIP's text tower) at small sizes, filled with seeded random values.

type tensorSpec struct {
	name  string
	shape []int
	vals  []float32
	dtype weights.DType
}

type ckptBuilder struct {
	rng     *rand.Rand
	tensors []tensorSpec
	// set overrides the values of named tensors after building.
	set map[string]func(i int) float32
}

func newBuilder(seed uint64) *ckptBuilder {
	return &ckptBuilder{rng: rand.New(rand.NewPCG(seed, 1)), set: map[string]func(int) float32{}}
}

func (b *ckptBuilder) add(name string, scale, offset float64, shape ...int) {
	n := 1
	for _, d := range shape {
		n *= d
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(offset + scale*b.rng.NormFloat64())
	}
	b.tensors = append(b.tensors, tensorSpec{name: name, shape: shape, vals: v, dtype: weights.F16})
}

func (b *ckptBuilder) linear(name string, out, in int, bias bool) {
	b.add(name+".weight", 1/math.Sqrt(float64(in)), 0, out, in)
	if bias {
		b.add(name+".bias", 0.05, 0, out)
	}
}

func (b *ckptBuilder) conv(name string, out, in, k int) {
	b.add(name+".weight", 1/math.Sqrt(float64(in*k*k)), 0, out, in, k, k)
	b.add(name+".bias", 0.05, 0, out)
}

func (b *ckptBuilder) norm(name string, n int) {
	b.add(name+".weight", 0.1, 1, n)
	b.add(name+".bias", 0.05, 0, n)
}

// unetSpec sizes a UNetModel: per level a channel multiplier, res blocks and
// transformer depth.
type unetSpec struct {
	mc       int
	mult     []int
	nres     int
	depth    []int
	midDepth int
	ctx      int
	linear   bool
	adm      int
}

func (b *ckptBuilder) resBlock(p string, in, out, emb int) {
	b.norm(p+"in_layers.0", in)
	b.conv(p+"in_layers.2", out, in, 3)
	b.linear(p+"emb_layers.1", out, emb, true)
	b.norm(p+"out_layers.0", out)
	b.conv(p+"out_layers.3", out, out, 3)
	if in != out {
		b.conv(p+"skip_connection", out, in, 1)
	}
}

func (b *ckptBuilder) transformer(p string, ch, depth, ctx int, linear bool) {
	b.norm(p+"norm", ch)
	if linear {
		b.linear(p+"proj_in", ch, ch, true)
		b.linear(p+"proj_out", ch, ch, true)
	} else {
		b.conv(p+"proj_in", ch, ch, 1)
		b.conv(p+"proj_out", ch, ch, 1)
	}
	for d := 0; d < depth; d++ {
		t := fmt.Sprintf("%stransformer_blocks.%d.", p, d)
		for _, a := range []string{"attn1", "attn2"} {
			kv := ch
			if a == "attn2" {
				kv = ctx
			}
			b.linear(t+a+".to_q", ch, ch, false)
			b.linear(t+a+".to_k", ch, kv, false)
			b.linear(t+a+".to_v", ch, kv, false)
			b.linear(t+a+".to_out.0", ch, ch, true)
		}
		b.linear(t+"ff.net.0.proj", ch*8, ch, true)
		b.linear(t+"ff.net.2", ch, ch*4, true)
		b.norm(t+"norm1", ch)
		b.norm(t+"norm2", ch)
		b.norm(t+"norm3", ch)
	}
}

func (b *ckptBuilder) unet(prefix string, u unetSpec) {
	p := prefix
	emb := u.mc * 4
	b.linear(p+"time_embed.0", emb, u.mc, true)
	b.linear(p+"time_embed.2", emb, emb, true)
	if u.adm > 0 {
		b.linear(p+"label_emb.0.0", emb, u.adm, true)
		b.linear(p+"label_emb.0.2", emb, emb, true)
	}
	b.conv(p+"input_blocks.0.0", u.mc, 4, 3)
	ch := u.mc
	skips := []int{ch}
	blk := 1
	for l, m := range u.mult {
		for range u.nres {
			q := fmt.Sprintf("%sinput_blocks.%d.", p, blk)
			b.resBlock(q+"0.", ch, m*u.mc, emb)
			ch = m * u.mc
			if u.depth[l] > 0 {
				b.transformer(q+"1.", ch, u.depth[l], u.ctx, u.linear)
			}
			skips = append(skips, ch)
			blk++
		}
		if l != len(u.mult)-1 {
			b.conv(fmt.Sprintf("%sinput_blocks.%d.0.op", p, blk), ch, ch, 3)
			skips = append(skips, ch)
			blk++
		}
	}
	b.resBlock(p+"middle_block.0.", ch, ch, emb)
	b.transformer(p+"middle_block.1.", ch, u.midDepth, u.ctx, u.linear)
	b.resBlock(p+"middle_block.2.", ch, ch, emb)
	blk = 0
	for l := len(u.mult) - 1; l >= 0; l-- {
		for i := 0; i <= u.nres; i++ {
			q := fmt.Sprintf("%soutput_blocks.%d.", p, blk)
			skip := skips[len(skips)-1]
			skips = skips[:len(skips)-1]
			out := u.mult[l] * u.mc
			b.resBlock(q+"0.", ch+skip, out, emb)
			ch = out
			j := 1
			if u.depth[l] > 0 {
				b.transformer(q+"1.", ch, u.depth[l], u.ctx, u.linear)
				j = 2
			}
			if l > 0 && i == u.nres {
				b.conv(fmt.Sprintf("%s%d.conv", q, j), ch, ch, 3)
			}
			blk++
		}
	}
	b.norm(p+"out.0", ch)
	b.conv(p+"out.2", 4, u.mc, 3)
}

// vae adds an AutoencoderKL (z 4, double z, mid attention) with ch and mult.
func (b *ckptBuilder) vae(p string, ch int, mult []int, nres int) {
	res := func(q string, in, out int) {
		b.norm(q+"norm1", in)
		b.conv(q+"conv1", out, in, 3)
		b.norm(q+"norm2", out)
		b.conv(q+"conv2", out, out, 3)
		if in != out {
			b.conv(q+"nin_shortcut", out, in, 1)
		}
	}
	mid := func(q string, c int) {
		res(q+"mid.block_1.", c, c)
		b.norm(q+"mid.attn_1.norm", c)
		for _, n := range []string{"q", "k", "v", "proj_out"} {
			b.conv(q+"mid.attn_1."+n, c, c, 1)
		}
		res(q+"mid.block_2.", c, c)
	}
	b.conv(p+"encoder.conv_in", ch, 3, 3)
	in := ch
	for l, m := range mult {
		out := ch * m
		for i := 0; i < nres; i++ {
			res(fmt.Sprintf("%sencoder.down.%d.block.%d.", p, l, i), in, out)
			in = out
		}
		if l != len(mult)-1 {
			b.conv(fmt.Sprintf("%sencoder.down.%d.downsample.conv", p, l), in, in, 3)
		}
	}
	mid(p+"encoder.", in)
	b.norm(p+"encoder.norm_out", in)
	b.conv(p+"encoder.conv_out", 8, in, 3)
	b.conv(p+"quant_conv", 8, 8, 1)
	b.conv(p+"post_quant_conv", 4, 4, 1)
	in = ch * mult[len(mult)-1]
	b.conv(p+"decoder.conv_in", in, 4, 3)
	mid(p+"decoder.", in)
	for l := len(mult) - 1; l >= 0; l-- {
		out := ch * mult[l]
		for i := 0; i <= nres; i++ {
			res(fmt.Sprintf("%sdecoder.up.%d.block.%d.", p, l, i), in, out)
			in = out
		}
		if l != 0 {
			b.conv(fmt.Sprintf("%sdecoder.up.%d.upsample.conv", p, l), in, in, 3)
		}
	}
	b.norm(p+"decoder.norm_out", in)
	b.conv(p+"decoder.conv_out", 3, in, 3)
}

const tinyVocab = 1024

// hfCLIP adds a transformers CLIPTextModel under p ("…text_model.").
func (b *ckptBuilder) hfCLIP(p string, width, layers int) {
	b.add(p+"embeddings.token_embedding.weight", 0.02, 0, tinyVocab, width)
	b.add(p+"embeddings.position_embedding.weight", 0.01, 0, 77, width)
	for i := 0; i < layers; i++ {
		q := fmt.Sprintf("%sencoder.layers.%d.", p, i)
		b.norm(q+"layer_norm1", width)
		for _, n := range []string{"q_proj", "k_proj", "v_proj", "out_proj"} {
			b.linear(q+"self_attn."+n, width, width, true)
		}
		b.norm(q+"layer_norm2", width)
		b.linear(q+"mlp.fc1", 4*width, width, true)
		b.linear(q+"mlp.fc2", width, 4*width, true)
	}
	b.norm(p+"final_layer_norm", width)
}

// openCLIP adds an OpenCLIP text tower under p ("…model.") with a projection to proj.
func (b *ckptBuilder) openCLIP(p string, width, layers, proj int) {
	b.add(p+"token_embedding.weight", 0.02, 0, tinyVocab, width)
	b.add(p+"positional_embedding", 0.01, 0, 77, width)
	for i := 0; i < layers; i++ {
		q := fmt.Sprintf("%stransformer.resblocks.%d.", p, i)
		b.norm(q+"ln_1", width)
		b.add(q+"attn.in_proj_weight", 1/math.Sqrt(float64(width)), 0, 3*width, width)
		b.add(q+"attn.in_proj_bias", 0.05, 0, 3*width)
		b.linear(q+"attn.out_proj", width, width, true)
		b.norm(q+"ln_2", width)
		b.linear(q+"mlp.c_fc", 4*width, width, true)
		b.linear(q+"mlp.c_proj", width, 4*width, true)
	}
	b.norm(p+"ln_final", width)
	b.add(p+"text_projection", 1/math.Sqrt(float64(width)), 0, width, proj)
	b.add(p+"logit_scale", 0, 4.6, 1)
}

// write saves the tensors as a safetensors file.
func (b *ckptBuilder) write(t *testing.T, path string) {
	t.Helper()
	var es []safetensors.Entry
	for _, ts := range b.tensors {
		if f, ok := b.set[ts.name]; ok {
			for i := range ts.vals {
				ts.vals[i] = f(i)
			}
		}
		shape := make([]int64, len(ts.shape))
		for i, d := range ts.shape {
			shape[i] = int64(d)
		}
		var data []byte
		switch ts.dtype {
		case weights.F16:
			data = make([]byte, 2*len(ts.vals))
			if err := gpu.EncodeFloat32(gpu.F16, data, ts.vals); err != nil {
				t.Fatal(err)
			}
		default:
			data = make([]byte, 4*len(ts.vals))
			if err := gpu.EncodeFloat32(gpu.F32, data, ts.vals); err != nil {
				t.Fatal(err)
			}
		}
		es = append(es, safetensors.Entry{Name: ts.name, DType: ts.dtype, Shape: shape, Data: data})
	}
	safetensors.SortEntries(es)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := safetensors.Write(f, es, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// Tiny family checkpoints. Widths are multiples of 64 where the family fixes 64-wide
// attention heads; the GroupNorm(32) layers need multiples of 32.
const (
	tinyTextWidth = 64
	tinyProj      = 64
)

func tinySD1(seed uint64) *ckptBuilder {
	b := newBuilder(seed)
	b.unet(unetPrefix, unetSpec{mc: 32, mult: []int{1, 2}, nres: 1, depth: []int{1, 1}, midDepth: 1, ctx: tinyTextWidth})
	b.vae(vaePrefix, 32, []int{1, 2}, 1)
	b.hfCLIP("cond_stage_model.transformer.text_model.", tinyTextWidth, 2)
	return b
}

// tinySD2 has SD2's four levels and twelve output blocks, so that the v-prediction rule's
// tensor (output_blocks.11.1…norm1.bias) exists; vpred sets its spread above 0.09.
func tinySD2(seed uint64, vpred bool) *ckptBuilder {
	b := newBuilder(seed)
	b.unet(unetPrefix, unetSpec{mc: 64, mult: []int{1, 1, 1, 1}, nres: 2, depth: []int{1, 0, 0, 0}, midDepth: 1, ctx: tinyTextWidth, linear: true})
	b.vae(vaePrefix, 32, []int{1, 2}, 1)
	b.openCLIP("cond_stage_model.model.", tinyTextWidth, 3, tinyProj)
	spread := 0.01
	if vpred {
		spread = 0.3
	}
	r := rand.New(rand.NewPCG(seed, 2))
	b.set[sd2VTensor] = func(int) float32 { return float32(spread * r.NormFloat64()) }
	return b
}

func tinySDXL(seed uint64) *ckptBuilder {
	b := newBuilder(seed)
	b.unet(unetPrefix, unetSpec{mc: 32, mult: []int{1, 2}, nres: 1, depth: []int{0, 1}, midDepth: 1, ctx: 2 * tinyTextWidth, linear: true, adm: tinyProj + 6*256})
	b.vae(vaePrefix, 32, []int{1, 2}, 1)
	b.hfCLIP("conditioner.embedders.0.transformer.text_model.", tinyTextWidth, 3)
	b.openCLIP("conditioner.embedders.1.model.", tinyTextWidth, 3, tinyProj)
	return b
}

// writeTinyVocab writes an OpenAI-format vocabulary (byte symbols and a few merges) to
// dir and returns dir.
func writeTinyVocab(t *testing.T, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	merges := "#version: 0.2\nc a\nca t</w>\np h\no t\no </w>\nph ot\nphot o</w>\n"
	if err := os.WriteFile(filepath.Join(dir, "bpe_simple_vocab_16e6.txt"), []byte(merges), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func ckRuntime(t testing.TB) *gpu.Runtime {
	t.Helper()
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

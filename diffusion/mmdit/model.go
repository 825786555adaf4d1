package mmdit

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
)

// Model is an MMDiT (mmdit.py MMDiT), fields named after its state-dict keys. Load fills
// it and reads Config off the tensor shapes.
type Model struct {
	XEmbedder PatchEmbed `sd:"x_embedder"`
	// PosEmbed is the fixed sin-cos table (1, M², hidden) over an M×M patch grid; the
	// centre of it is cropped to each input's size. Without it the table is computed
	// for the input (get_2d_sincos_pos_embed_torch).
	PosEmbed  *gpu.Tensor `sd:"pos_embed,optional"`
	TEmbedder Embedder    `sd:"t_embedder"`
	// YEmbedder embeds the pooled text vector (adm_in_channels wide), when present.
	YEmbedder Embedder `sd:"y_embedder,optional"`
	// ContextEmbedder projects the text tokens (4096 wide) to the hidden size.
	ContextEmbedder Linear       `sd:"context_embedder,optional"`
	JointBlocks     []JointBlock `sd:"joint_blocks"`
	FinalLayer      FinalLayer   `sd:"final_layer"`

	Config Config
}

// Config is the network's configuration as comfy/model_detection.py derives it from
// the shapes, plus what the blocks' own shapes say.
type Config struct {
	InChannels, OutChannels, PatchSize int
	// Depth is the x_embedder's width / 64: ComfyUI's MMDiT has hidden size 64·depth and
	// depth heads of 64 channels.
	Depth, Hidden, Heads int
	// Blocks is the number of joint blocks (num_blocks; equal to Depth in SD3).
	Blocks int
	// ADMInChannels is the pooled vector's width (2048), 0 without a y_embedder.
	ADMInChannels int
	// ContextInDim is the context embedder's input width (4096), 0 without one.
	ContextInDim int
	// PosEmbedMaxSize is M of the M×M position table, 0 without one.
	PosEmbedMaxSize int
	// MLPHidden is the blocks' MLP width (mlp_ratio 4: 4·hidden).
	MLPHidden int
	// QKNormRMS: q and k of every head are RMS-normalised (SD3.5).
	QKNormRMS bool
	// XBlockSelfAttn lists the joint blocks whose x-block has a second, image-only
	// attention (SD3.5 medium: blocks 0–12).
	XBlockSelfAttn []int
}

// PatchEmbed is the patchifying convolution (kernel = stride = patch size).
type PatchEmbed struct {
	Proj Linear `sd:"proj"`
}

// Embedder is TimestepEmbedder / VectorEmbedder: Linear, SiLU, Linear.
type Embedder struct {
	In  Linear `sd:"mlp.0"`
	Out Linear `sd:"mlp.2"`
}

// JointBlock pairs the text (context) and image (x) halves of a block; they attend
// jointly, text first.
type JointBlock struct {
	Context Block `sd:"context_block"`
	X       Block `sd:"x_block"`
}

// Block is a DismantledBlock: adaLN modulation, attention and MLP. The context block of
// the last joint block is "pre-only": it has no output projection and no MLP (its
// tokens are not used after the attention), and two modulation vectors instead of six.
// An x-block with Attn2 (SD3.5 medium) has nine.
type Block struct {
	Attn  Attention `sd:"attn"`
	Attn2 Attention `sd:"attn2,optional"`
	MLP   MLP       `sd:"mlp,optional"`
	AdaLN Linear    `sd:"adaLN_modulation.1"`

	// mods is the number of modulation vectors: 2 (pre-only), 6, or 9 (with Attn2).
	mods int
}

// Attention is SelfAttention: fused q/k/v, optional per-head RMS norms of q and k, and
// the output projection (absent in a pre-only block).
type Attention struct {
	QKV  Linear      `sd:"qkv"`
	Proj Linear      `sd:"proj,optional"`
	LnQ  *gpu.Tensor `sd:"ln_q.weight,optional"`
	LnK  *gpu.Tensor `sd:"ln_k.weight,optional"`
}

// MLP is fc1, GELU (tanh), fc2.
type MLP struct {
	FC1 Linear `sd:"fc1"`
	FC2 Linear `sd:"fc2"`
}

// FinalLayer is the final adaLN modulation (shift, scale) and the projection to patch
// values.
type FinalLayer struct {
	AdaLN  Linear `sd:"adaLN_modulation.1"`
	Linear Linear `sd:"linear"`
}

// Linear is a torch.nn.Linear (or the patch convolution): the weight in its stored dtype,
// an optional F32 bias, and in a scaled-fp8 file the F32 scalar the weight is multiplied
// by (the patch convolution, a Conv2d in ComfyUI, never applies one).
type Linear struct {
	Weight      *gpu.Tensor `sd:"weight"`
	Bias        *gpu.Tensor `sd:"bias,optional"`
	ScaleWeight *gpu.Tensor `sd:"scale_weight,optional"`
}

func (l *Linear) forward(rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error) {
	if l.ScaleWeight == nil {
		return gpu.Linear(rt, x, l.Weight, l.Bias)
	}
	// (x·Wᵀ)·s equals x·(W·s)ᵀ, which scaled_fp8_ops computes, up to rounding.
	y, err := gpu.Linear(rt, x, l.Weight, nil)
	if err != nil {
		return nil, err
	}
	ys, err := gpu.Mul(rt, y, l.ScaleWeight)
	y.Release()
	if err != nil || l.Bias == nil {
		return ys, err
	}
	out, err := gpu.Add(rt, ys, l.Bias)
	ys.Release()
	return out, err
}

// LinearParam reports whether rest (a key after the prefix) is a parameter of one of the
// network's linear layers, the ones a scaled-fp8 file's model builds in float8: every
// weight and bias but the RMS q/k norms', the patch convolution's and the position
// table.
func LinearParam(rest string) bool {
	return (strings.HasSuffix(rest, ".weight") || strings.HasSuffix(rest, ".bias")) &&
		!strings.Contains(rest, ".ln_q.") && !strings.Contains(rest, ".ln_k.") &&
		!strings.HasPrefix(rest, "x_embedder.proj.")
}

// Probe is the key (after the prefix) whose presence marks an MMDiT, as
// detect_unet_config looks for it.
const Probe = "joint_blocks.0.context_block.attn.qkv.weight"

// Load binds an MMDiT under prefix ("model.diffusion_model." in checkpoints, "" in
// diffusion_models files) from src. Weights stay in their stored dtype (F32, F16, BF16,
// F8, GGUF blocks); 1-D tensors become F32. A scaled-fp8 file's linear layers are built
// as ComfyUI builds them (statedict.NewScaledFP8Source). The report lists keys under
// prefix that no field used.
func Load(rt *gpu.Runtime, src statedict.Source, prefix string) (*Model, *statedict.Report, error) {
	keys := src.Keys()
	if !slices.Contains(keys, prefix+Probe) {
		return nil, nil, fmt.Errorf("mmdit: no %s%s: not an MMDiT", prefix, Probe)
	}
	for _, k := range keys {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		switch {
		case strings.HasPrefix(rest, "context_processor."):
			return nil, nil, errors.New("mmdit: MMDiTs with a context processor are not SD3 models and are not implemented")
		case rest == "register":
			return nil, nil, errors.New("mmdit: MMDiTs with register tokens are not SD3 models and are not implemented")
		}
	}
	f8, scaled, err := statedict.ScaledFP8(src, prefix)
	if err != nil {
		return nil, nil, fmt.Errorf("mmdit: %w", err)
	}
	if scaled {
		src = statedict.NewScaledFP8Source(rt, src, f8, func(key string) bool {
			rest, ok := strings.CutPrefix(key, prefix)
			return ok && LinearParam(rest)
		})
	}
	m := &Model{}
	rep, err := statedict.Bind(rt, src, prefix, m)
	if err != nil {
		m.Release()
		return nil, rep, fmt.Errorf("mmdit: %w", err)
	}
	if err := m.configure(); err != nil {
		m.Release()
		return nil, rep, err
	}
	return m, rep, nil
}

// configure derives Config from the bound shapes (detect_unet_config's rules) and
// checks every tensor against it.
func (m *Model) configure() error {
	c := &m.Config
	w := m.XEmbedder.Proj.Weight
	if w.Rank() != 4 || w.Dim(2) != w.Dim(3) {
		return fmt.Errorf("mmdit: x_embedder.proj.weight %v is not a square patch convolution (hidden, C, p, p)", w.Shape())
	}
	c.Hidden, c.InChannels, c.PatchSize = w.Dim(0), w.Dim(1), w.Dim(2)
	c.Depth = c.Hidden / 64
	if c.Depth == 0 || c.Hidden != 64*c.Depth {
		return fmt.Errorf("mmdit: hidden size %d is not a multiple of 64 (MMDiT uses 64-wide heads, one per 64 channels)", c.Hidden)
	}
	c.Heads = c.Depth
	c.Blocks = len(m.JointBlocks)
	if c.Blocks == 0 {
		return errors.New("mmdit: no joint blocks")
	}
	p2 := c.PatchSize * c.PatchSize
	fl := m.FinalLayer.Linear.Weight
	if fl.Rank() != 2 || fl.Dim(0)%p2 != 0 {
		return fmt.Errorf("mmdit: final_layer.linear.weight %v does not hold %d×%d patches", fl.Shape(), c.PatchSize, c.PatchSize)
	}
	c.OutChannels = fl.Dim(0) / p2
	if m.YEmbedder.In.Weight != nil {
		c.ADMInChannels = m.YEmbedder.In.Weight.Dim(1)
	}
	if m.ContextEmbedder.Weight != nil {
		c.ContextInDim = m.ContextEmbedder.Weight.Dim(1)
	}
	if m.PosEmbed != nil {
		s := m.PosEmbed.Shape()
		if len(s) != 3 || s[0] != 1 || s[2] != c.Hidden {
			return fmt.Errorf("mmdit: pos_embed %v is not (1, patches, %d)", s, c.Hidden)
		}
		c.PosEmbedMaxSize = int(math.Round(math.Sqrt(float64(s[1]))))
		if c.PosEmbedMaxSize*c.PosEmbedMaxSize != s[1] {
			// ComfyUI rounds the root and then fails to view the table as M×M.
			return fmt.Errorf("mmdit: pos_embed holds %d patches, not a square grid", s[1])
		}
	}
	c.QKNormRMS = m.JointBlocks[0].Context.Attn.LnQ != nil
	c.XBlockSelfAttn = nil
	for i := range m.JointBlocks {
		if m.JointBlocks[i].X.Attn2.QKV.Weight != nil {
			c.XBlockSelfAttn = append(c.XBlockSelfAttn, i)
		}
	}
	if mlp := m.JointBlocks[0].X.MLP.FC1.Weight; mlp != nil {
		c.MLPHidden = mlp.Dim(0)
	}
	return m.check()
}

// check verifies every tensor's shape against the configuration, naming the first
// that disagrees.
func (m *Model) check() error {
	c := &m.Config
	h := c.Hidden
	var errs []error
	lin := func(name string, l *Linear, out, in int, bias bool) {
		if l.Weight == nil {
			errs = append(errs, fmt.Errorf("%s.weight is missing", name))
			return
		}
		if s := l.Weight.Shape(); len(s) != 2 || s[0] != out || s[1] != in {
			errs = append(errs, fmt.Errorf("%s.weight is %v, want [%d %d]", name, s, out, in))
		}
		if bias && l.Bias == nil {
			errs = append(errs, fmt.Errorf("%s.bias is missing", name))
		}
		if l.Bias != nil && (l.Bias.Rank() != 1 || l.Bias.Dim(0) != out) {
			errs = append(errs, fmt.Errorf("%s.bias is %v, want [%d]", name, l.Bias.Shape(), out))
		}
	}
	vec := func(name string, t *gpu.Tensor, n int) {
		if t != nil && (t.Rank() != 1 || t.Dim(0) != n) {
			errs = append(errs, fmt.Errorf("%s is %v, want [%d]", name, t.Shape(), n))
		}
	}
	if b := m.XEmbedder.Proj.Bias; b == nil || b.Rank() != 1 || b.Dim(0) != h {
		errs = append(errs, fmt.Errorf("x_embedder.proj.bias must be [%d]", h))
	}
	lin("t_embedder.mlp.0", &m.TEmbedder.In, h, 256, true)
	lin("t_embedder.mlp.2", &m.TEmbedder.Out, h, h, true)
	if c.ADMInChannels > 0 {
		lin("y_embedder.mlp.0", &m.YEmbedder.In, h, c.ADMInChannels, true)
		lin("y_embedder.mlp.2", &m.YEmbedder.Out, h, h, true)
	}
	if c.ContextInDim > 0 {
		lin("context_embedder", &m.ContextEmbedder, h, c.ContextInDim, true)
	}
	lin("final_layer.adaLN_modulation.1", &m.FinalLayer.AdaLN, 2*h, h, true)
	lin("final_layer.linear", &m.FinalLayer.Linear, c.OutChannels*c.PatchSize*c.PatchSize, h, true)
	if c.MLPHidden == 0 {
		errs = append(errs, errors.New("joint_blocks.0.x_block.mlp.fc1.weight is missing"))
	}
	for i := range m.JointBlocks {
		jb := &m.JointBlocks[i]
		for _, part := range []struct {
			name string
			b    *Block
			x    bool
		}{{"context_block", &jb.Context, false}, {"x_block", &jb.X, true}} {
			p := "joint_blocks." + strconv.Itoa(i) + "." + part.name
			b := part.b
			if b.AdaLN.Weight == nil || b.AdaLN.Weight.Rank() != 2 || b.AdaLN.Weight.Dim(0)%h != 0 {
				errs = append(errs, fmt.Errorf("%s.adaLN_modulation.1.weight is missing or not a multiple of %d rows", p, h))
				continue
			}
			b.mods = b.AdaLN.Weight.Dim(0) / h
			preOnly := b.MLP.FC1.Weight == nil
			want := 6
			switch {
			case b.Attn2.QKV.Weight != nil:
				want = 9
			case preOnly:
				want = 2
			}
			if part.x && preOnly {
				errs = append(errs, fmt.Errorf("%s has no MLP (only the last context block may be pre-only)", p))
			}
			if !part.x && preOnly && i != len(m.JointBlocks)-1 {
				errs = append(errs, fmt.Errorf("%s has no MLP but is not the last block", p))
			}
			if b.mods != want {
				// 4 or 1 would be scale_mod_only, which no SD3 model uses.
				errs = append(errs, fmt.Errorf("%s.adaLN_modulation.1 gives %d vectors, want %d", p, b.mods, want))
			}
			lin(p+".adaLN_modulation.1", &b.AdaLN, want*h, h, true)
			attn := func(name string, a *Attention, proj bool) {
				lin(name+".qkv", &a.QKV, 3*h, h, false)
				if proj {
					lin(name+".proj", &a.Proj, h, h, true)
				} else if a.Proj.Weight != nil {
					errs = append(errs, fmt.Errorf("%s.proj is present in a pre-only block", name))
				}
				if (a.LnQ != nil) != c.QKNormRMS || (a.LnK != nil) != c.QKNormRMS {
					errs = append(errs, fmt.Errorf("%s: q/k norms present in some blocks only", name))
				}
				vec(name+".ln_q.weight", a.LnQ, 64)
				vec(name+".ln_k.weight", a.LnK, 64)
			}
			attn(p+".attn", &b.Attn, !preOnly)
			if b.Attn2.QKV.Weight != nil {
				attn(p+".attn2", &b.Attn2, true)
			}
			if !preOnly {
				lin(p+".mlp.fc1", &b.MLP.FC1, c.MLPHidden, h, true)
				lin(p+".mlp.fc2", &b.MLP.FC2, h, c.MLPHidden, true)
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("mmdit: %w", errors.Join(errs...))
	}
	return nil
}

// Release frees the model's tensors (the mapped file stays with its owner).
func (m *Model) Release() {
	rel := func(ts ...*gpu.Tensor) {
		for _, t := range ts {
			if t != nil {
				t.Release()
			}
		}
	}
	lin := func(ls ...*Linear) {
		for _, l := range ls {
			rel(l.Weight, l.Bias, l.ScaleWeight)
		}
	}
	lin(&m.XEmbedder.Proj, &m.TEmbedder.In, &m.TEmbedder.Out, &m.YEmbedder.In, &m.YEmbedder.Out,
		&m.ContextEmbedder, &m.FinalLayer.AdaLN, &m.FinalLayer.Linear)
	rel(m.PosEmbed)
	for i := range m.JointBlocks {
		for _, b := range []*Block{&m.JointBlocks[i].Context, &m.JointBlocks[i].X} {
			lin(&b.Attn.QKV, &b.Attn.Proj, &b.Attn2.QKV, &b.Attn2.Proj, &b.MLP.FC1, &b.MLP.FC2, &b.AdaLN)
			rel(b.Attn.LnQ, b.Attn.LnK, b.Attn2.LnQ, b.Attn2.LnK)
		}
	}
	*m = Model{}
}

package flux

import (
	"fmt"
	"slices"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/detect"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// Model is comfy.ldm.flux.model.Flux with its weights.
type Model struct {
	// Module records the prefix the model was loaded from, the root of its layers' keys.
	nn.Module
	ImgIn      nn.Linear   `sd:"img_in"`
	TimeIn     MLPEmbedder `sd:"time_in"`
	VectorIn   MLPEmbedder `sd:"vector_in"`
	GuidanceIn MLPEmbedder `sd:"guidance_in,optional"` // dev only; schnell has none
	TxtIn      nn.Linear   `sd:"txt_in"`

	DoubleBlocks []DoubleBlock `sd:"double_blocks"`
	SingleBlocks []SingleBlock `sd:"single_blocks"`
	FinalLayer   LastLayer     `sd:"final_layer"`

	// Config is read from the tensor shapes (and Options for what shapes cannot tell).
	Config detect.FluxConfig
	// MLPHidden is the width of the MLPs: int(hidden·mlp_ratio).
	MLPHidden int
	// Unused lists the keys under the prefix that no field took (logged by loaders).
	Unused []string

	file *tensorfile.File // the mapped file the weights alias, when LoadFile opened it
}

// Options gives what a Flux file's shapes do not say.
type Options struct {
	// AxesDim splits a head's width into the rotary axes (index, row, column). Nil
	// means ComfyUI's [16 56 56], which needs 128-wide heads (every released Flux).
	AxesDim []int
	// Theta is the rotary base (0: 10000).
	Theta int
	// PatchSize is the latent patch edge (0: 2, the only size ComfyUI's Flux unpatchifies).
	PatchSize int
	// WeightDType is UNETLoader's weight_dtype: "" or "default" keeps the stored dtypes;
	// "fp8_e4m3fn", "fp8_e4m3fn_fast" or "fp8_e5m2" store every float tensor in that
	// float8 type, as ComfyUI builds the model in it (one-dimensional ones are then
	// widened back to F32 for the kernels, keeping the float8 rounding).
	WeightDType string
}

// defaultAxesDim is ComfyUI's axes_dim for every Flux it detects.
var defaultAxesDim = []int{16, 56, 56}

// Load binds a Flux transformer from the tensors under prefix ("" for a diffusion-model
// or ComfyUI-GGUF file, "model.diffusion_model." in a single-file checkpoint) and
// reads its configuration from their shapes.
func Load(rt *gpu.Runtime, src statedict.Source, prefix string, opts Options) (*Model, error) {
	f8, scaled, err := statedict.ScaledFP8(src, prefix)
	if err != nil {
		return nil, fmt.Errorf("flux: %w", err)
	}
	// Every weight and bias of a Flux is a linear layer's; the norms' are ".scale". In a
	// scaled-fp8 file ComfyUI builds the linear layers in the file's float8 type whatever
	// the weight_dtype, which then applies to the norms alone.
	linear := func(key string) bool {
		return strings.HasPrefix(key, prefix) && (strings.HasSuffix(key, ".weight") || strings.HasSuffix(key, ".bias"))
	}
	keep := func(key string) bool { return scaled && (linear(key) || statedict.ScaledFP8Key(key)) }
	if src, err = castSource(rt, src, opts.WeightDType, keep); err != nil {
		return nil, err
	}
	if scaled {
		src = statedict.NewScaledFP8Source(rt, src, f8, linear)
	}
	m := &Model{}
	rep, err := statedict.Bind(rt, src, prefix, m)
	if err != nil {
		return nil, fmt.Errorf("flux: %w", err)
	}
	m.Unused = rep.Unused
	if err := m.configure(opts); err != nil {
		return nil, err
	}
	return m, nil
}

// Close releases the file LoadFile mapped; the model must not be used afterwards. It is
// a no-op for a model bound from a caller's source.
func (m *Model) Close() error {
	if m.file == nil {
		return nil
	}
	err := m.file.Close()
	m.file = nil
	return err
}

// Guidance reports whether the model takes a guidance value (Flux dev, not schnell).
func (m *Model) Guidance() bool { return m.GuidanceIn.In.Weight != nil }

// configure derives the configuration from the bound shapes and checks every tensor
// against it, so that a file of the wrong shape fails here and not in a kernel.
func (m *Model) configure(opts Options) error {
	c := detect.FluxConfig{PatchSize: opts.PatchSize, Theta: opts.Theta, AxesDim: slices.Clone(opts.AxesDim)}
	if c.PatchSize == 0 {
		c.PatchSize = 2
	}
	if c.Theta == 0 {
		c.Theta = 10000
	}
	if c.PatchSize < 1 || c.Theta < 1 {
		return fmt.Errorf("flux: patch size %d and theta %d must be positive", c.PatchSize, c.Theta)
	}
	if len(m.DoubleBlocks) == 0 {
		return fmt.Errorf("flux: no double_blocks.0.* tensors")
	}
	p2 := c.PatchSize * c.PatchSize
	for _, w := range []struct {
		name string
		t    *gpu.Tensor
	}{{"img_in.weight", m.ImgIn.Weight}, {"final_layer.linear.weight", m.FinalLayer.Linear.Weight},
		{"txt_in.weight", m.TxtIn.Weight}, {"vector_in.in_layer.weight", m.VectorIn.In.Weight},
		{"double_blocks.0.img_mlp.0.weight", m.DoubleBlocks[0].ImgMLP.In.Weight}} {
		if w.t.Rank() != 2 {
			return fmt.Errorf("flux: %s has shape %v, want a matrix", w.name, w.t.Shape())
		}
	}
	c.HiddenSize = m.ImgIn.Weight.Dim(0)
	if m.ImgIn.Weight.Dim(1)%p2 != 0 || m.FinalLayer.Linear.Weight.Dim(0)%p2 != 0 {
		return fmt.Errorf("flux: img_in %v and final_layer.linear %v are not whole %d×%d patches",
			m.ImgIn.Weight.Shape(), m.FinalLayer.Linear.Weight.Shape(), c.PatchSize, c.PatchSize)
	}
	c.InChannels = m.ImgIn.Weight.Dim(1) / p2
	c.OutChannels = m.FinalLayer.Linear.Weight.Dim(0) / p2
	q := m.DoubleBlocks[0].ImgAttn.Norm.Query
	if q.Rank() != 1 || q.Dim(0) == 0 || c.HiddenSize%q.Dim(0) != 0 {
		return fmt.Errorf("flux: query norm scale %v does not divide the hidden size %d into heads", q.Shape(), c.HiddenSize)
	}
	headDim := q.Dim(0)
	c.NumHeads = c.HiddenSize / headDim
	c.Depth, c.DepthSingleBlocks = len(m.DoubleBlocks), len(m.SingleBlocks)
	c.ContextInDim = m.TxtIn.Weight.Dim(1)
	c.VecInDim = m.VectorIn.In.Weight.Dim(1)
	m.MLPHidden = m.DoubleBlocks[0].ImgMLP.In.Weight.Dim(0)
	c.MLPRatio = float64(m.MLPHidden) / float64(c.HiddenSize)
	c.QKVBias = m.DoubleBlocks[0].ImgAttn.QKV.Bias != nil
	c.GuidanceEmbed = m.Guidance()
	if c.AxesDim == nil {
		if headDim != 128 {
			return fmt.Errorf("flux: heads are %d wide: give Options.AxesDim (ComfyUI's [16 56 56] fits 128-wide heads)", headDim)
		}
		c.AxesDim = slices.Clone(defaultAxesDim)
	}
	sum := 0
	for _, d := range c.AxesDim {
		if d <= 0 || d%2 != 0 {
			return fmt.Errorf("flux: rope axes %v must be positive and even", c.AxesDim)
		}
		sum += d
	}
	if sum != headDim {
		return fmt.Errorf("flux: rope axes %v sum to %d, the heads are %d wide", c.AxesDim, sum, headDim)
	}
	m.Config = c
	return m.checkShapes(headDim)
}

// checkShapes compares every bound tensor with the configuration.
func (m *Model) checkShapes(headDim int) error {
	c := m.Config
	h, mlp := c.HiddenSize, m.MLPHidden
	var errs []string
	lin := func(name string, l *nn.Linear, rows, cols int) {
		if l.Weight == nil {
			return
		}
		if l.Weight.Rank() != 2 || l.Weight.Dim(0) != rows || l.Weight.Dim(1) != cols {
			errs = append(errs, fmt.Sprintf("%s.weight is %v, want [%d %d]", name, l.Weight.Shape(), rows, cols))
		}
		if l.Bias != nil && (l.Bias.Rank() != 1 || l.Bias.Dim(0) != rows) {
			errs = append(errs, fmt.Sprintf("%s.bias is %v, want [%d]", name, l.Bias.Shape(), rows))
		}
	}
	norm := func(name string, n *QKNorm) {
		for _, s := range []struct {
			key string
			t   *gpu.Tensor
		}{{"query_norm", n.Query}, {"key_norm", n.Key}} {
			if s.t.Rank() != 1 || s.t.Dim(0) != headDim {
				errs = append(errs, fmt.Sprintf("%s.%s.scale is %v, want [%d]", name, s.key, s.t.Shape(), headDim))
			}
		}
	}
	p2 := c.PatchSize * c.PatchSize
	lin("img_in", &m.ImgIn, h, c.InChannels*p2)
	lin("time_in.in_layer", &m.TimeIn.In, h, timeEmbedDim)
	lin("time_in.out_layer", &m.TimeIn.Out, h, h)
	lin("vector_in.in_layer", &m.VectorIn.In, h, c.VecInDim)
	lin("vector_in.out_layer", &m.VectorIn.Out, h, h)
	if c.GuidanceEmbed {
		if m.GuidanceIn.Out.Weight == nil {
			errs = append(errs, "guidance_in.out_layer.weight is missing")
		}
		lin("guidance_in.in_layer", &m.GuidanceIn.In, h, timeEmbedDim)
		lin("guidance_in.out_layer", &m.GuidanceIn.Out, h, h)
	}
	lin("txt_in", &m.TxtIn, h, c.ContextInDim)
	for i := range m.DoubleBlocks {
		b := &m.DoubleBlocks[i]
		for _, s := range []struct {
			name string
			mod  *Modulation
			attn *SelfAttention
			mlp  *MLP
		}{{"img", &b.ImgMod, &b.ImgAttn, &b.ImgMLP}, {"txt", &b.TxtMod, &b.TxtAttn, &b.TxtMLP}} {
			p := fmt.Sprintf("double_blocks.%d.%s_", i, s.name)
			lin(p+"mod.lin", &s.mod.Lin, 6*h, h)
			lin(p+"attn.qkv", &s.attn.QKV, 3*h, h)
			norm(p+"attn.norm", &s.attn.Norm)
			lin(p+"attn.proj", &s.attn.Proj, h, h)
			lin(p+"mlp.0", &s.mlp.In, mlp, h)
			lin(p+"mlp.2", &s.mlp.Out, h, mlp)
		}
	}
	for i := range m.SingleBlocks {
		b := &m.SingleBlocks[i]
		p := fmt.Sprintf("single_blocks.%d.", i)
		lin(p+"linear1", &b.Linear1, 3*h+mlp, h)
		lin(p+"linear2", &b.Linear2, h, h+mlp)
		norm(p+"norm", &b.Norm)
		lin(p+"modulation.lin", &b.Modulation.Lin, 3*h, h)
	}
	lin("final_layer.adaLN_modulation.1", &m.FinalLayer.AdaLN, 2*h, h)
	lin("final_layer.linear", &m.FinalLayer.Linear, c.OutChannels*p2, h)
	if len(errs) > 0 {
		shown := errs
		if len(shown) > 4 {
			shown = append(shown[:4:4], fmt.Sprintf("and %d more", len(errs)-4))
		}
		return fmt.Errorf("flux: tensors do not fit hidden size %d, %d heads, MLP %d: %s", h, c.NumHeads, mlp, strings.Join(shown, "; "))
	}
	return nil
}

// timeEmbedDim is the width of the sinusoidal timestep and guidance embeddings.
const timeEmbedDim = 256

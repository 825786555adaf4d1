package nn

import (
	"fmt"

	"github.com/forgeflow/forgeflow/gpu"
)

// Module records the state-dict prefix statedict.Bind bound a struct at ("…to_q.",
// ending in a dot, or "" for a root bound without a prefix). Every layer type embeds
// it; model roots may embed it too, so that a layer's key relative to its model is
// layer.Prefix() without the root's.
type Module struct {
	prefix string
	bound  bool
}

// BoundAt implements statedict.Keyed.
func (m *Module) BoundAt(prefix string) { m.prefix, m.bound = prefix, true }

// Prefix returns the key prefix the struct was bound at; ok is false for a struct
// built by hand (it has no keys).
func (m *Module) Prefix() (prefix string, ok bool) { return m.prefix, m.bound }

// Linear is torch.nn.Linear: the weight (out, in) in its stored dtype (F32, F16, BF16,
// F8, GGUF blocks), an optional F32 bias.
type Linear struct {
	Module
	Weight *gpu.Tensor `sd:"weight"`
	Bias   *gpu.Tensor `sd:"bias,optional"`
	// ScaleWeight is the one-element factor of a scaled-fp8 weight (comfy/ops.py
	// scaled_fp8_ops, which multiplies the weight by it before use); nil for none.
	ScaleWeight *gpu.Tensor `sd:"scale_weight,optional"`
	// Patches are weight updates added beside the product at run time.
	Patches []Patch
}

// Forward returns x·(W·s)ᵀ + b + Σ patches(x) for x (…, in), as (…, out) F32.
func (l *Linear) Forward(rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error) {
	if l.ScaleWeight == nil {
		y, err := gpu.Linear(rt, x, l.Weight, l.Bias)
		if err != nil {
			return nil, err
		}
		return addPatches(rt, y, l.Patches, func(p *Patch) (*gpu.Tensor, error) { return p.linear(rt, x) })
	}
	s, err := scalar(rt, l.ScaleWeight)
	if err != nil {
		return nil, fmt.Errorf("nn: %sscale_weight: %w", l.prefix, err)
	}
	y, err := gpu.Linear(rt, x, l.Weight, nil)
	if err != nil {
		s.Release()
		return nil, err
	}
	if s != nil {
		// (x·Wᵀ)·s equals x·(W·s)ᵀ, which scaled_fp8_ops computes, up to rounding.
		y, err = consume(y, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Mul(rt, t, s) })
		s.Release()
		if err != nil {
			return nil, err
		}
	}
	if l.Bias != nil {
		if y, err = consume(y, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Add(rt, t, l.Bias) }); err != nil {
			return nil, err
		}
	}
	return addPatches(rt, y, l.Patches, func(p *Patch) (*gpu.Tensor, error) { return p.linear(rt, x) })
}

// AsConv returns the layer as a 1×1 convolution, for weights stored either way (the
// UNet's proj_in/proj_out are 1×1 convs in SD1.x and linears in SD2.x/SDXL); the
// weight must be (out, in, 1, 1).
func (l *Linear) AsConv() Conv {
	return Conv{Module: l.Module, Weight: l.Weight, Bias: l.Bias, Patches: l.Patches}
}

// scalar returns the value of a one-element tensor as a (1) F32 tensor, nil for 1.
func scalar(rt *gpu.Runtime, t *gpu.Tensor) (*gpu.Tensor, error) {
	v, err := t.Float32()
	if err != nil {
		return nil, err
	}
	if len(v) != 1 {
		return nil, fmt.Errorf("%d values, want 1", len(v))
	}
	if v[0] == 1 {
		return nil, nil
	}
	return rt.FromFloat32(v, 1)
}

// Conv is torch.nn.Conv2d: the weight (out, in, kh, kw) in a float dtype, an F32 bias.
type Conv struct {
	Module
	Weight *gpu.Tensor `sd:"weight"`
	Bias   *gpu.Tensor `sd:"bias"`
	// Patches are weight updates added beside the convolution at run time.
	Patches []Patch
}

// Forward convolves x (N, in, H, W) with the padding and stride of p.
func (c *Conv) Forward(rt *gpu.Runtime, x *gpu.Tensor, p gpu.ConvParams) (*gpu.Tensor, error) {
	y, err := gpu.Conv2DPadded(rt, x, c.Weight, c.Bias, p)
	if err != nil {
		return nil, err
	}
	return addPatches(rt, y, c.Patches, func(pt *Patch) (*gpu.Tensor, error) { return pt.conv(rt, x, p) })
}

// Same convolves with the given stride and kernel/2 zeros on every side (3×3 pad 1,
// 1×1 pad 0): the size-keeping convolution of every UNet and VAE block.
func (c *Conv) Same(rt *gpu.Runtime, x *gpu.Tensor, stride int) (*gpu.Tensor, error) {
	pad := c.Weight.Dim(2) / 2
	return c.Forward(rt, x, gpu.ConvParams{Stride: stride, Top: pad, Bottom: pad, Left: pad, Right: pad})
}

// Norm is the affine parameters of a GroupNorm or LayerNorm, F32.
type Norm struct {
	Module
	Weight *gpu.Tensor `sd:"weight"`
	Bias   *gpu.Tensor `sd:"bias"`
}

// Group is GroupNorm(groups) of x (N, C, …).
func (n *Norm) Group(rt *gpu.Runtime, x *gpu.Tensor, groups int, eps float64) (*gpu.Tensor, error) {
	return gpu.GroupNorm(rt, x, groups, n.Weight, n.Bias, eps)
}

// GroupSiLU is SiLU(GroupNorm(groups)(x)): the norm and activation that open every UNet
// and VAE residual block and close their trunks.
func (n *Norm) GroupSiLU(rt *gpu.Runtime, x *gpu.Tensor, groups int, eps float64) (*gpu.Tensor, error) {
	return gpu.GroupNormSiLU(rt, x, groups, n.Weight, n.Bias, eps)
}

// Layer is LayerNorm over the last dimension of x.
func (n *Norm) Layer(rt *gpu.Runtime, x *gpu.Tensor, eps float64) (*gpu.Tensor, error) {
	return gpu.LayerNorm(rt, x, n.Weight, n.Bias, eps)
}

// RMSNorm is a root-mean-square norm's scale (T5's T5LayerNorm), F32.
type RMSNorm struct {
	Module
	Weight *gpu.Tensor `sd:"weight"`
}

// Forward normalises the last dimension of x.
func (n *RMSNorm) Forward(rt *gpu.Runtime, x *gpu.Tensor, eps float64) (*gpu.Tensor, error) {
	return gpu.RMSNorm(rt, x, n.Weight, eps)
}

// consume applies f to x and releases x.
func consume(x *gpu.Tensor, f func(*gpu.Tensor) (*gpu.Tensor, error)) (*gpu.Tensor, error) {
	y, err := f(x)
	x.Release()
	return y, err
}

// Package vae is Stable Diffusion's AutoencoderKL (ComfyUI's
// comfy/ldm/modules/diffusionmodules/model.py Encoder/Decoder and
// comfy/ldm/models/autoencoder.py), its Go types named after the checkpoint keys under
// "first_stage_model.": encode images to latents (posterior mean) and decode latents to
// images.
package vae

import (
	"errors"
	"fmt"
	"math"

	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/gpu"
)

// groupNorm is GroupNorm(32, C, eps 1e-6), followed by SiLU when silu is set.
func groupNorm(rt *gpu.Runtime, n *nn.Norm, x *gpu.Tensor, silu bool) (*gpu.Tensor, error) {
	if silu {
		return n.GroupSiLU(rt, x, 32, 1e-6)
	}
	return n.Group(rt, x, 32, 1e-6)
}

// ResBlock is ResnetBlock: two norm-SiLU-conv stages and a 1×1 shortcut when the channel
// count changes.
type ResBlock struct {
	Norm1 nn.Norm `sd:"norm1"`
	Conv1 nn.Conv `sd:"conv1"`
	Norm2 nn.Norm `sd:"norm2"`
	Conv2 nn.Conv `sd:"conv2"`
	// Shortcut is the 1×1 conv of a block that changes the channel count (zero
	// otherwise).
	Shortcut nn.Conv `sd:"nin_shortcut,optional"`
}

func (b *ResBlock) forward(rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error) {
	h, err := chain(rt, x,
		func(t *gpu.Tensor) (*gpu.Tensor, error) { return groupNorm(rt, &b.Norm1, t, true) },
		func(t *gpu.Tensor) (*gpu.Tensor, error) { return b.Conv1.Same(rt, t, 1) },
		func(t *gpu.Tensor) (*gpu.Tensor, error) { return groupNorm(rt, &b.Norm2, t, true) },
		func(t *gpu.Tensor) (*gpu.Tensor, error) { return b.Conv2.Same(rt, t, 1) },
	)
	if err != nil {
		return nil, err
	}
	defer h.Release()
	skip := x
	if b.Shortcut.Weight != nil {
		if skip, err = b.Shortcut.Same(rt, x, 1); err != nil {
			return nil, err
		}
		defer skip.Release()
	}
	return gpu.Add(rt, skip, h)
}

// AttnBlock is the single-head spatial self-attention of the mid block, with 1×1
// convolutions for q, k, v and the output projection.
type AttnBlock struct {
	Norm nn.Norm `sd:"norm"`
	Q    nn.Conv `sd:"q"`
	K    nn.Conv `sd:"k"`
	V    nn.Conv `sd:"v"`
	Proj nn.Conv `sd:"proj_out"`
}

func (a *AttnBlock) forward(rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error) {
	n, c, h, w := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
	hn, err := groupNorm(rt, &a.Norm, x, false)
	if err != nil {
		return nil, err
	}
	defer hn.Release()
	// (N, C, H, W) → (N, 1, H·W, C) as a strided view.
	tokens := func(conv *nn.Conv) (*gpu.Tensor, error) {
		t, err := conv.Same(rt, hn, 1)
		if err != nil {
			return nil, err
		}
		r, err := gpu.Reshape(rt, t, n, 1, c, h*w)
		t.Release()
		if err != nil {
			return nil, err
		}
		p, err := gpu.Permute(r, 0, 1, 3, 2)
		r.Release()
		if err != nil {
			return nil, err
		}
		// attention wants a contiguous last dimension
		cp, err := gpu.Contiguous(rt, p)
		p.Release()
		return cp, err
	}
	q, err := tokens(&a.Q)
	if err != nil {
		return nil, err
	}
	defer q.Release()
	k, err := tokens(&a.K)
	if err != nil {
		return nil, err
	}
	defer k.Release()
	v, err := tokens(&a.V)
	if err != nil {
		return nil, err
	}
	defer v.Release()
	o, err := gpu.Attention(rt, q, k, v, nil, gpu.AttentionParams{Scale: 1 / math.Sqrt(float64(c))})
	if err != nil {
		return nil, err
	}
	op, err := gpu.Permute(o, 0, 1, 3, 2) // (N, 1, C, HW)
	o.Release()
	if err != nil {
		return nil, err
	}
	img, err := gpu.Reshape(rt, op, n, c, h, w)
	op.Release()
	if err != nil {
		return nil, err
	}
	proj, err := a.Proj.Same(rt, img, 1)
	img.Release()
	if err != nil {
		return nil, err
	}
	defer proj.Release()
	return gpu.Add(rt, x, proj)
}

// Level is one resolution level of the encoder or decoder.
type Level struct {
	Blocks []ResBlock  `sd:"block"`
	Attn   []AttnBlock `sd:"attn"`
	Down   struct {
		Conv nn.Conv `sd:"conv"`
	} `sd:"downsample,optional"`
	Up struct {
		Conv nn.Conv `sd:"conv"`
	} `sd:"upsample,optional"`
}

// Mid is the middle of the encoder and the decoder.
type Mid struct {
	Block1 ResBlock  `sd:"block_1"`
	Attn1  AttnBlock `sd:"attn_1"`
	Block2 ResBlock  `sd:"block_2"`
}

func (m *Mid) forward(rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error) {
	return chain(rt, x, func(t *gpu.Tensor) (*gpu.Tensor, error) { return m.Block1.forward(rt, t) },
		func(t *gpu.Tensor) (*gpu.Tensor, error) { return m.Attn1.forward(rt, t) },
		func(t *gpu.Tensor) (*gpu.Tensor, error) { return m.Block2.forward(rt, t) })
}

// Encoder maps an image in [−1, 1] to the latent distribution's moments.
type Encoder struct {
	ConvIn  nn.Conv `sd:"conv_in"`
	Down    []Level `sd:"down"`
	Mid     Mid     `sd:"mid"`
	NormOut nn.Norm `sd:"norm_out"`
	ConvOut nn.Conv `sd:"conv_out"`
}

// Decoder maps a latent to an image in about [−1, 1].
type Decoder struct {
	ConvIn  nn.Conv `sd:"conv_in"`
	Mid     Mid     `sd:"mid"`
	Up      []Level `sd:"up"`
	NormOut nn.Norm `sd:"norm_out"`
	ConvOut nn.Conv `sd:"conv_out"`
}

// Model is AutoencoderKL, or the AutoencodingEngine of SD3 and Flux: the same encoder
// and decoder with 16 latent channels and no quant convolutions (ComfyUI builds that
// when a VAE has no post_quant_conv; Flux's ae.safetensors keeps encoder.* and
// decoder.* alone).
type Model struct {
	Encoder       Encoder `sd:"encoder"`
	Decoder       Decoder `sd:"decoder"`
	QuantConv     nn.Conv `sd:"quant_conv,optional"`
	PostQuantConv nn.Conv `sd:"post_quant_conv,optional"`
}

// LatentChannels is the number of latent channels (4 for SD1.x/SDXL, 16 for SD3 and
// Flux): the decoder's input width.
func (m *Model) LatentChannels() int { return m.Decoder.ConvIn.Weight.Dim(1) }

// Downscale is the spatial factor between image and latent (2 per downsampling level).
func (m *Model) Downscale() int {
	f := 1
	for i := 0; i+1 < len(m.Encoder.Down); i++ {
		f *= 2
	}
	return f
}

// Validate checks that the bound weights form a complete autoencoder.
func (m *Model) Validate() error {
	if len(m.Encoder.Down) == 0 || len(m.Decoder.Up) != len(m.Encoder.Down) {
		return fmt.Errorf("vae: %d encoder and %d decoder levels", len(m.Encoder.Down), len(m.Decoder.Up))
	}
	if (m.QuantConv.Weight == nil) != (m.PostQuantConv.Weight == nil) {
		return fmt.Errorf("vae: quant_conv and post_quant_conv must come together")
	}
	z := m.LatentChannels()
	if w := m.Encoder.ConvOut.Weight; w.Rank() != 4 || w.Dim(0) != 2*z {
		return fmt.Errorf("vae: encoder.conv_out %v does not give the mean and log-variance of %d latent channels", w.Shape(), z)
	}
	if q := m.QuantConv.Weight; q != nil && (q.Rank() != 4 || q.Dim(0) != 2*z || q.Dim(1) != 2*z) {
		return fmt.Errorf("vae: quant_conv %v does not fit %d latent channels", q.Shape(), z)
	}
	if q := m.PostQuantConv.Weight; q != nil && (q.Rank() != 4 || q.Dim(0) != z || q.Dim(1) != z) {
		return fmt.Errorf("vae: post_quant_conv %v does not fit %d latent channels", q.Shape(), z)
	}
	for i, l := range m.Encoder.Down {
		if len(l.Blocks) == 0 {
			return fmt.Errorf("vae: encoder level %d has no blocks", i)
		}
		if i+1 < len(m.Encoder.Down) && l.Down.Conv.Weight == nil {
			return fmt.Errorf("vae: encoder level %d lacks its downsampling conv", i)
		}
	}
	for i, l := range m.Decoder.Up {
		if len(l.Blocks) == 0 {
			return fmt.Errorf("vae: decoder level %d has no blocks", i)
		}
		if i > 0 && l.Up.Conv.Weight == nil {
			return fmt.Errorf("vae: decoder level %d lacks its upsampling conv", i)
		}
	}
	return nil
}

// Moments returns quant_conv(encoder(x)) (or encoder(x) without quant convolutions)
// for x (N, 3, H, W) in [−1, 1]: mean and log-variance stacked on the channel axis.
func (m *Model) Moments(rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error) {
	e := &m.Encoder
	h, err := e.ConvIn.Same(rt, x, 1)
	if err != nil {
		return nil, err
	}
	for i := range e.Down {
		l := &e.Down[i]
		for j := range l.Blocks {
			if h, err = step(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return l.Blocks[j].forward(rt, t) }); err != nil {
				return nil, err
			}
			if j < len(l.Attn) {
				if h, err = step(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return l.Attn[j].forward(rt, t) }); err != nil {
					return nil, err
				}
			}
		}
		if i+1 < len(e.Down) {
			// F.pad(x, (0, 1, 0, 1)) then a stride-2 convolution.
			if h, err = step(h, func(t *gpu.Tensor) (*gpu.Tensor, error) {
				return l.Down.Conv.Forward(rt, t, gpu.ConvParams{Stride: 2, Bottom: 1, Right: 1})
			}); err != nil {
				return nil, err
			}
		}
	}
	defer h.Release()
	fs := []func(*gpu.Tensor) (*gpu.Tensor, error){
		func(t *gpu.Tensor) (*gpu.Tensor, error) { return e.Mid.forward(rt, t) },
		func(t *gpu.Tensor) (*gpu.Tensor, error) { return groupNorm(rt, &e.NormOut, t, true) },
		func(t *gpu.Tensor) (*gpu.Tensor, error) { return e.ConvOut.Same(rt, t, 1) },
	}
	if m.QuantConv.Weight != nil {
		fs = append(fs, func(t *gpu.Tensor) (*gpu.Tensor, error) { return m.QuantConv.Same(rt, t, 1) })
	}
	return chain(rt, h, fs...)
}

// Encode returns the posterior mean for x (N, 3, H, W) in [−1, 1].
func (m *Model) Encode(rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error) {
	mo, err := m.Moments(rt, x)
	if err != nil {
		return nil, err
	}
	defer mo.Release()
	mean, err := gpu.Narrow(mo, 1, 0, mo.Dim(1)/2)
	if err != nil {
		return nil, err
	}
	defer mean.Release()
	return gpu.Contiguous(rt, mean)
}

// Decode returns decoder(post_quant_conv(z)) (or decoder(z) without quant
// convolutions), (N, 3, H, W), unclamped.
func (m *Model) Decode(rt *gpu.Runtime, z *gpu.Tensor) (*gpu.Tensor, error) {
	d := &m.Decoder
	var fs []func(*gpu.Tensor) (*gpu.Tensor, error)
	if m.PostQuantConv.Weight != nil {
		fs = append(fs, func(t *gpu.Tensor) (*gpu.Tensor, error) { return m.PostQuantConv.Same(rt, t, 1) })
	}
	fs = append(fs, func(t *gpu.Tensor) (*gpu.Tensor, error) { return d.ConvIn.Same(rt, t, 1) },
		func(t *gpu.Tensor) (*gpu.Tensor, error) { return d.Mid.forward(rt, t) })
	h, err := chain(rt, z, fs...)
	if err != nil {
		return nil, err
	}
	for i := len(d.Up) - 1; i >= 0; i-- {
		l := &d.Up[i]
		for j := range l.Blocks {
			if h, err = step(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return l.Blocks[j].forward(rt, t) }); err != nil {
				return nil, err
			}
			if j < len(l.Attn) {
				if h, err = step(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return l.Attn[j].forward(rt, t) }); err != nil {
					return nil, err
				}
			}
		}
		if i > 0 {
			if h, err = step(h, func(t *gpu.Tensor) (*gpu.Tensor, error) {
				up, err := gpu.Upscale(rt, t, gpu.UpscaleParams{Width: 2 * t.Dim(3), Height: 2 * t.Dim(2), Method: "nearest-exact", Crop: "disabled"})
				if err != nil {
					return nil, err
				}
				defer up.Release()
				return l.Up.Conv.Same(rt, up, 1)
			}); err != nil {
				return nil, err
			}
		}
	}
	defer h.Release()
	return chain(rt, h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return groupNorm(rt, &d.NormOut, t, true) },
		func(t *gpu.Tensor) (*gpu.Tensor, error) { return d.ConvOut.Same(rt, t, 1) })
}

// step applies f to x and releases x; on error x is released too.
func step(x *gpu.Tensor, f func(*gpu.Tensor) (*gpu.Tensor, error)) (*gpu.Tensor, error) {
	y, err := f(x)
	x.Release()
	return y, err
}

// chain applies fs in order; x itself is not released, intermediates are.
func chain(rt *gpu.Runtime, x *gpu.Tensor, fs ...func(*gpu.Tensor) (*gpu.Tensor, error)) (*gpu.Tensor, error) {
	if len(fs) == 0 {
		return nil, errors.New("vae: empty chain")
	}
	cur, err := fs[0](x)
	if err != nil {
		return nil, err
	}
	for _, f := range fs[1:] {
		if cur, err = step(cur, f); err != nil {
			return nil, err
		}
	}
	return cur, nil
}

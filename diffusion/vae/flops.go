package vae

import "github.com/forgeflow/forgeflow/diffusion/nn"

// DecodeFLOPs estimates the floating-point operations of one Decode of an h×w latent:
// 2·MACs of every convolution and of the mid block's attention products (norms,
// activations, upsampling and additions are a few percent and left out), the figure
// GFLOP/s numbers are quoted against.
func (m *Model) DecodeFLOPs(h, w int) float64 {
	f := 0.0
	conv := func(c *nn.Conv, hh, ww int) {
		if c.Weight == nil {
			return
		}
		s := c.Weight.Shape()
		f += 2 * float64(s[0]*s[1]*s[2]*s[3]) * float64(hh*ww)
	}
	res := func(b *ResBlock, hh, ww int) {
		conv(&b.Conv1, hh, ww)
		conv(&b.Conv2, hh, ww)
		conv(&nn.Conv{Weight: b.Shortcut.Weight}, hh, ww)
	}
	attn := func(a *AttnBlock, hh, ww int) {
		for _, c := range []*nn.Conv{&a.Q, &a.K, &a.V, &a.Proj} {
			conv(c, hh, ww)
		}
		tokens := float64(hh * ww)
		f += 4 * tokens * tokens * float64(a.Q.Weight.Dim(0)) // q·kᵀ and p·v
	}
	d := &m.Decoder
	conv(&m.PostQuantConv, h, w)
	conv(&d.ConvIn, h, w)
	res(&d.Mid.Block1, h, w)
	attn(&d.Mid.Attn1, h, w)
	res(&d.Mid.Block2, h, w)
	hh, ww := h, w
	for i := len(d.Up) - 1; i >= 0; i-- {
		l := &d.Up[i]
		for j := range l.Blocks {
			res(&l.Blocks[j], hh, ww)
			if j < len(l.Attn) {
				attn(&l.Attn[j], hh, ww)
			}
		}
		if i > 0 {
			hh, ww = 2*hh, 2*ww
			conv(&l.Up.Conv, hh, ww)
		}
	}
	conv(&d.ConvOut, hh, ww)
	return f
}

package unet

import "github.com/forgeflow/forgeflow/diffusion/nn"

// FLOPs estimates the floating-point operations of one Forward on a batch of n latents
// of h×w with a context of ctxLen tokens: 2·MACs of every convolution, linear layer and
// attention product (norms, activations and additions are a few percent and left out),
// the figure GFLOP/s numbers are quoted against.
func (m *Model) FLOPs(n, h, w, ctxLen int) float64 {
	f := 0.0
	conv := func(c *nn.Conv, ho, wo int) {
		s := c.Weight.Shape()
		f += 2 * float64(n*s[0]*s[1]*s[2]*s[3]*ho*wo)
	}
	lin := func(l *nn.Linear, rows int) {
		s := l.Weight.Shape()
		f += 2 * float64(n*rows*s[0]*s[1])
	}
	emb := m.TimeEmbed2.Weight.Dim(0)
	block := func(mods []Module, hh, ww int) (int, int) {
		for _, mod := range mods {
			switch {
			case mod.In != nil:
				conv(mod.In, hh, ww)
			case mod.Res != nil:
				r := mod.Res
				conv(&r.InConv, hh, ww)
				conv(&r.OutConv, hh, ww)
				f += 2 * float64(n*emb*r.Emb.Weight.Dim(0))
				if r.Skip.Weight != nil {
					conv(&r.Skip, hh, ww)
				}
			case mod.Transformer != nil:
				st := mod.Transformer
				tokens := hh * ww
				if st.ProjIn.Weight.Rank() == 2 {
					lin(&st.ProjIn, tokens)
					lin(&st.ProjOut, tokens)
				} else {
					conv(&nn.Conv{Weight: st.ProjIn.Weight}, hh, ww)
					conv(&nn.Conv{Weight: st.ProjOut.Weight}, hh, ww)
				}
				for i := range st.Blocks {
					b := &st.Blocks[i]
					inner := b.Attn1.Q.Weight.Dim(0)
					for _, l := range []*nn.Linear{&b.Attn1.Q, &b.Attn1.K, &b.Attn1.V, &b.Attn1.Out, &b.Attn2.Q, &b.Attn2.Out, &b.FF.Proj, &b.FF.Out} {
						lin(l, tokens)
					}
					lin(&b.Attn2.K, ctxLen)
					lin(&b.Attn2.V, ctxLen)
					f += 4 * float64(n*tokens*tokens*inner) // self-attention QKᵀ and AV
					f += 4 * float64(n*tokens*ctxLen*inner) // cross-attention
				}
			case mod.Down != nil:
				hh, ww = (hh+1)/2, (ww+1)/2
				conv(mod.Down, hh, ww)
			case mod.Up != nil:
				hh, ww = hh*2, ww*2
				conv(mod.Up, hh, ww)
			}
		}
		return hh, ww
	}
	hh, ww := h, w
	for _, b := range m.Input {
		hh, ww = block(b, hh, ww)
	}
	hh, ww = block(m.Middle, hh, ww)
	for _, b := range m.Output {
		hh, ww = block(b, hh, ww)
	}
	conv(&m.OutConv, hh, ww)
	return f
}

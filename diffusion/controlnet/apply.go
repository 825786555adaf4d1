package controlnet

import (
	"context"
	"errors"
	"fmt"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/gpu/resample"
)

// Hint is a control image as a (N, C, H, W) float32 tensor on the host (ComfyUI's
// image.movedim(-1, 1)), values in 0…1.
type Hint struct {
	Data       []float32
	N, C, H, W int
}

func (h Hint) check() error {
	if h.N <= 0 || h.C <= 0 || h.H <= 0 || h.W <= 0 || len(h.Data) != h.N*h.C*h.H*h.W {
		return fmt.Errorf("controlnet: hint %d×%d×%d×%d with %d values", h.N, h.C, h.H, h.W, len(h.Data))
	}
	return nil
}

// Applied is a control model applied to conditioning with a hint (ComfyUI's ControlBase
// after set_cond_hint and set_previous_controlnet: what ControlNetApply and
// ControlNetApplyAdvanced store in cond["control"]). It implements sd.Control; its
// residuals are added to those of the controls chained before it.
type Applied struct {
	Net      *Net
	Hint     Hint
	Strength float64
	// StartPercent and EndPercent limit the control to part of the run (0 and 1: all).
	StartPercent, EndPercent float64
	// Previous is the control the entry held before (the chain), nil for none.
	Previous *Applied
}

// Apply attaches net with hint to a conditioning entry that held previous (nil, or
// another control of this package).
func Apply(net *Net, hint Hint, strength, startPercent, endPercent float64, previous sd.Control) (*Applied, error) {
	if net == nil {
		return nil, errors.New("controlnet: apply: no control model")
	}
	if err := hint.check(); err != nil {
		return nil, err
	}
	a := &Applied{Net: net, Hint: hint, Strength: strength, StartPercent: startPercent, EndPercent: endPercent}
	if previous != nil {
		p, ok := previous.(*Applied)
		if !ok {
			return nil, fmt.Errorf("controlnet: apply: cannot chain after a %T", previous)
		}
		a.Previous = p
	}
	return a, nil
}

// Start implements sd.Control: ControlBase.pre_run (the timestep range as sigmas; a
// control-lora builds its network on the model's UNet here), for a and every control
// chained before it.
func (a *Applied) Start(ctx context.Context, m *sd.Model) (sd.ControlRun, error) {
	return a.start(ctx, m)
}

func (a *Applied) start(ctx context.Context, m *sd.Model) (*run, error) {
	if m == nil || m.UNet == nil || m.Runtime == nil || m.Sampling == nil {
		return nil, errors.New("controlnet: the model is not an SD UNet model (SD1.x, SD2.x, SDXL)")
	}
	r := &run{a: a, rt: m.Runtime,
		sigmaStart: m.Sampling.PercentToSigma(a.StartPercent),
		sigmaEnd:   m.Sampling.PercentToSigma(a.EndPercent)}
	if a.Previous != nil {
		p, err := a.Previous.start(ctx, m)
		if err != nil {
			return nil, err
		}
		r.prev = p
	}
	if err := r.build(m); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// run is an Applied during one sampling run: its network and the hint features it
// has computed, by latent size.
type run struct {
	a    *Applied
	rt   *gpu.Runtime
	prev *run
	// sigmaStart/End: active while sigmaEnd ≤ sigma ≤ sigmaStart.
	sigmaStart, sigmaEnd float64
	model                *Model
	// cache holds the hint features for latents of cacheH×cacheW: a ControlNet's
	// guided hint, or an adapter's features.
	cacheH, cacheW int
	guided         *gpu.Tensor
	feats          *residuals
	embAdd         *gpu.Tensor
}

func (r *run) build(m *sd.Model) error {
	n := r.a.Net
	switch {
	case n.adapter != nil:
		return nil
	case n.model != nil:
		r.model = n.model
	case n.lora != nil:
		cm, err := n.lora.build(m)
		if err != nil {
			return err
		}
		r.model = cm
	default:
		return errors.New("controlnet: the control model is empty")
	}
	if u := r.model.Union; u != nil {
		if err := u.check(n.controlType); err != nil {
			return err
		}
		e, err := u.embedding(r.rt, n.controlType)
		if err != nil {
			return err
		}
		r.embAdd = e
	}
	return nil
}

// Close implements sd.ControlRun.
func (r *run) Close() {
	if r.prev != nil {
		r.prev.Close()
	}
	release(r.guided, r.embAdd)
	r.feats.release()
	r.guided, r.embAdd, r.feats = nil, nil, nil
}

// Residuals implements sd.ControlRun.
func (r *run) Residuals(ctx context.Context, in sd.ControlInputs) (*unet.Control, error) {
	res, err := r.lists(ctx, in)
	if err != nil || res == nil {
		return nil, err
	}
	return res.toControl(), nil
}

// lists is get_control: the chain's residuals, then this control's when the sigma is
// in its range, scaled by the strength and added to them (control_merge).
func (r *run) lists(ctx context.Context, in sd.ControlInputs) (*residuals, error) {
	var prev *residuals
	if r.prev != nil {
		var err error
		if prev, err = r.prev.lists(ctx, in); err != nil {
			return nil, err
		}
	}
	if s := float64(in.Sigma); s > r.sigmaStart || s < r.sigmaEnd {
		return prev, nil
	}
	if in.X == nil || in.X.Rank() != 4 || in.Batched <= 0 || in.X.Dim(0)%in.Batched != 0 {
		prev.release()
		return nil, errors.New("controlnet: bad control inputs")
	}
	var own *residuals
	var err error
	if r.a.Net.adapter != nil {
		own, err = r.adapterResiduals(ctx, in)
	} else {
		own, err = r.controlNetResiduals(ctx, in)
	}
	if err == nil {
		err = r.scale(own)
	}
	if err != nil {
		own.release()
		prev.release()
		return nil, err
	}
	return merge(r.rt, own, prev)
}

// hintAt returns the hint resized to w×h (comfy.utils.common_upscale, nearest-exact,
// centre crop) as a (N, C, h, w) tensor.
func (r *run) hintAt(w, h int) (*gpu.Tensor, error) {
	hn := r.a.Hint
	d := hn.Data
	if hn.W != w || hn.H != h {
		var err error
		if d, err = resample.Upscale(hn.Data, hn.N, hn.C, hn.H, hn.W, w, h, "nearest-exact", "center"); err != nil {
			return nil, fmt.Errorf("controlnet: hint: %w", err)
		}
	}
	return r.rt.FromFloat32(d, hn.N, hn.C, h, w)
}

// controlNetResiduals is ControlNet.get_control: the hint at 8× the latent's size
// through the hint encoder (once per latent size: it depends on nothing else), then
// the network on the batch.
func (r *run) controlNetResiduals(ctx context.Context, in sd.ControlInputs) (*residuals, error) {
	h, w := in.X.Dim(2), in.X.Dim(3)
	if r.guided == nil || r.cacheH != h || r.cacheW != w {
		release(r.guided)
		r.guided = nil
		hint, err := r.hintAt(w*8, h*8)
		if err != nil {
			return nil, err
		}
		if want := r.model.HintChannels(); hint.Dim(1) != want {
			hint.Release()
			return nil, fmt.Errorf("controlnet: the hint has %d channels, the ControlNet takes %d", r.a.Hint.C, want)
		}
		g, err := then(hint, func(t *gpu.Tensor) (*gpu.Tensor, error) { return r.model.guidedHint(r.rt, t) })
		if err != nil {
			return nil, err
		}
		if u := r.model.Union; u != nil && len(r.a.Net.controlType) > 0 {
			if g, err = then(g, func(t *gpu.Tensor) (*gpu.Tensor, error) { return u.merge(r.rt, t, r.a.Net.controlType[0]) }); err != nil {
				return nil, err
			}
		}
		r.guided, r.cacheH, r.cacheW = g, h, w
	}
	guided, err := broadcastBatch(r.rt, r.guided, in.X.Dim(0), in.Batched)
	if err != nil {
		return nil, err
	}
	defer guided.Release()
	ui := unet.Inputs{X: in.X, Timesteps: in.Timesteps, Context: in.Context}
	if r.model.Trunk.LabelEmbed.L1.Weight != nil {
		if in.Y == nil {
			return nil, errors.New("controlnet: the ControlNet needs a label vector y (an SDXL ControlNet on a model without one?)")
		}
		ui.Y = in.Y
	}
	var embAdd *gpu.Tensor
	if r.embAdd != nil {
		if embAdd, err = broadcastBatch(r.rt, r.embAdd, in.X.Dim(0), 1); err != nil {
			return nil, err
		}
		defer embAdd.Release()
	}
	return r.model.forward(ctx, r.rt, ui, guided, embAdd)
}

// adapterResiduals is T2IAdapter.get_control: the hint at 8× the latent's size rounded
// up to the unshuffle factor, averaged to one channel for a one-channel adapter,
// through the adapter once per latent size; each call gets the features broadcast to
// its batch.
func (r *run) adapterResiduals(ctx context.Context, in sd.ControlInputs) (*residuals, error) {
	ad := r.a.Net.adapter
	h, w := in.X.Dim(2), in.X.Dim(3)
	if r.feats == nil || r.cacheH != h || r.cacheW != w {
		r.feats.release()
		r.feats = nil
		u := ad.Unshuffle
		ceil := func(v int) int { return (v + u - 1) / u * u }
		hint, err := r.hintAt(ceil(w*8), ceil(h*8))
		if err != nil {
			return nil, err
		}
		if ad.InputChannels == 1 && hint.Dim(1) > 1 {
			if hint, err = then(hint, func(t *gpu.Tensor) (*gpu.Tensor, error) { return channelMean(r.rt, t) }); err != nil {
				return nil, err
			}
		}
		if hint.Dim(1) != ad.InputChannels {
			hint.Release()
			return nil, fmt.Errorf("controlnet: the hint has %d channels, the T2I-Adapter takes %d", r.a.Hint.C, ad.InputChannels)
		}
		feats, err := ad.features(ctx, r.rt, hint)
		hint.Release()
		if err != nil {
			return nil, err
		}
		r.feats, r.cacheH, r.cacheW = feats, h, w
	}
	out := &residuals{}
	for _, l := range []struct {
		src []*gpu.Tensor
		dst *[]*gpu.Tensor
	}{{r.feats.input, &out.input}, {r.feats.middle, &out.middle}, {r.feats.output, &out.output}} {
		for _, t := range l.src {
			if t == nil {
				*l.dst = append(*l.dst, nil)
				continue
			}
			b, err := broadcastBatch(r.rt, t, in.X.Dim(0), in.Batched)
			if err != nil {
				out.release()
				return nil, err
			}
			*l.dst = append(*l.dst, b)
		}
	}
	return out, nil
}

// scale applies the strength (and global average pooling) to a control's own
// residuals in place (control_merge).
func (r *run) scale(res *residuals) error {
	gap := r.a.Net.GlobalAveragePooling
	s := r.a.Strength
	if !gap && s == 1 {
		return nil
	}
	var st *gpu.Tensor
	if s != 1 {
		var err error
		if st, err = r.rt.FromFloat32([]float32{float32(s)}, 1); err != nil {
			return err
		}
		defer st.Release()
	}
	for _, l := range [][]*gpu.Tensor{res.input, res.middle, res.output} {
		for i, t := range l {
			if t == nil {
				continue
			}
			if gap {
				g, err := spatialMean(r.rt, t)
				if err != nil {
					return err
				}
				t.Release()
				l[i], t = g, g
			}
			if st != nil {
				m, err := gpu.Mul(r.rt, t, st)
				if err != nil {
					return err
				}
				t.Release()
				l[i] = m
			}
		}
	}
	return nil
}

// merge adds prev's residuals to own's, list by list and index by index from the
// start (control_merge): where own has nothing prev's entry stands, and prev's extra
// entries are appended. Both inputs are consumed.
func merge(rt *gpu.Runtime, own, prev *residuals) (*residuals, error) {
	if prev == nil {
		return own, nil
	}
	for _, l := range []struct{ o, p *[]*gpu.Tensor }{{&own.input, &prev.input}, {&own.middle, &prev.middle}, {&own.output, &prev.output}} {
		for i, pv := range *l.p {
			switch {
			case i >= len(*l.o):
				*l.o = append(*l.o, pv)
			case pv == nil:
			case (*l.o)[i] == nil:
				(*l.o)[i] = pv
			default:
				sum, err := gpu.Add(rt, pv, (*l.o)[i])
				if err != nil {
					own.release()
					release((*l.p)[i:]...)
					return nil, err
				}
				release(pv, (*l.o)[i])
				(*l.o)[i] = sum
			}
			(*l.p)[i] = nil
		}
	}
	return own, nil
}

// broadcastBatch is comfy/controlnet.py broadcast_image_to as a new tensor of batch
// target: a single item repeated; otherwise the batch is cut or cycled to
// target/batched items and that repeated batched times.
func broadcastBatch(rt *gpu.Runtime, t *gpu.Tensor, target, batched int) (*gpu.Tensor, error) {
	cur := t.Dim(0)
	var items []int
	if cur == 1 {
		items = make([]int, target)
	} else {
		per := target / batched
		for i := 0; i < target; i++ {
			items = append(items, (i%per)%min(cur, per))
		}
	}
	if cur == target && func() bool {
		for i, v := range items {
			if v != i {
				return false
			}
		}
		return true
	}() {
		return gpu.Contiguous(rt, t)
	}
	parts := make([]*gpu.Tensor, len(items))
	for i, it := range items {
		p, err := gpu.Narrow(t, 0, it, 1)
		if err != nil {
			release(parts[:i]...)
			return nil, err
		}
		parts[i] = p
	}
	defer release(parts...)
	return gpu.Concat(rt, 0, parts...)
}

// channelMean is torch.mean(x, 1, keepdim=True).
func channelMean(rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error) {
	d, err := x.Float32()
	if err != nil {
		return nil, err
	}
	n, c, h, w := x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3)
	out := make([]float32, n*h*w)
	for b := 0; b < n; b++ {
		for i := 0; i < h*w; i++ {
			var s float32
			for ch := 0; ch < c; ch++ {
				s += d[(b*c+ch)*h*w+i]
			}
			out[b*h*w+i] = s / float32(c)
		}
	}
	return rt.FromFloat32(out, n, 1, h, w)
}

// spatialMean is global average pooling: every position set to the mean over (H, W).
func spatialMean(rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error) {
	d, err := x.Float32()
	if err != nil {
		return nil, err
	}
	plane := x.Dim(2) * x.Dim(3)
	out := make([]float32, len(d))
	for p := 0; p < len(d)/plane; p++ {
		var s float64
		for _, v := range d[p*plane : (p+1)*plane] {
			s += float64(v)
		}
		m := float32(s / float64(plane))
		for i := range out[p*plane : (p+1)*plane] {
			out[p*plane+i] = m
		}
	}
	return rt.FromFloat32(out, x.Shape()...)
}

// Interface guards.
var (
	_ sd.Control    = (*Applied)(nil)
	_ sd.ControlRun = (*run)(nil)
)

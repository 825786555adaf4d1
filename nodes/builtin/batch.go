package builtin

import (
	"context"
	"fmt"
	"slices"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// LoadImageOutput (nodes.py), RebatchImages and RebatchLatents
// (comfy_extras/nodes_rebatch.py).

// LoadImageOutput is LoadImage with a combo the front end fills from the output folder:
// its values come annotated ("name.png [output]"), which LoadImage's file lookup
// resolves, so it runs as LoadImage does.
type LoadImageOutput struct{ LoadImage }

// Schema implements nodes.Typed.
func (*LoadImageOutput) Schema() graph.Schema {
	return graph.Schema{
		Name: "LoadImageOutput", DisplayName: "Load Image (from Outputs)", Category: "image",
		Description: "Load an image from the output folder. When the refresh button is clicked, the node will update the image list and automatically select the first image, allowing for easy iteration.",
		Inputs: []graph.Input{{Name: "image", Type: graph.TypeCombo, ComboV3: true, ImageUpload: true, CustomValidation: true,
			Extra: map[string]any{"image_folder": "output",
				"remote": map[string]any{"route": "/internal/files/output", "refresh_button": true, "control_after_refresh": "first"}}}},
		Outputs: outputs("IMAGE", "MASK"),
		Extra:   map[string]any{"experimental": true},
	}
}

// RebatchImages splits and joins image batches into batches of batch_size.
type RebatchImages struct {
	Images    []*Image `input:"images"`
	BatchSize []int    `input:"batch_size"`
}

// Schema implements nodes.Typed.
func (*RebatchImages) Schema() graph.Schema {
	name := "Rebatch Images"
	return graph.Schema{
		Name: "RebatchImages", DisplayName: name, Category: "image/batch", PythonModule: "comfy_extras.nodes_rebatch",
		InputIsList: true,
		Inputs: []graph.Input{socketV3("images", "IMAGE"),
			{Name: "batch_size", Type: graph.TypeInt, Default: 1, Min: graph.Num(1), Max: graph.Num(4096)}},
		Outputs: []graph.Output{{Type: "IMAGE", Name: "IMAGE", IsList: true}},
		Extra:   v3Extra(1, &name),
	}
}

// Run implements nodes.Typed (ImageRebatch.execute): every image of every input batch,
// in order, regrouped batch_size at a time (the first batch_size value counts); images
// of one output batch must share their size, as torch.cat requires.
func (n *RebatchImages) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if len(n.BatchSize) == 0 || n.BatchSize[0] < 1 {
		return nodes.Result{}, fmt.Errorf("builtin: RebatchImages: batch_size %v, want one value of at least 1", n.BatchSize)
	}
	size := n.BatchSize[0]
	type ref struct {
		im *Image
		b  int
	}
	var all []ref
	for _, im := range n.Images {
		for b := 0; b < im.Batch; b++ {
			all = append(all, ref{im, b})
		}
	}
	var out []any
	for start := 0; start < len(all); start += size {
		if err := ctx.Err(); err != nil {
			return nodes.Result{}, err
		}
		group := all[start:min(start+size, len(all))]
		first := group[0].im
		batch, err := NewImage(len(group), first.Height, first.Width, first.Channels)
		if err != nil {
			return nodes.Result{}, err
		}
		for i, r := range group {
			if r.im.Height != first.Height || r.im.Width != first.Width || r.im.Channels != first.Channels {
				return nodes.Result{}, fmt.Errorf("builtin: RebatchImages: cannot batch a %dx%dx%d image with a %dx%dx%d one",
					r.im.Width, r.im.Height, r.im.Channels, first.Width, first.Height, first.Channels)
			}
			copy(batch.Frame(i), r.im.Frame(r.b))
		}
		out = append(out, batch)
	}
	return nodes.Outputs(out)
}

var (
	_ nodes.Typed = (*LoadImageOutput)(nil)
	_ nodes.Typed = (*RebatchImages)(nil)
	_ nodes.Typed = (*RebatchLatents)(nil)
)

// RebatchLatents splits and joins latent batches into batches of batch_size, carrying
// each sample's noise mask and batch index (nodes_rebatch.py LatentRebatch).
type RebatchLatents struct {
	Latents   []*sd.Latent `input:"latents"`
	BatchSize []int        `input:"batch_size"`
}

// Schema implements nodes.Typed.
func (*RebatchLatents) Schema() graph.Schema {
	name := "Rebatch Latents"
	return graph.Schema{
		Name: "RebatchLatents", DisplayName: name, Category: "latent/batch", PythonModule: "comfy_extras.nodes_rebatch",
		InputIsList: true,
		Inputs: []graph.Input{socketV3("latents", "LATENT"),
			{Name: "batch_size", Type: graph.TypeInt, Default: 1, Min: graph.Num(1), Max: graph.Num(4096)}},
		Outputs: []graph.Output{{Type: "LATENT", Name: "LATENT", IsList: true}},
		Extra:   v3Extra(1, &name),
	}
}

// maskPlane is one (1, h, w) plane of a noise mask; nil pix stands for the all-ones
// mask ComfyUI makes for a latent without one (8× the latent's size).
type maskPlane struct {
	pix  []float32
	h, w int
}

// rebatch is the run of samples, mask planes and batch indices being gathered. As in
// ComfyUI the three lists are concatenated and cut independently (a mask with more
// planes than its latent has samples keeps them all).
type rebatch struct {
	rt      *gpu.Runtime
	c, h, w int
	samples [][]float32
	masks   []maskPlane
	inds    []int
}

// Run implements nodes.Typed (LatentRebatch.execute): latents of one size are joined
// and cut into batch_size pieces, a size change closes the current piece; missing
// masks are ones (dropped again from a piece whose mask averages 1), missing batch
// indices count on from the samples seen before.
func (n *RebatchLatents) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if len(n.BatchSize) == 0 || n.BatchSize[0] < 1 {
		return nodes.Result{}, fmt.Errorf("builtin: RebatchLatents: batch_size %v, want one value of at least 1", n.BatchSize)
	}
	size := n.BatchSize[0]
	var out []any
	var cur *rebatch
	flush := func(count int) error {
		for i := 0; i < count; i++ {
			l, err := cur.piece(i*size, (i+1)*size)
			if err != nil {
				return err
			}
			out = append(out, l)
		}
		cur.cut(count * size)
		return nil
	}
	processed := 0
	for li, l := range n.Latents {
		if err := ctx.Err(); err != nil {
			return nodes.Result{}, err
		}
		next, err := newRebatch(l, processed)
		if err != nil {
			return nodes.Result{}, fmt.Errorf("builtin: RebatchLatents: latent %d: %w", li, err)
		}
		processed += len(next.inds)
		switch {
		case cur == nil || len(cur.samples) == 0:
			cur = next
		case next.h != cur.h || next.w != cur.w:
			if err := flush(1); err != nil {
				return nodes.Result{}, err
			}
			cur = next
		default:
			if err := cur.join(next); err != nil {
				return nodes.Result{}, fmt.Errorf("builtin: RebatchLatents: latent %d: %w", li, err)
			}
		}
		if len(cur.samples) > size {
			if err := flush(len(cur.samples) / size); err != nil {
				return nodes.Result{}, err
			}
		}
	}
	if cur != nil && len(cur.samples) > 0 {
		if err := flush(1); err != nil {
			return nodes.Result{}, err
		}
	}
	return nodes.Outputs(out)
}

// newRebatch splits one latent into per-sample pieces (LatentRebatch.get_batch).
func newRebatch(l *sd.Latent, offset int) (*rebatch, error) {
	data, s, err := sd.LatentData(l)
	if err != nil {
		return nil, err
	}
	r := &rebatch{rt: l.Samples.Runtime(), c: s[1], h: s[2], w: s[3]}
	per := s[1] * s[2] * s[3]
	for i := 0; i < s[0]; i++ {
		r.samples = append(r.samples, data[i*per:(i+1)*per])
	}
	if l.NoiseMask == nil {
		for range s[0] {
			r.masks = append(r.masks, maskPlane{h: 8 * s[2], w: 8 * s[3]})
		}
	} else {
		ms := l.NoiseMask.Shape()
		if len(ms) < 2 {
			return nil, fmt.Errorf("noise mask of shape %v", ms)
		}
		mh, mw := ms[len(ms)-2], ms[len(ms)-1]
		pix, err := l.NoiseMask.Float32()
		if err != nil {
			return nil, err
		}
		nm := len(pix) / max(mh*mw, 1)
		if nm == 0 {
			return nil, fmt.Errorf("empty noise mask of shape %v", ms)
		}
		// mask.repeat(…)[:N] when the mask has fewer planes than the latent samples.
		for i := range max(nm, s[0]) {
			j := i % nm
			r.masks = append(r.masks, maskPlane{pix: pix[j*mh*mw : (j+1)*mh*mw], h: mh, w: mw})
		}
	}
	if l.BatchIndex != nil {
		r.inds = slices.Clone(l.BatchIndex)
	} else {
		for i := range s[0] {
			r.inds = append(r.inds, offset+i)
		}
	}
	return r, nil
}

// join appends next (torch.cat: the channels and mask sizes must agree).
func (r *rebatch) join(next *rebatch) error {
	if next.c != r.c {
		return fmt.Errorf("cannot batch %d-channel latents with %d-channel ones", next.c, r.c)
	}
	if len(r.masks) > 0 && len(next.masks) > 0 && (r.masks[0].h != next.masks[0].h || r.masks[0].w != next.masks[0].w) {
		return fmt.Errorf("cannot batch a %dx%d noise mask with a %dx%d one", next.masks[0].w, next.masks[0].h, r.masks[0].w, r.masks[0].h)
	}
	r.samples = append(r.samples, next.samples...)
	r.masks = append(r.masks, next.masks...)
	r.inds = append(r.inds, next.inds...)
	return nil
}

// cut drops the first k entries of each list.
func (r *rebatch) cut(k int) {
	drop := func(n int) int { return min(k, n) }
	r.samples = r.samples[drop(len(r.samples)):]
	r.masks = r.masks[drop(len(r.masks)):]
	r.inds = r.inds[drop(len(r.inds)):]
}

// piece builds the latent of entries lo … hi−1 of each list.
func (r *rebatch) piece(lo, hi int) (*sd.Latent, error) {
	part := func(n int) (int, int) { return min(lo, n), min(hi, n) }
	a, b := part(len(r.samples))
	per := r.c * r.h * r.w
	data := make([]float32, 0, (b-a)*per)
	for _, s := range r.samples[a:b] {
		data = append(data, s...)
	}
	samples, err := r.rt.FromFloat32(data, b-a, r.c, r.h, r.w)
	if err != nil {
		return nil, err
	}
	l := &sd.Latent{Samples: samples}
	a, b = part(len(r.inds))
	l.BatchIndex = slices.Clone(r.inds[a:b])
	a, b = part(len(r.masks))
	planes := r.masks[a:b]
	ones := true
	for _, p := range planes {
		for _, v := range p.pix {
			ones = ones && v == 1
		}
	}
	if ones || len(planes) == 0 {
		// Every value is 1 (ComfyUI drops a mask whose mean is 1.0): no mask.
		return l, nil
	}
	mh, mw := planes[0].h, planes[0].w
	pix := make([]float32, 0, len(planes)*mh*mw)
	for _, p := range planes {
		if p.pix == nil {
			for range mh * mw {
				pix = append(pix, 1)
			}
			continue
		}
		pix = append(pix, p.pix...)
	}
	if l.NoiseMask, err = r.rt.FromFloat32(pix, len(planes), 1, mh, mw); err != nil {
		samples.Release()
		return nil, err
	}
	return l, nil
}

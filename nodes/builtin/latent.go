package builtin

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/gpu/resample"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// Latent nodes (nodes.py EmptyLatentImage, LatentUpscale, LatentUpscaleBy,
// LatentFromBatch, RepeatLatentBatch, LatentComposite). LATENT values are *sd.Latent;
// nodes return new values and never write into their inputs.

// checkLatent admits a LATENT with non-empty (N, C, H, W) samples.
func checkLatent(l *sd.Latent) error {
	if l == nil || l.Samples == nil {
		return errors.New("builtin: the latent has no samples")
	}
	if s := l.Samples.Shape(); len(s) != 4 || slices.Contains(s, 0) {
		return fmt.Errorf("builtin: latent samples %v are not a non-empty (N, C, H, W)", s)
	}
	return nil
}

// newLatent returns a copy of l's dict with new samples.
func newLatent(l *sd.Latent, data []float32, shape [4]int) (*sd.Latent, error) {
	rt := l.Samples.Runtime()
	t, err := rt.FromFloat32(data, shape[:]...)
	if err != nil {
		return nil, err
	}
	return &sd.Latent{Samples: t, BatchIndex: l.BatchIndex, NoiseMask: l.NoiseMask}, nil
}

// EmptyLatentImage is ComfyUI's EmptyLatentImage: a batch of zero (N, 4, H/8, W/8)
// latents on the runtime.
type EmptyLatentImage struct {
	opts      Options
	Width     int `input:"width"`
	Height    int `input:"height"`
	BatchSize int `input:"batch_size"`
}

// Schema implements nodes.Typed.
func (*EmptyLatentImage) Schema() graph.Schema {
	return graph.Schema{
		Name: "EmptyLatentImage", DisplayName: "Empty Latent Image", Category: "latent",
		Description: "Create a new batch of empty latent images to be denoised via sampling.",
		Inputs: []graph.Input{
			{Name: "width", Type: graph.TypeInt, Default: 512, Min: graph.Num(16), Max: graph.Num(MaxResolution), Step: graph.Num(8),
				Tooltip: "The width of the latent images in pixels."},
			{Name: "height", Type: graph.TypeInt, Default: 512, Min: graph.Num(16), Max: graph.Num(MaxResolution), Step: graph.Num(8),
				Tooltip: "The height of the latent images in pixels."},
			{Name: "batch_size", Type: graph.TypeInt, Default: 1, Min: graph.Num(1), Max: graph.Num(4096),
				Tooltip: "The number of latent images in the batch."},
		},
		Outputs: outputs("LATENT"),
		Extra:   map[string]any{"output_tooltips": []any{"The empty latent image batch."}},
	}
}

// Run implements nodes.Typed.
func (n *EmptyLatentImage) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	shape := []int{n.BatchSize, 4, n.Height / 8, n.Width / 8}
	if _, err := sizeOf("latent", shape...); err != nil {
		return nodes.Result{}, err
	}
	rt, err := n.opts.runtime()
	if err != nil {
		return nodes.Result{}, err
	}
	t, err := rt.Zeros(gpu.F32, shape...)
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.One(&sd.Latent{Samples: t}, nil)
}

// latentUpscaleMethods are LatentUpscale's choices (a subset of resample.Methods).
var latentUpscaleMethods = []string{"nearest-exact", "bilinear", "area", "bicubic", "bislerp"}

// LatentUpscale is ComfyUI's LatentUpscale ("Upscale Latent").
type LatentUpscale struct {
	Samples       *sd.Latent `input:"samples"`
	UpscaleMethod string     `input:"upscale_method"`
	Width         int        `input:"width"`
	Height        int        `input:"height"`
	Crop          string     `input:"crop"`
}

// Schema implements nodes.Typed.
func (*LatentUpscale) Schema() graph.Schema {
	return graph.Schema{
		Name: "LatentUpscale", DisplayName: "Upscale Latent", Category: "latent",
		Inputs: []graph.Input{
			socket("samples", "LATENT"),
			combo("upscale_method", latentUpscaleMethods...),
			step8("width", 512, 0), step8("height", 512, 0),
			combo("crop", "disabled", "center"),
		},
		Outputs: outputs("LATENT"),
	}
}

// Run implements nodes.Typed: a zero side follows the latent's aspect ratio; sides are
// at least 64 pixels; both zero returns the latent.
func (n *LatentUpscale) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	w, h := n.Width, n.Height
	if w == 0 && h == 0 {
		return nodes.One(n.Samples, nil)
	}
	data, shape, err := sd.LatentData(n.Samples)
	if err != nil {
		return nodes.Result{}, err
	}
	lh, lw := float64(shape[2]), float64(shape[3])
	switch {
	case w == 0:
		h = max(64, h)
		w = max(64, int(math.RoundToEven(lw*float64(h)/lh)))
	case h == 0:
		w = max(64, w)
		h = max(64, int(math.RoundToEven(lh*float64(w)/lw)))
	default:
		w, h = max(64, w), max(64, h)
	}
	return nodes.One(upscaleLatent(n.Samples, data, shape, w/8, h/8, n.UpscaleMethod, n.Crop))
}

func upscaleLatent(l *sd.Latent, data []float32, shape [4]int, w, h int, method, crop string) (*sd.Latent, error) {
	if w <= 0 || h <= 0 {
		return nil, fmt.Errorf("builtin: latent upscale to %dx%d", w, h)
	}
	n := shape[0] * shape[1]
	if _, err := sizeOf("latent", n, h, w); err != nil {
		return nil, err
	}
	out, err := resample.Upscale(data, shape[0], shape[1], shape[2], shape[3], w, h, method, crop)
	if err != nil {
		return nil, fmt.Errorf("builtin: latent upscale: %w", err)
	}
	return newLatent(l, out, [4]int{shape[0], shape[1], h, w})
}

// LatentUpscaleBy is ComfyUI's LatentUpscaleBy ("Upscale Latent By").
type LatentUpscaleBy struct {
	Samples       *sd.Latent `input:"samples"`
	UpscaleMethod string     `input:"upscale_method"`
	ScaleBy       float64    `input:"scale_by"`
}

// Schema implements nodes.Typed.
func (*LatentUpscaleBy) Schema() graph.Schema {
	return graph.Schema{
		Name: "LatentUpscaleBy", DisplayName: "Upscale Latent By", Category: "latent",
		Inputs: []graph.Input{
			socket("samples", "LATENT"),
			combo("upscale_method", latentUpscaleMethods...),
			{Name: "scale_by", Type: graph.TypeFloat, Default: 1.5, Min: graph.Num(0.01), Max: graph.Num(8.0), Step: graph.Num(0.01)},
		},
		Outputs: outputs("LATENT"),
	}
}

// Run implements nodes.Typed: each side round(side · scale_by), half to even.
func (n *LatentUpscaleBy) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	data, shape, err := sd.LatentData(n.Samples)
	if err != nil {
		return nodes.Result{}, err
	}
	w := int(math.RoundToEven(float64(shape[3]) * n.ScaleBy))
	h := int(math.RoundToEven(float64(shape[2]) * n.ScaleBy))
	return nodes.One(upscaleLatent(n.Samples, data, shape, w, h, n.UpscaleMethod, "disabled"))
}

// maskBatch returns a noise mask's data, the size of one item and the number of items
// (a 2-D mask is one item).
func maskBatch(m *gpu.Tensor) (data []float32, per, batch int, err error) {
	if m.Rank() < 2 {
		return nil, 0, 0, fmt.Errorf("builtin: noise_mask %v has fewer than 2 dimensions", m.Shape())
	}
	data, err = m.Float32()
	if err != nil {
		return nil, 0, 0, err
	}
	batch = m.Dim(0)
	if m.Rank() == 2 {
		batch = 1
	}
	if batch == 0 {
		return nil, 0, 0, fmt.Errorf("builtin: noise_mask %v is empty", m.Shape())
	}
	return data, len(data) / batch, batch, nil
}

// maskTensor makes a mask tensor shaped like m with batch items of data.
func maskTensor(m *gpu.Tensor, data []float32, batch int) (*gpu.Tensor, error) {
	shape := m.Shape()
	if len(shape) == 2 {
		shape = append([]int{1}, shape...)
	}
	shape[0] = batch
	return m.Runtime().FromFloat32(data, shape...)
}

// LatentFromBatch is ComfyUI's LatentFromBatch.
type LatentFromBatch struct {
	Samples    *sd.Latent `input:"samples"`
	BatchIndex int        `input:"batch_index"`
	Length     int        `input:"length"`
}

// Schema implements nodes.Typed.
func (*LatentFromBatch) Schema() graph.Schema {
	return graph.Schema{
		Name: "LatentFromBatch", DisplayName: "Latent From Batch", Category: "latent/batch",
		Inputs: []graph.Input{
			socket("samples", "LATENT"),
			{Name: "batch_index", Type: graph.TypeInt, Default: 0, Min: graph.Num(0), Max: graph.Num(63)},
			{Name: "length", Type: graph.TypeInt, Default: 1, Min: graph.Num(1), Max: graph.Num(64)},
		},
		Outputs: outputs("LATENT"),
	}
}

// Run implements nodes.Typed: the index is clamped to the last item and the length to
// what is left; the noise mask and batch_index list are cut to the same items.
func (n *LatentFromBatch) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	l := n.Samples
	data, shape, err := sd.LatentData(l)
	if err != nil {
		return nodes.Result{}, err
	}
	b := shape[0]
	idx := min(b-1, n.BatchIndex)
	length := min(b-idx, n.Length)
	per := shape[1] * shape[2] * shape[3]
	sub := append([]float32(nil), data[idx*per:(idx+length)*per]...)
	out, err := newLatent(l, sub, [4]int{length, shape[1], shape[2], shape[3]})
	if err != nil {
		return nodes.Result{}, err
	}
	if l.NoiseMask != nil {
		md, mper, mb, err := maskBatch(l.NoiseMask)
		if err != nil {
			return nodes.Result{}, err
		}
		if mb > 1 {
			// Masks are repeated to the latent's batch before slicing.
			rep := make([]float32, 0, max(mb, b)*mper)
			for i := 0; i < max(mb, b); i++ {
				rep = append(rep, md[(i%mb)*mper:(i%mb+1)*mper]...)
			}
			if out.NoiseMask, err = maskTensor(l.NoiseMask, append([]float32(nil), rep[idx*mper:(idx+length)*mper]...), length); err != nil {
				return nodes.Result{}, err
			}
		}
	}
	if l.BatchIndex == nil {
		out.BatchIndex = make([]int, length)
		for i := range out.BatchIndex {
			out.BatchIndex[i] = idx + i
		}
	} else {
		if len(l.BatchIndex) < idx+length {
			return nodes.Result{}, fmt.Errorf("builtin: LatentFromBatch: batch_index list %v is shorter than the batch of %d", l.BatchIndex, b)
		}
		out.BatchIndex = append([]int(nil), l.BatchIndex[idx:idx+length]...)
	}
	return nodes.One(out, nil)
}

// RepeatLatentBatch is ComfyUI's RepeatLatentBatch.
type RepeatLatentBatch struct {
	Samples *sd.Latent `input:"samples"`
	Amount  int        `input:"amount"`
}

// Schema implements nodes.Typed.
func (*RepeatLatentBatch) Schema() graph.Schema {
	return graph.Schema{
		Name: "RepeatLatentBatch", DisplayName: "Repeat Latent Batch", Category: "latent/batch",
		Inputs: []graph.Input{
			socket("samples", "LATENT"),
			{Name: "amount", Type: graph.TypeInt, Default: 1, Min: graph.Num(1), Max: graph.Num(64)},
		},
		Outputs: outputs("LATENT"),
	}
}

// Run implements nodes.Typed: the batch tiled amount times, with its noise mask and its
// batch_index list shifted past the previous copies.
func (n *RepeatLatentBatch) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	l, amount := n.Samples, n.Amount
	data, shape, err := sd.LatentData(l)
	if err != nil {
		return nodes.Result{}, err
	}
	if _, err := sizeOf("latent", amount, len(data)); err != nil {
		return nodes.Result{}, err
	}
	rep := make([]float32, 0, amount*len(data))
	for i := 0; i < amount; i++ {
		rep = append(rep, data...)
	}
	out, err := newLatent(l, rep, [4]int{amount * shape[0], shape[1], shape[2], shape[3]})
	if err != nil {
		return nodes.Result{}, err
	}
	if l.NoiseMask != nil {
		md, _, mb, err := maskBatch(l.NoiseMask)
		if err != nil {
			return nodes.Result{}, err
		}
		// ComfyUI repeats a batched mask by amount (its own batch, not the latent's); a
		// single mask applies to every item as it is.
		if mb > 1 {
			mrep := make([]float32, 0, amount*len(md))
			for i := 0; i < amount; i++ {
				mrep = append(mrep, md...)
			}
			if out.NoiseMask, err = maskTensor(l.NoiseMask, mrep, amount*mb); err != nil {
				return nodes.Result{}, err
			}
		}
	}
	if len(l.BatchIndex) > 0 {
		lo, hi := l.BatchIndex[0], l.BatchIndex[0]
		for _, v := range l.BatchIndex {
			lo, hi = min(lo, v), max(hi, v)
		}
		offset := hi - lo + 1
		bi := append([]int(nil), l.BatchIndex...)
		for i := 1; i < amount; i++ {
			for _, v := range l.BatchIndex {
				bi = append(bi, v+i*offset)
			}
		}
		out.BatchIndex = bi
	}
	return nodes.One(out, nil)
}

// LatentComposite is ComfyUI's LatentComposite.
type LatentComposite struct {
	SamplesTo   *sd.Latent `input:"samples_to"`
	SamplesFrom *sd.Latent `input:"samples_from"`
	X           int        `input:"x"`
	Y           int        `input:"y"`
	Feather     int        `input:"feather"`
}

// Schema implements nodes.Typed.
func (*LatentComposite) Schema() graph.Schema {
	return graph.Schema{
		Name: "LatentComposite", DisplayName: "Latent Composite", Category: "latent",
		Inputs: []graph.Input{
			socket("samples_to", "LATENT"), socket("samples_from", "LATENT"),
			step8("x", 0, 0), step8("y", 0, 0), step8("feather", 0, 0),
		},
		Outputs: outputs("LATENT"),
	}
}

// Run implements nodes.Typed; positions and feather are given in pixels and used in
// latent cells (//8).
func (n *LatentComposite) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	tdata, ts, err := sd.LatentData(n.SamplesTo)
	if err != nil {
		return nodes.Result{}, err
	}
	fdata, fs, err := sd.LatentData(n.SamplesFrom)
	if err != nil {
		return nodes.Result{}, err
	}
	out, err := compositeLatent(tdata, ts, fdata, fs, n.X/8, n.Y/8, n.Feather/8)
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.One(newLatent(n.SamplesTo, out, ts))
}

// compositeLatent pastes from onto a copy of to at (x, y) latent pixels, cut at to's
// edges; with feather > 0 the pasted edges that do not touch to's border blend in
// linearly over feather pixels (LatentComposite.composite). from's batch is broadcast
// when it is 1.
func compositeLatent(to []float32, ts [4]int, from []float32, fs [4]int, x, y, feather int) ([]float32, error) {
	if fs[1] != ts[1] || (fs[0] != ts[0] && fs[0] != 1) {
		return nil, fmt.Errorf("builtin: LatentComposite: samples_from %v does not fit samples_to %v", fs, ts)
	}
	out := append([]float32(nil), to...)
	h := min(fs[2], ts[2]-y)
	w := min(fs[3], ts[3]-x)
	if h <= 0 || w <= 0 {
		return out, nil // the paste lies outside samples_to
	}
	mask := make([]float32, h*w)
	for i := range mask {
		mask[i] = 1
	}
	for t := 0; t < feather; t++ {
		f := float32(1.0 / float64(feather) * float64(t+1))
		// ComfyUI's slices t:t+1 are empty past the region's edge.
		if y != 0 && t < h {
			scaleRowF(mask, w, t, f)
		}
		if y+h < ts[2] && h-1-t >= 0 {
			scaleRowF(mask, w, h-1-t, f)
		}
		if x != 0 && t < w {
			scaleColF(mask, w, t, f)
		}
		if x+w < ts[3] && w-1-t >= 0 {
			scaleColF(mask, w, w-1-t, f)
		}
	}
	for b := 0; b < ts[0]; b++ {
		fb := b
		if fs[0] == 1 {
			fb = 0
		}
		for c := 0; c < ts[1]; c++ {
			for yy := 0; yy < h; yy++ {
				for xx := 0; xx < w; xx++ {
					src := from[((fb*fs[1]+c)*fs[2]+yy)*fs[3]+xx]
					di := ((b*ts[1]+c)*ts[2]+y+yy)*ts[3] + x + xx
					if feather == 0 {
						out[di] = src
						continue
					}
					m := mask[yy*w+xx]
					out[di] = src*m + out[di]*(1-m)
				}
			}
		}
	}
	return out, nil
}

func scaleRowF(m []float32, w, row int, f float32) {
	for x := 0; x < w; x++ {
		m[row*w+x] *= f
	}
}

func scaleColF(m []float32, w, col int, f float32) {
	for i := col; i < len(m); i += w {
		m[i] *= f
	}
}

// Interface guards.
var (
	_ nodes.Typed = (*EmptyLatentImage)(nil)
	_ nodes.Typed = (*LatentUpscale)(nil)
	_ nodes.Typed = (*LatentUpscaleBy)(nil)
	_ nodes.Typed = (*LatentFromBatch)(nil)
	_ nodes.Typed = (*RepeatLatentBatch)(nil)
	_ nodes.Typed = (*LatentComposite)(nil)
)

package builtin

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/gpu/resample"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// Latent nodes (nodes.py EmptyLatentImage, LatentUpscale, LatentUpscaleBy,
// LatentFromBatch, RepeatLatentBatch, LatentComposite). LATENT values are *sd.Latent;
// nodes return new values and never write into their inputs.

// latentRuntime is the tensor runtime latent nodes allocate on when Options.Runtime is
// nil: a CPU runtime, made once on first use and read-only afterwards (latents are
// small; the sampler reads them wherever the model runs).
var latentRuntime = sync.OnceValues(func() (*gpu.Runtime, error) { return gpu.New(gpu.Options{}) })

func latentNodes(opts Options) []nodes.Node {
	return []nodes.Node{newEmptyLatentImage(opts), newLatentUpscale(), newLatentUpscaleBy(), newLatentFromBatch(),
		newRepeatLatentBatch(), newLatentComposite()}
}

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

// latentIn returns a LATENT input with its samples as (N, C, H, W) data.
func latentIn(in nodes.Inputs, name string) (*sd.Latent, []float32, [4]int, error) {
	l, err := typed[*sd.Latent](in, name, "LATENT")
	if err == nil && l == nil {
		err = fmt.Errorf("builtin: input %q: missing LATENT", name)
	}
	if err != nil {
		return nil, nil, [4]int{}, err
	}
	data, shape, err := sd.LatentData(l)
	if err != nil {
		return nil, nil, shape, fmt.Errorf("builtin: input %q: %w", name, err)
	}
	return l, data, shape, nil
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

func newEmptyLatentImage(opts Options) nodes.Node {
	return &simpleNode{schema: graph.Schema{
		Name: "EmptyLatentImage", DisplayName: "Empty Latent Image", Category: "latent",
		Description: "Create a new batch of empty latent images to be denoised via sampling.",
		Inputs: []graph.Input{
			widget("width", graph.TypeInt, map[string]any{"default": 512, "min": 16, "max": MaxResolution, "step": 8, "tooltip": "The width of the latent images in pixels."}),
			widget("height", graph.TypeInt, map[string]any{"default": 512, "min": 16, "max": MaxResolution, "step": 8, "tooltip": "The height of the latent images in pixels."}),
			widget("batch_size", graph.TypeInt, map[string]any{"default": 1, "min": 1, "max": 4096, "tooltip": "The number of latent images in the batch."}),
		},
		Outputs: outputs("LATENT"),
		Extra:   map[string]any{"output_tooltips": []any{"The empty latent image batch."}},
	}, run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		w, err := intIn(in, "width", 16, MaxResolution)
		if err != nil {
			return nodes.Result{}, err
		}
		h, err := intIn(in, "height", 16, MaxResolution)
		if err != nil {
			return nodes.Result{}, err
		}
		b, err := intIn(in, "batch_size", 1, 4096)
		if err != nil {
			return nodes.Result{}, err
		}
		shape := []int{b, 4, h / 8, w / 8}
		if _, err := sizeOf("latent", shape...); err != nil {
			return nodes.Result{}, err
		}
		rt := opts.Runtime
		if rt == nil {
			if rt, err = latentRuntime(); err != nil {
				return nodes.Result{}, err
			}
		}
		t, err := rt.Zeros(gpu.F32, shape...)
		if err != nil {
			return nodes.Result{}, err
		}
		return one(&sd.Latent{Samples: t})
	}}
}

// latentUpscaleMethods are LatentUpscale's choices (a subset of resample.Methods).
var latentUpscaleMethods = []string{"nearest-exact", "bilinear", "area", "bicubic", "bislerp"}

func newLatentUpscale() nodes.Node {
	return &simpleNode{schema: graph.Schema{
		Name: "LatentUpscale", DisplayName: "Upscale Latent", Category: "latent",
		Inputs: []graph.Input{
			socket("samples", "LATENT"),
			combo("upscale_method", latentUpscaleMethods...),
			step8("width", 512, 0), step8("height", 512, 0),
			combo("crop", "disabled", "center"),
		},
		Outputs: outputs("LATENT"),
	}, run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		l, data, shape, err := latentIn(in, "samples")
		if err != nil {
			return nodes.Result{}, err
		}
		method, err := in.String("upscale_method")
		if err != nil {
			return nodes.Result{}, err
		}
		crop, err := in.String("crop")
		if err != nil {
			return nodes.Result{}, err
		}
		w, err := intIn(in, "width", 0, MaxResolution)
		if err != nil {
			return nodes.Result{}, err
		}
		h, err := intIn(in, "height", 0, MaxResolution)
		if err != nil {
			return nodes.Result{}, err
		}
		if w == 0 && h == 0 {
			return one(l)
		}
		// A zero side follows the latent's aspect ratio; sides are at least 64 pixels.
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
		return upscaleLatent(l, data, shape, w/8, h/8, method, crop)
	}}
}

func upscaleLatent(l *sd.Latent, data []float32, shape [4]int, w, h int, method, crop string) (nodes.Result, error) {
	if !containsString(latentUpscaleMethods, method) {
		return nodes.Result{}, fmt.Errorf("builtin: upscale_method %q is not one of %v", method, latentUpscaleMethods)
	}
	if w <= 0 || h <= 0 {
		return nodes.Result{}, fmt.Errorf("builtin: latent upscale to %dx%d", w, h)
	}
	n := shape[0] * shape[1]
	if _, err := sizeOf("latent", n, h, w); err != nil {
		return nodes.Result{}, err
	}
	out, err := resample.Upscale(data, shape[0], shape[1], shape[2], shape[3], w, h, method, crop)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: latent upscale: %w", err)
	}
	nl, err := newLatent(l, out, [4]int{shape[0], shape[1], h, w})
	if err != nil {
		return nodes.Result{}, err
	}
	return one(nl)
}

func containsString(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func newLatentUpscaleBy() nodes.Node {
	return &simpleNode{schema: graph.Schema{
		Name: "LatentUpscaleBy", DisplayName: "Upscale Latent By", Category: "latent",
		Inputs: []graph.Input{
			socket("samples", "LATENT"),
			combo("upscale_method", latentUpscaleMethods...),
			widget("scale_by", graph.TypeFloat, map[string]any{"default": 1.5, "min": 0.01, "max": 8.0, "step": 0.01}),
		},
		Outputs: outputs("LATENT"),
	}, run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		l, data, shape, err := latentIn(in, "samples")
		if err != nil {
			return nodes.Result{}, err
		}
		method, err := in.String("upscale_method")
		if err != nil {
			return nodes.Result{}, err
		}
		s, err := floatIn(in, "scale_by", 0.01, 8)
		if err != nil {
			return nodes.Result{}, err
		}
		w := int(math.RoundToEven(float64(shape[3]) * s))
		h := int(math.RoundToEven(float64(shape[2]) * s))
		return upscaleLatent(l, data, shape, w, h, method, "disabled")
	}}
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

func newLatentFromBatch() nodes.Node {
	return &simpleNode{schema: graph.Schema{
		Name: "LatentFromBatch", DisplayName: "Latent From Batch", Category: "latent/batch",
		Inputs: []graph.Input{
			socket("samples", "LATENT"),
			widget("batch_index", graph.TypeInt, map[string]any{"default": 0, "min": 0, "max": 63}),
			widget("length", graph.TypeInt, map[string]any{"default": 1, "min": 1, "max": 64}),
		},
		Outputs: outputs("LATENT"),
	}, run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		l, data, shape, err := latentIn(in, "samples")
		if err != nil {
			return nodes.Result{}, err
		}
		idx, err := intIn(in, "batch_index", 0, 63)
		if err != nil {
			return nodes.Result{}, err
		}
		length, err := intIn(in, "length", 1, 64)
		if err != nil {
			return nodes.Result{}, err
		}
		n := shape[0]
		idx = min(n-1, idx)
		length = min(n-idx, length)
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
				rep := make([]float32, 0, max(mb, n)*mper)
				for i := 0; i < max(mb, n); i++ {
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
				return nodes.Result{}, fmt.Errorf("builtin: LatentFromBatch: batch_index list %v is shorter than the batch of %d", l.BatchIndex, n)
			}
			out.BatchIndex = append([]int(nil), l.BatchIndex[idx:idx+length]...)
		}
		return one(out)
	}}
}

func newRepeatLatentBatch() nodes.Node {
	return &simpleNode{schema: graph.Schema{
		Name: "RepeatLatentBatch", DisplayName: "Repeat Latent Batch", Category: "latent/batch",
		Inputs: []graph.Input{
			socket("samples", "LATENT"),
			widget("amount", graph.TypeInt, map[string]any{"default": 1, "min": 1, "max": 64}),
		},
		Outputs: outputs("LATENT"),
	}, run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		l, data, shape, err := latentIn(in, "samples")
		if err != nil {
			return nodes.Result{}, err
		}
		amount, err := intIn(in, "amount", 1, 64)
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
			// ComfyUI repeats a batched mask by amount (its own batch, not the
			// latent's); a single mask applies to every item as it is.
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
		return one(out)
	}}
}

func newLatentComposite() nodes.Node {
	return &simpleNode{schema: graph.Schema{
		Name: "LatentComposite", DisplayName: "Latent Composite", Category: "latent",
		Inputs: []graph.Input{
			socket("samples_to", "LATENT"), socket("samples_from", "LATENT"),
			step8("x", 0, 0), step8("y", 0, 0), step8("feather", 0, 0),
		},
		Outputs: outputs("LATENT"),
	}, run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		to, tdata, ts, err := latentIn(in, "samples_to")
		if err != nil {
			return nodes.Result{}, err
		}
		_, fdata, fs, err := latentIn(in, "samples_from")
		if err != nil {
			return nodes.Result{}, err
		}
		var v [3]int
		for i, name := range []string{"x", "y", "feather"} {
			if v[i], err = intIn(in, name, 0, MaxResolution); err != nil {
				return nodes.Result{}, err
			}
		}
		out, err := compositeLatent(tdata, ts, fdata, fs, v[0]/8, v[1]/8, v[2]/8)
		if err != nil {
			return nodes.Result{}, err
		}
		nl, err := newLatent(to, out, ts)
		if err != nil {
			return nodes.Result{}, err
		}
		return one(nl)
	}}
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

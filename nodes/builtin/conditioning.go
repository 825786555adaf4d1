package builtin

import (
	"context"
	"errors"
	"fmt"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// Conditioning nodes (nodes.py CLIPTextEncode, CLIPSetLastLayer, Conditioning*;
// comfy_extras/nodes_clip_sdxl.py). CONDITIONING values are sd.Conditioning: immutable
// lists whose entries share their tensors; a node that changes an entry copies it.

const clipSDXLModule = "comfy_extras.nodes_clip_sdxl"

// conditioningNodes lists the conditioning node classes.
func conditioningNodes() []nodes.Node {
	return []nodes.Node{
		newCLIPTextEncode(), newCLIPTextEncodeSDXL(), newCLIPTextEncodeSDXLRefiner(), newCLIPSetLastLayer(),
		newConditioningCombine(), newConditioningAverage(), newConditioningConcat(), newConditioningSetArea(),
		newConditioningSetTimestepRange(), newConditioningZeroOut(),
	}
}

// simpleNode is a node whose Run is a function of its inputs.
type simpleNode struct {
	schema graph.Schema
	run    func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error)
}

func (n *simpleNode) Schema() *graph.Schema { return &n.schema }

func (n *simpleNode) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	if err := ctx.Err(); err != nil {
		return nodes.Result{}, err
	}
	return n.run(ctx, env, in)
}

func one(v any) (nodes.Result, error) { return nodes.Result{Outputs: []any{v}}, nil }

// typed returns the input name as a T, with ComfyUI-style errors for a missing or
// mistyped link.
func typed[T any](in nodes.Inputs, name, kind string) (T, error) {
	var zero T
	v, ok := in[name]
	if !ok || v == nil {
		return zero, fmt.Errorf("builtin: input %q: missing %s", name, kind)
	}
	t, ok := v.(T)
	if !ok {
		return zero, fmt.Errorf("builtin: input %q: want %s, got %T", name, kind, v)
	}
	return t, nil
}

// checkConditioning admits a CONDITIONING whose every entry has a (1, tokens, dim)
// embedding.
func checkConditioning(c sd.Conditioning) error {
	for i, e := range c {
		if e.Embedding == nil || e.Embedding.Rank() != 3 {
			return fmt.Errorf("builtin: conditioning entry %d has no (1, tokens, dim) embedding", i)
		}
	}
	return nil
}

// checkCLIP admits a CLIP; a nil one comes from a checkpoint without text encoders.
func checkCLIP(c *sd.CLIP) error {
	if c == nil {
		// ComfyUI's wording: a checkpoint without a text encoder gives a None clip.
		return errors.New("builtin: the CLIP is empty (if the clip is from a checkpoint loader node, the checkpoint does not contain a valid clip or text encoder model)")
	}
	return nil
}

func condIn(in nodes.Inputs, name string) (sd.Conditioning, error) {
	c, err := typed[sd.Conditioning](in, name, "CONDITIONING")
	if err != nil {
		return nil, err
	}
	for i, e := range c {
		if e.Embedding == nil || e.Embedding.Rank() != 3 {
			return nil, fmt.Errorf("builtin: input %q: entry %d has no (1, tokens, dim) embedding", name, i)
		}
	}
	return c, nil
}

func clipIn(in nodes.Inputs, name string) (*sd.CLIP, error) {
	c, err := typed[*sd.CLIP](in, name, "CLIP")
	if err == nil && c == nil {
		err = fmt.Errorf("builtin: input %q: missing CLIP", name)
	}
	if err != nil {
		// ComfyUI's wording: a checkpoint without a text encoder gives a None clip.
		return nil, fmt.Errorf("%w (if the clip is from a checkpoint loader node, the checkpoint does not contain a valid clip or text encoder model)", err)
	}
	return c, nil
}

// withEntries returns a copy of c with f applied to every entry.
func withEntries(c sd.Conditioning, f func(*sd.Cond)) sd.Conditioning {
	out := make(sd.Conditioning, len(c))
	for i, e := range c {
		f(&e)
		out[i] = e
	}
	return out
}

func newCLIPTextEncode() nodes.Node {
	return &simpleNode{schema: graph.Schema{
		Name: "CLIPTextEncode", DisplayName: "CLIP Text Encode (Prompt)", Category: "conditioning",
		Description: "Encodes a text prompt using a CLIP model into an embedding that can be used to guide the diffusion model towards generating specific images.",
		Inputs: []graph.Input{
			widget("text", graph.TypeString, map[string]any{"multiline": true, "dynamicPrompts": true, "tooltip": "The text to be encoded."}),
			widget("clip", "CLIP", map[string]any{"tooltip": "The CLIP model used for encoding the text."}),
		},
		Outputs: outputs("CONDITIONING"),
		Extra:   map[string]any{"output_tooltips": []any{"A conditioning containing the embedded text used to guide the diffusion model."}},
	}, run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		text, err := in.String("text")
		if err != nil {
			return nodes.Result{}, err
		}
		c, err := clipIn(in, "clip")
		if err != nil {
			return nodes.Result{}, err
		}
		cond, err := sd.EncodePrompt(ctx, c, text)
		if err != nil {
			return nodes.Result{}, err
		}
		return one(cond)
	}}
}

func sdxlSize(name string, def int) graph.Input {
	return widget(name, graph.TypeInt, map[string]any{"default": def, "min": 0, "max": MaxResolution})
}

func prompt(name string) graph.Input {
	return widget(name, graph.TypeString, map[string]any{"multiline": true, "dynamicPrompts": true})
}

func newCLIPTextEncodeSDXL() nodes.Node {
	return &simpleNode{schema: graph.Schema{
		Name: "CLIPTextEncodeSDXL", Category: "advanced/conditioning", PythonModule: clipSDXLModule,
		Inputs: []graph.Input{
			socketV3("clip", "CLIP"),
			sdxlSize("width", 1024), sdxlSize("height", 1024), sdxlSize("crop_w", 0), sdxlSize("crop_h", 0),
			sdxlSize("target_width", 1024), sdxlSize("target_height", 1024),
			prompt("text_g"), prompt("text_l"),
		},
		Outputs: outputs("CONDITIONING"),
		Extra:   v3Extra(1, nil),
	}, run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		c, err := clipIn(in, "clip")
		if err != nil {
			return nodes.Result{}, err
		}
		var size unet.SizeConditioning
		for _, f := range []struct {
			name string
			dst  *int
		}{{"width", &size.Width}, {"height", &size.Height}, {"crop_w", &size.CropW}, {"crop_h", &size.CropH},
			{"target_width", &size.TargetWidth}, {"target_height", &size.TargetHeight}} {
			if *f.dst, err = intIn(in, f.name, 0, MaxResolution); err != nil {
				return nodes.Result{}, err
			}
		}
		g, err := in.String("text_g")
		if err != nil {
			return nodes.Result{}, err
		}
		l, err := in.String("text_l")
		if err != nil {
			return nodes.Result{}, err
		}
		cond, err := sd.EncodePrompts(ctx, c, map[string]string{"g": g, "l": l}, g)
		if err != nil {
			return nodes.Result{}, err
		}
		return one(withEntries(cond, func(e *sd.Cond) { s := size; e.Size = &s }))
	}}
}

func newCLIPTextEncodeSDXLRefiner() nodes.Node {
	return &simpleNode{schema: graph.Schema{
		Name: "CLIPTextEncodeSDXLRefiner", Category: "advanced/conditioning", PythonModule: clipSDXLModule,
		Inputs: []graph.Input{
			widget("ascore", graph.TypeFloat, map[string]any{"default": 6.0, "min": 0.0, "max": 1000.0, "step": 0.01}),
			sdxlSize("width", 1024), sdxlSize("height", 1024),
			prompt("text"),
			socketV3("clip", "CLIP"),
		},
		Outputs: outputs("CONDITIONING"),
		Extra:   v3Extra(1, nil),
	}, run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		c, err := clipIn(in, "clip")
		if err != nil {
			return nodes.Result{}, err
		}
		score, err := floatIn(in, "ascore", 0, 1000)
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
		text, err := in.String("text")
		if err != nil {
			return nodes.Result{}, err
		}
		cond, err := sd.EncodePrompt(ctx, c, text)
		if err != nil {
			return nodes.Result{}, err
		}
		// The refiner's ADM reads width, height, crops (0 here) and the score.
		return one(withEntries(cond, func(e *sd.Cond) {
			e.Size = &unet.SizeConditioning{Width: w, Height: h, TargetWidth: w, TargetHeight: h}
			e.AestheticScore = score
		}))
	}}
}

func newCLIPSetLastLayer() nodes.Node {
	return &simpleNode{schema: graph.Schema{
		Name: "CLIPSetLastLayer", DisplayName: "CLIP Set Last Layer", Category: "conditioning",
		Inputs: []graph.Input{
			socket("clip", "CLIP"),
			widget("stop_at_clip_layer", graph.TypeInt, map[string]any{"default": -1, "min": -24, "max": -1, "step": 1}),
		},
		Outputs: outputs("CLIP"),
	}, run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		c, err := clipIn(in, "clip")
		if err != nil {
			return nodes.Result{}, err
		}
		layer, err := intIn(in, "stop_at_clip_layer", -24, -1)
		if err != nil {
			return nodes.Result{}, err
		}
		return one(c.WithLayer(layer))
	}}
}

func newConditioningCombine() nodes.Node {
	return &simpleNode{schema: graph.Schema{
		Name: "ConditioningCombine", DisplayName: "Conditioning (Combine)", Category: "conditioning",
		Inputs:  []graph.Input{socket("conditioning_1", "CONDITIONING"), socket("conditioning_2", "CONDITIONING")},
		Outputs: outputs("CONDITIONING"),
	}, run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		a, err := condIn(in, "conditioning_1")
		if err != nil {
			return nodes.Result{}, err
		}
		b, err := condIn(in, "conditioning_2")
		if err != nil {
			return nodes.Result{}, err
		}
		out := make(sd.Conditioning, 0, len(a)+len(b))
		return one(append(append(out, a...), b...))
	}}
}

// fromFirst returns the first entry of conditioning_from (ComfyUI uses only it and logs
// a warning when there are more).
func fromFirst(env *nodes.Env, node string, c sd.Conditioning) (sd.Cond, error) {
	if len(c) == 0 {
		return sd.Cond{}, fmt.Errorf("builtin: %s: conditioning_from is empty", node)
	}
	if len(c) > 1 && env != nil && env.Logger != nil {
		env.Logger.Warn(node+": conditioning_from contains more than 1 cond, only the first one is applied", "count", len(c))
	}
	return c[0], nil
}

func newConditioningAverage() nodes.Node {
	return &simpleNode{schema: graph.Schema{
		Name: "ConditioningAverage", DisplayName: "ConditioningAverage", Category: "conditioning",
		Inputs: []graph.Input{
			socket("conditioning_to", "CONDITIONING"), socket("conditioning_from", "CONDITIONING"),
			widget("conditioning_to_strength", graph.TypeFloat, map[string]any{"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
		},
		Outputs: outputs("CONDITIONING"),
	}, run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		to, err := condIn(in, "conditioning_to")
		if err != nil {
			return nodes.Result{}, err
		}
		from, err := condIn(in, "conditioning_from")
		if err != nil {
			return nodes.Result{}, err
		}
		s, err := floatIn(in, "conditioning_to_strength", 0, 1)
		if err != nil {
			return nodes.Result{}, err
		}
		src, err := fromFirst(env, "ConditioningAverage", from)
		if err != nil {
			return nodes.Result{}, err
		}
		out, err := averageConds(to, src, s)
		if err != nil {
			return nodes.Result{}, err
		}
		return one(out)
	}}
}

// averageConds is ConditioningAverage.addWeighted: each entry's embedding becomes
// to·s + from·(1−s), from cut or zero-padded to the entry's token count; the pooled
// outputs mix the same way (an entry without one takes from's).
func averageConds(to sd.Conditioning, from sd.Cond, s float64) (sd.Conditioning, error) {
	fv, err := from.Embedding.Float32()
	if err != nil {
		return nil, err
	}
	ft, fd := from.Embedding.Dim(1), from.Embedding.Dim(2)
	ws, wf := float32(s), float32(1.0-s)
	out := make(sd.Conditioning, len(to))
	for i, e := range to {
		if e.Embedding.Dim(0) != 1 || e.Embedding.Dim(2) != fd {
			return nil, fmt.Errorf("builtin: ConditioningAverage: entry %d embedding %v does not match conditioning_from %v", i, e.Embedding.Shape(), from.Embedding.Shape())
		}
		tv, err := e.Embedding.Float32()
		if err != nil {
			return nil, err
		}
		tt := e.Embedding.Dim(1)
		mixed := make([]float32, len(tv))
		for t := 0; t < tt; t++ {
			for d := 0; d < fd; d++ {
				var f float32
				if t < ft {
					f = fv[t*fd+d]
				}
				mixed[t*fd+d] = tv[t*fd+d]*ws + f*wf
			}
		}
		if e.Embedding, err = e.Embedding.Runtime().FromFloat32(mixed, 1, tt, fd); err != nil {
			return nil, err
		}
		switch {
		case from.Pooled != nil && e.Pooled != nil:
			if e.Pooled, err = mixTensors(e.Pooled, from.Pooled, ws, wf); err != nil {
				return nil, fmt.Errorf("builtin: ConditioningAverage: pooled outputs: %w", err)
			}
		case from.Pooled != nil:
			e.Pooled = from.Pooled
		}
		out[i] = e
	}
	return out, nil
}

func mixTensors(a, b *gpu.Tensor, wa, wb float32) (*gpu.Tensor, error) {
	av, err := a.Float32()
	if err != nil {
		return nil, err
	}
	bv, err := b.Float32()
	if err != nil {
		return nil, err
	}
	if len(av) != len(bv) {
		return nil, fmt.Errorf("shapes %v and %v differ", a.Shape(), b.Shape())
	}
	out := make([]float32, len(av))
	for i := range out {
		out[i] = av[i]*wa + bv[i]*wb
	}
	return a.Runtime().FromFloat32(out, a.Shape()...)
}

func newConditioningConcat() nodes.Node {
	return &simpleNode{schema: graph.Schema{
		Name: "ConditioningConcat", DisplayName: "Conditioning (Concat)", Category: "conditioning",
		Inputs:  []graph.Input{socket("conditioning_to", "CONDITIONING"), socket("conditioning_from", "CONDITIONING")},
		Outputs: outputs("CONDITIONING"),
	}, run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		to, err := condIn(in, "conditioning_to")
		if err != nil {
			return nodes.Result{}, err
		}
		from, err := condIn(in, "conditioning_from")
		if err != nil {
			return nodes.Result{}, err
		}
		src, err := fromFirst(env, "ConditioningConcat", from)
		if err != nil {
			return nodes.Result{}, err
		}
		out := make(sd.Conditioning, len(to))
		for i, e := range to {
			// torch.cat along the tokens: batch and width must agree.
			if e.Embedding.Dim(0) != src.Embedding.Dim(0) || e.Embedding.Dim(2) != src.Embedding.Dim(2) {
				return nodes.Result{}, fmt.Errorf("builtin: ConditioningConcat: entry %d embedding %v does not match conditioning_from %v", i, e.Embedding.Shape(), src.Embedding.Shape())
			}
			if e.Embedding, err = gpu.Concat(e.Embedding.Runtime(), 1, e.Embedding, src.Embedding); err != nil {
				return nodes.Result{}, fmt.Errorf("builtin: ConditioningConcat: %w", err)
			}
			out[i] = e
		}
		return one(out)
	}}
}

func step8(name string, def, min int) graph.Input {
	return widget(name, graph.TypeInt, map[string]any{"default": def, "min": min, "max": MaxResolution, "step": 8})
}

func newConditioningSetArea() nodes.Node {
	return &simpleNode{schema: graph.Schema{
		Name: "ConditioningSetArea", DisplayName: "Conditioning (Set Area)", Category: "conditioning",
		Inputs: []graph.Input{
			socket("conditioning", "CONDITIONING"),
			step8("width", 64, 64), step8("height", 64, 64), step8("x", 0, 0), step8("y", 0, 0),
			widget("strength", graph.TypeFloat, map[string]any{"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}),
		},
		Outputs: outputs("CONDITIONING"),
	}, run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		c, err := condIn(in, "conditioning")
		if err != nil {
			return nodes.Result{}, err
		}
		var v [4]int
		for i, name := range []string{"width", "height", "x", "y"} {
			lo := int64(0)
			if i < 2 {
				lo = 64
			}
			if v[i], err = intIn(in, name, lo, MaxResolution); err != nil {
				return nodes.Result{}, err
			}
		}
		strength, err := floatIn(in, "strength", 0, 10)
		if err != nil {
			return nodes.Result{}, err
		}
		// ComfyUI stores the area in latent units: (h//8, w//8, y//8, x//8).
		area := sd.Area{Height: v[1] / 8, Width: v[0] / 8, Y: v[3] / 8, X: v[2] / 8}
		return one(withEntries(c, func(e *sd.Cond) {
			a := area
			e.Area, e.Strength = &a, strength
		}))
	}}
}

func newConditioningSetTimestepRange() nodes.Node {
	return &simpleNode{schema: graph.Schema{
		Name: "ConditioningSetTimestepRange", DisplayName: "ConditioningSetTimestepRange", Category: "advanced/conditioning",
		Inputs: []graph.Input{
			socket("conditioning", "CONDITIONING"),
			widget("start", graph.TypeFloat, map[string]any{"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001}),
			widget("end", graph.TypeFloat, map[string]any{"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001}),
		},
		Outputs: outputs("CONDITIONING"),
	}, run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		c, err := condIn(in, "conditioning")
		if err != nil {
			return nodes.Result{}, err
		}
		start, err := floatIn(in, "start", 0, 1)
		if err != nil {
			return nodes.Result{}, err
		}
		end, err := floatIn(in, "end", 0, 1)
		if err != nil {
			return nodes.Result{}, err
		}
		return one(withEntries(c, func(e *sd.Cond) { e.StartPercent, e.EndPercent = start, end }))
	}}
}

func newConditioningZeroOut() nodes.Node {
	return &simpleNode{schema: graph.Schema{
		Name: "ConditioningZeroOut", DisplayName: "ConditioningZeroOut", Category: "advanced/conditioning",
		Inputs:  []graph.Input{socket("conditioning", "CONDITIONING")},
		Outputs: outputs("CONDITIONING"),
	}, run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		c, err := condIn(in, "conditioning")
		if err != nil {
			return nodes.Result{}, err
		}
		out := make(sd.Conditioning, len(c))
		for i, e := range c {
			if e.Embedding, err = zerosLike(e.Embedding); err != nil {
				return nodes.Result{}, err
			}
			if e.Pooled != nil {
				if e.Pooled, err = zerosLike(e.Pooled); err != nil {
					return nodes.Result{}, err
				}
			}
			out[i] = e
		}
		return one(out)
	}}
}

func zerosLike(t *gpu.Tensor) (*gpu.Tensor, error) {
	return t.Runtime().FromFloat32(make([]float32, t.Numel()), t.Shape()...)
}

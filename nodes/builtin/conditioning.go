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

// withEntries returns a copy of c with f applied to every entry.
func withEntries(c sd.Conditioning, f func(*sd.Cond)) sd.Conditioning {
	out := make(sd.Conditioning, len(c))
	for i, e := range c {
		f(&e)
		out[i] = e
	}
	return out
}

// CLIPTextEncode is ComfyUI's CLIPTextEncode ("CLIP Text Encode (Prompt)").
type CLIPTextEncode struct {
	Text string   `input:"text"`
	CLIP *sd.CLIP `input:"clip"`
}

// Schema implements nodes.Typed.
func (*CLIPTextEncode) Schema() graph.Schema {
	return graph.Schema{
		Name: "CLIPTextEncode", DisplayName: "CLIP Text Encode (Prompt)", Category: "conditioning",
		Description: "Encodes a text prompt using a CLIP model into an embedding that can be used to guide the diffusion model towards generating specific images.",
		Inputs: []graph.Input{
			{Name: "text", Type: graph.TypeString, Multiline: graph.On, DynamicPrompts: true, Tooltip: "The text to be encoded."},
			{Name: "clip", Type: "CLIP", Tooltip: "The CLIP model used for encoding the text."},
		},
		Outputs: outputs("CONDITIONING"),
		Extra:   map[string]any{"output_tooltips": []any{"A conditioning containing the embedded text used to guide the diffusion model."}},
	}
}

// Run implements nodes.Typed.
func (n *CLIPTextEncode) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(sd.EncodePrompt(ctx, n.CLIP, n.Text))
}

// sdxlSize is an SDXL size-conditioning widget: 0 … MAX_RESOLUTION, no step.
func sdxlSize(name string, def int) graph.Input {
	return graph.Input{Name: name, Type: graph.TypeInt, Default: def, Min: graph.Num(0), Max: graph.Num(MaxResolution)}
}

func prompt(name string) graph.Input {
	return graph.Input{Name: name, Type: graph.TypeString, Multiline: graph.On, DynamicPrompts: true}
}

// CLIPTextEncodeSDXL is ComfyUI's CLIPTextEncodeSDXL: text_g and text_l with SDXL's
// size conditioning.
type CLIPTextEncodeSDXL struct {
	CLIP         *sd.CLIP `input:"clip"`
	Width        int      `input:"width"`
	Height       int      `input:"height"`
	CropW        int      `input:"crop_w"`
	CropH        int      `input:"crop_h"`
	TargetWidth  int      `input:"target_width"`
	TargetHeight int      `input:"target_height"`
	TextG        string   `input:"text_g"`
	TextL        string   `input:"text_l"`
}

// Schema implements nodes.Typed.
func (*CLIPTextEncodeSDXL) Schema() graph.Schema {
	return graph.Schema{
		Name: "CLIPTextEncodeSDXL", Category: "advanced/conditioning", PythonModule: clipSDXLModule,
		Inputs: []graph.Input{
			socketV3("clip", "CLIP"),
			sdxlSize("width", 1024), sdxlSize("height", 1024), sdxlSize("crop_w", 0), sdxlSize("crop_h", 0),
			sdxlSize("target_width", 1024), sdxlSize("target_height", 1024),
			prompt("text_g"), prompt("text_l"),
		},
		Outputs: outputs("CONDITIONING"),
		Extra:   v3Extra(1, nil),
	}
}

// Run implements nodes.Typed.
func (n *CLIPTextEncodeSDXL) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	size := unet.SizeConditioning{Width: n.Width, Height: n.Height, CropW: n.CropW, CropH: n.CropH,
		TargetWidth: n.TargetWidth, TargetHeight: n.TargetHeight}
	cond, err := sd.EncodePrompts(ctx, n.CLIP, map[string]string{"g": n.TextG, "l": n.TextL}, n.TextG)
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.One(withEntries(cond, func(e *sd.Cond) { s := size; e.Size = &s }), nil)
}

// CLIPTextEncodeSDXLRefiner is ComfyUI's CLIPTextEncodeSDXLRefiner: a prompt with the
// refiner's aesthetic score and size.
type CLIPTextEncodeSDXLRefiner struct {
	Ascore float64  `input:"ascore"`
	Width  int      `input:"width"`
	Height int      `input:"height"`
	Text   string   `input:"text"`
	CLIP   *sd.CLIP `input:"clip"`
}

// Schema implements nodes.Typed.
func (*CLIPTextEncodeSDXLRefiner) Schema() graph.Schema {
	return graph.Schema{
		Name: "CLIPTextEncodeSDXLRefiner", Category: "advanced/conditioning", PythonModule: clipSDXLModule,
		Inputs: []graph.Input{
			{Name: "ascore", Type: graph.TypeFloat, Default: 6.0, Min: graph.Num(0.0), Max: graph.Num(1000.0), Step: graph.Num(0.01)},
			sdxlSize("width", 1024), sdxlSize("height", 1024),
			prompt("text"),
			socketV3("clip", "CLIP"),
		},
		Outputs: outputs("CONDITIONING"),
		Extra:   v3Extra(1, nil),
	}
}

// Run implements nodes.Typed. The refiner's ADM reads width, height, crops (0 here) and
// the score.
func (n *CLIPTextEncodeSDXLRefiner) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	cond, err := sd.EncodePrompt(ctx, n.CLIP, n.Text)
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.One(withEntries(cond, func(e *sd.Cond) {
		e.Size = &unet.SizeConditioning{Width: n.Width, Height: n.Height, TargetWidth: n.Width, TargetHeight: n.Height}
		e.AestheticScore = n.Ascore
	}), nil)
}

// CLIPSetLastLayer is ComfyUI's CLIPSetLastLayer.
type CLIPSetLastLayer struct {
	CLIP            *sd.CLIP `input:"clip"`
	StopAtCLIPLayer int      `input:"stop_at_clip_layer"`
}

// Schema implements nodes.Typed.
func (*CLIPSetLastLayer) Schema() graph.Schema {
	return graph.Schema{
		Name: "CLIPSetLastLayer", DisplayName: "CLIP Set Last Layer", Category: "conditioning",
		Inputs: []graph.Input{
			socket("clip", "CLIP"),
			{Name: "stop_at_clip_layer", Type: graph.TypeInt, Default: -1, Min: graph.Num(-24), Max: graph.Num(-1), Step: graph.Num(1)},
		},
		Outputs: outputs("CLIP"),
	}
}

// Run implements nodes.Typed.
func (n *CLIPSetLastLayer) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(n.CLIP.WithLayer(n.StopAtCLIPLayer), nil)
}

// ConditioningCombine is ComfyUI's ConditioningCombine: both lists, one after the other.
type ConditioningCombine struct {
	Conditioning1 sd.Conditioning `input:"conditioning_1"`
	Conditioning2 sd.Conditioning `input:"conditioning_2"`
}

// Schema implements nodes.Typed.
func (*ConditioningCombine) Schema() graph.Schema {
	return graph.Schema{
		Name: "ConditioningCombine", DisplayName: "Conditioning (Combine)", Category: "conditioning",
		Inputs:  []graph.Input{socket("conditioning_1", "CONDITIONING"), socket("conditioning_2", "CONDITIONING")},
		Outputs: outputs("CONDITIONING"),
	}
}

// Run implements nodes.Typed.
func (n *ConditioningCombine) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	out := make(sd.Conditioning, 0, len(n.Conditioning1)+len(n.Conditioning2))
	return nodes.One(append(append(out, n.Conditioning1...), n.Conditioning2...), nil)
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

// ConditioningAverage is ComfyUI's ConditioningAverage.
type ConditioningAverage struct {
	ConditioningTo         sd.Conditioning `input:"conditioning_to"`
	ConditioningFrom       sd.Conditioning `input:"conditioning_from"`
	ConditioningToStrength float64         `input:"conditioning_to_strength"`
}

// Schema implements nodes.Typed.
func (*ConditioningAverage) Schema() graph.Schema {
	return graph.Schema{
		Name: "ConditioningAverage", DisplayName: "ConditioningAverage", Category: "conditioning",
		Inputs: []graph.Input{
			socket("conditioning_to", "CONDITIONING"), socket("conditioning_from", "CONDITIONING"),
			{Name: "conditioning_to_strength", Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(0.0), Max: graph.Num(1.0), Step: graph.Num(0.01)},
		},
		Outputs: outputs("CONDITIONING"),
	}
}

// Run implements nodes.Typed.
func (n *ConditioningAverage) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	src, err := fromFirst(env, "ConditioningAverage", n.ConditioningFrom)
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.One(averageConds(n.ConditioningTo, src, n.ConditioningToStrength))
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

// ConditioningConcat is ComfyUI's ConditioningConcat: conditioning_from's first
// embedding appended to every entry's tokens.
type ConditioningConcat struct {
	ConditioningTo   sd.Conditioning `input:"conditioning_to"`
	ConditioningFrom sd.Conditioning `input:"conditioning_from"`
}

// Schema implements nodes.Typed.
func (*ConditioningConcat) Schema() graph.Schema {
	return graph.Schema{
		Name: "ConditioningConcat", DisplayName: "Conditioning (Concat)", Category: "conditioning",
		Inputs:  []graph.Input{socket("conditioning_to", "CONDITIONING"), socket("conditioning_from", "CONDITIONING")},
		Outputs: outputs("CONDITIONING"),
	}
}

// Run implements nodes.Typed.
func (n *ConditioningConcat) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	src, err := fromFirst(env, "ConditioningConcat", n.ConditioningFrom)
	if err != nil {
		return nodes.Result{}, err
	}
	out := make(sd.Conditioning, len(n.ConditioningTo))
	for i, e := range n.ConditioningTo {
		// torch.cat along the tokens: batch and width must agree.
		if e.Embedding.Dim(0) != src.Embedding.Dim(0) || e.Embedding.Dim(2) != src.Embedding.Dim(2) {
			return nodes.Result{}, fmt.Errorf("builtin: ConditioningConcat: entry %d embedding %v does not match conditioning_from %v", i, e.Embedding.Shape(), src.Embedding.Shape())
		}
		if e.Embedding, err = gpu.Concat(e.Embedding.Runtime(), 1, e.Embedding, src.Embedding); err != nil {
			return nodes.Result{}, fmt.Errorf("builtin: ConditioningConcat: %w", err)
		}
		out[i] = e
	}
	return nodes.One(out, nil)
}

// step8 is a pixel widget on the latent grid: 0 … MAX_RESOLUTION in steps of 8.
func step8(name string, def, min int) graph.Input {
	return graph.Input{Name: name, Type: graph.TypeInt, Default: def, Min: graph.Num(min), Max: graph.Num(MaxResolution), Step: graph.Num(8)}
}

// ConditioningSetArea is ComfyUI's ConditioningSetArea.
type ConditioningSetArea struct {
	Conditioning sd.Conditioning `input:"conditioning"`
	Width        int             `input:"width"`
	Height       int             `input:"height"`
	X            int             `input:"x"`
	Y            int             `input:"y"`
	Strength     float64         `input:"strength"`
}

// Schema implements nodes.Typed.
func (*ConditioningSetArea) Schema() graph.Schema {
	return graph.Schema{
		Name: "ConditioningSetArea", DisplayName: "Conditioning (Set Area)", Category: "conditioning",
		Inputs: []graph.Input{
			socket("conditioning", "CONDITIONING"),
			step8("width", 64, 64), step8("height", 64, 64), step8("x", 0, 0), step8("y", 0, 0),
			{Name: "strength", Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(0.0), Max: graph.Num(10.0), Step: graph.Num(0.01)},
		},
		Outputs: outputs("CONDITIONING"),
	}
}

// Run implements nodes.Typed. ComfyUI stores the area in latent units: (h//8, w//8,
// y//8, x//8), replacing a percentage area and turning "mask bounds" off.
func (n *ConditioningSetArea) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	area := sd.Area{Height: n.Height / 8, Width: n.Width / 8, Y: n.Y / 8, X: n.X / 8}
	return nodes.One(withEntries(n.Conditioning, func(e *sd.Cond) {
		a := area
		e.Area, e.AreaPercent, e.Strength, e.SetAreaToBounds = &a, nil, n.Strength, false
	}), nil)
}

// ConditioningSetTimestepRange is ComfyUI's ConditioningSetTimestepRange.
type ConditioningSetTimestepRange struct {
	Conditioning sd.Conditioning `input:"conditioning"`
	Start        float64         `input:"start"`
	End          float64         `input:"end"`
}

// Schema implements nodes.Typed.
func (*ConditioningSetTimestepRange) Schema() graph.Schema {
	return graph.Schema{
		Name: "ConditioningSetTimestepRange", DisplayName: "ConditioningSetTimestepRange", Category: "advanced/conditioning",
		Inputs: []graph.Input{
			socket("conditioning", "CONDITIONING"),
			{Name: "start", Type: graph.TypeFloat, Default: 0.0, Min: graph.Num(0.0), Max: graph.Num(1.0), Step: graph.Num(0.001)},
			{Name: "end", Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(0.0), Max: graph.Num(1.0), Step: graph.Num(0.001)},
		},
		Outputs: outputs("CONDITIONING"),
	}
}

// Run implements nodes.Typed.
func (n *ConditioningSetTimestepRange) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(withEntries(n.Conditioning, func(e *sd.Cond) { e.StartPercent, e.EndPercent = n.Start, n.End }), nil)
}

// ConditioningZeroOut is ComfyUI's ConditioningZeroOut: every embedding and pooled
// output replaced by zeros.
type ConditioningZeroOut struct {
	Conditioning sd.Conditioning `input:"conditioning"`
}

// Schema implements nodes.Typed.
func (*ConditioningZeroOut) Schema() graph.Schema {
	return graph.Schema{
		Name: "ConditioningZeroOut", DisplayName: "ConditioningZeroOut", Category: "advanced/conditioning",
		Inputs:  []graph.Input{socket("conditioning", "CONDITIONING")},
		Outputs: outputs("CONDITIONING"),
	}
}

// Run implements nodes.Typed.
func (n *ConditioningZeroOut) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	out := make(sd.Conditioning, len(n.Conditioning))
	var err error
	for i, e := range n.Conditioning {
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
	return nodes.One(out, nil)
}

func zerosLike(t *gpu.Tensor) (*gpu.Tensor, error) {
	return t.Runtime().FromFloat32(make([]float32, t.Numel()), t.Shape()...)
}

// Interface guards.
var (
	_ nodes.Typed = (*CLIPTextEncode)(nil)
	_ nodes.Typed = (*CLIPTextEncodeSDXL)(nil)
	_ nodes.Typed = (*CLIPTextEncodeSDXLRefiner)(nil)
	_ nodes.Typed = (*CLIPSetLastLayer)(nil)
	_ nodes.Typed = (*ConditioningCombine)(nil)
	_ nodes.Typed = (*ConditioningAverage)(nil)
	_ nodes.Typed = (*ConditioningConcat)(nil)
	_ nodes.Typed = (*ConditioningSetArea)(nil)
	_ nodes.Typed = (*ConditioningSetTimestepRange)(nil)
	_ nodes.Typed = (*ConditioningZeroOut)(nil)
)

package controlnet

import (
	"fmt"

	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
)

// UnionTypes are the control types of union / promax ControlNets, by name
// (comfy/cldm/control_types.py); SetUnionControlNetType picks one, "auto" none.
var UnionTypes = []string{"openpose", "depth", "hed/pidi/scribble/ted", "canny/lineart/anime_lineart/mlsd",
	"normal", "segment", "tile", "repaint"}

// Union is the part of a union ControlNet (xinsir's ControlNetPlus, as
// comfy/cldm/cldm.py builds it) that mixes a control type into the hint features and
// the timestep embedding.
type Union struct {
	// TaskEmbedding is one 320-wide embedding per control type.
	TaskEmbedding *gpu.Tensor `sd:"task_embedding"`
	// Layers are ResBlockUnionControlnet: pre-norm self-attention (8 heads, packed
	// in_proj) and a QuickGELU MLP.
	Layers []struct {
		InProj  nn.Linear `sd:"attn.in_proj"`
		OutProj nn.Linear `sd:"attn.out_proj"`
		LN1     nn.Norm   `sd:"ln_1"`
		FC      nn.Linear `sd:"mlp.c_fc"`
		Proj    nn.Linear `sd:"mlp.c_proj"`
		LN2     nn.Norm   `sd:"ln_2"`
	} `sd:"transformer_layes"`
	SpatialChProjs nn.Linear `sd:"spatial_ch_projs"`
	// AddEmbedding embeds the one-hot control type vector (256-d sinusoidal per type)
	// into the timestep embedding's width.
	AddEmbedding struct {
		L1 nn.Linear `sd:"linear_1"`
		L2 nn.Linear `sd:"linear_2"`
	} `sd:"control_add_embedding"`
}

func loadUnion(rt *gpu.Runtime, src statedict.Source, prefix string) (*Union, error) {
	u := &Union{}
	if _, err := statedict.Bind(rt, src, prefix, u); err != nil {
		return nil, fmt.Errorf("controlnet: union: %w", err)
	}
	if u.TaskEmbedding.Rank() != 2 || len(u.Layers) == 0 {
		return nil, fmt.Errorf("controlnet: union: task_embedding %v and %d transformer layers", u.TaskEmbedding.Shape(), len(u.Layers))
	}
	if w := u.AddEmbedding.L1.Weight.Dim(1); w != 256*u.NumTypes() {
		return nil, fmt.Errorf("controlnet: union: control_add_embedding takes %d values, %d types need %d", w, u.NumTypes(), 256*u.NumTypes())
	}
	return u, nil
}

// NumTypes is how many control types the model knows (6 for union, 8 for promax).
func (u *Union) NumTypes() int { return u.TaskEmbedding.Dim(0) }

// check refuses a control type the model does not know, in ComfyUI's words.
func (u *Union) check(types []int) error {
	for _, t := range types {
		if t < 0 || t >= u.NumTypes() {
			name := fmt.Sprint(t)
			if t >= 0 && t < len(UnionTypes) {
				name = UnionTypes[t]
			}
			return fmt.Errorf("controlnet: control type %s(%d) is out of range for the number of control types(%d) supported; consider the ProMax ControlNet Union model", name, t, u.NumTypes())
		}
	}
	if len(types) > 1 {
		return fmt.Errorf("controlnet: %d control types at once: the union ControlNet takes one", len(types))
	}
	return nil
}

// embedding is ControlAddEmbedding.forward: the control types as a one-hot vector,
// each entry's 256-d sinusoidal embedding, concatenated and put through two linears
// with SiLU between them: (1, time embedding width). It is added to every item's
// timestep embedding, with or without a type ("auto" embeds the zero vector).
func (u *Union) embedding(rt *gpu.Runtime, types []int) (*gpu.Tensor, error) {
	n := u.NumTypes()
	onehot := make([]float32, n)
	for _, t := range types {
		onehot[t] = 1
	}
	t, err := rt.FromFloat32(onehot, n)
	if err != nil {
		return nil, err
	}
	e, err := then(t, func(x *gpu.Tensor) (*gpu.Tensor, error) {
		return gpu.TimestepEmbedding(rt, x, gpu.TimestepParams{Dim: 256, MaxPeriod: 10000})
	})
	if err != nil {
		return nil, err
	}
	if e, err = then(e, func(x *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Reshape(rt, x, 1, n*256) }); err != nil {
		return nil, err
	}
	if e, err = then(e, func(x *gpu.Tensor) (*gpu.Tensor, error) { return u.AddEmbedding.L1.Forward(rt, x) }); err != nil {
		return nil, err
	}
	if e, err = then(e, func(x *gpu.Tensor) (*gpu.Tensor, error) { return gpu.SiLU(rt, x) }); err != nil {
		return nil, err
	}
	return then(e, func(x *gpu.Tensor) (*gpu.Tensor, error) { return u.AddEmbedding.L2.Forward(rt, x) })
}

// merge is union_controlnet_merge for one control type: the hint features' spatial
// mean plus the type's task embedding goes through the transformer layers and
// spatial_ch_projs, and the result is added to every position of the features. guided
// is (B, 320, H, W); a new tensor is returned.
func (u *Union) merge(rt *gpu.Runtime, guided *gpu.Tensor, typ int) (*gpu.Tensor, error) {
	b, c := guided.Dim(0), guided.Dim(1)
	if u.TaskEmbedding.Dim(1) != c {
		return nil, fmt.Errorf("controlnet: union: task embeddings of width %d for hint features of %d channels", u.TaskEmbedding.Dim(1), c)
	}
	g, err := guided.Float32()
	if err != nil {
		return nil, err
	}
	task, err := u.TaskEmbedding.Float32()
	if err != nil {
		return nil, err
	}
	plane := guided.Dim(2) * guided.Dim(3)
	seq := make([]float32, b*c)
	for i := 0; i < b*c; i++ {
		// torch.mean over (H, W), then the task embedding.
		var s float32
		for _, v := range g[i*plane : (i+1)*plane] {
			s += v
		}
		seq[i] = s/float32(plane) + task[typ*c+i%c]
	}
	x, err := rt.FromFloat32(seq, b, 1, c)
	if err != nil {
		return nil, err
	}
	for li := range u.Layers {
		if x, err = then(x, func(t *gpu.Tensor) (*gpu.Tensor, error) { return u.layer(rt, li, t) }); err != nil {
			return nil, fmt.Errorf("controlnet: union: transformer_layes.%d: %w", li, err)
		}
	}
	alpha, err := then(x, func(t *gpu.Tensor) (*gpu.Tensor, error) { return u.SpatialChProjs.Forward(rt, t) })
	if err != nil {
		return nil, err
	}
	alpha4, err := then(alpha, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Reshape(rt, t, b, c, 1, 1) })
	if err != nil {
		return nil, err
	}
	defer alpha4.Release()
	return gpu.Add(rt, guided, alpha4)
}

// layer is ResBlockUnionControlnet.forward on a (B, 1, C) sequence. With one position
// the attention's softmax is 1, so the attention output is the value projection.
func (u *Union) layer(rt *gpu.Runtime, i int, x *gpu.Tensor) (*gpu.Tensor, error) {
	l := &u.Layers[i]
	c := x.Dim(2)
	h, err := gpu.LayerNorm(rt, x, l.LN1.Weight, l.LN1.Bias, 1e-5)
	if err != nil {
		return nil, err
	}
	if h, err = then(h, func(t *gpu.Tensor) (*gpu.Tensor, error) { return l.InProj.Forward(rt, t) }); err != nil {
		return nil, err
	}
	v, err := gpu.Narrow(h, 2, 2*c, c)
	h.Release()
	if err != nil {
		return nil, err
	}
	if v, err = then(v, func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.Contiguous(rt, t) }); err != nil {
		return nil, err
	}
	if v, err = then(v, func(t *gpu.Tensor) (*gpu.Tensor, error) { return l.OutProj.Forward(rt, t) }); err != nil {
		return nil, err
	}
	x1, err := gpu.Add(rt, x, v)
	v.Release()
	if err != nil {
		return nil, err
	}
	m, err := gpu.LayerNorm(rt, x1, l.LN2.Weight, l.LN2.Bias, 1e-5)
	if err != nil {
		x1.Release()
		return nil, err
	}
	for _, f := range []func(*gpu.Tensor) (*gpu.Tensor, error){
		func(t *gpu.Tensor) (*gpu.Tensor, error) { return l.FC.Forward(rt, t) },
		func(t *gpu.Tensor) (*gpu.Tensor, error) { return gpu.QuickGELU(rt, t) },
		func(t *gpu.Tensor) (*gpu.Tensor, error) { return l.Proj.Forward(rt, t) },
	} {
		if m, err = then(m, f); err != nil {
			x1.Release()
			return nil, err
		}
	}
	defer m.Release()
	defer x1.Release()
	return gpu.Add(rt, x1, m)
}

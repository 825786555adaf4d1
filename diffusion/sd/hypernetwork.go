package sd

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
	"github.com/forgeflow/forgeflow/weights/torch"
)

// Hypernetworks (A1111's .pt files) as ComfyUI 0.3.64 applies them
// (comfy_extras/nodes_hypernetwork.py load_hypernetwork_patch): for each attention
// width the file holds two small MLPs, one for the keys' input and one for the
// values'; every UNet attention whose key input has that width gets
// k + mlp_k(k)·strength and v + mlp_v(v)·strength as the inputs of to_k and to_v
// (attn1_patch and attn2_patch: self-attention and cross-attention alike).
//
// The file is a pickle: a dict whose integer keys are the widths, each holding a
// (keys, values) pair of state dicts, and the options activation_func, is_layer_norm,
// use_dropout, activate_output and last_layer_dropout. Each MLP is built as ComfyUI
// builds it from the state dict's ".weight" keys in order: a Linear, then the
// activation (unless "linear"; not after the last layer unless activate_output), then
// a LayerNorm (when is_layer_norm; it is the next ".weight" key), then Dropout(0.3)
// where ComfyUI puts one.

// Dropout deviates from ComfyUI on purpose: ComfyUI builds the modules in training mode
// and never switches them to evaluation, so with use_dropout its torch.nn.Dropout(0.3)
// zeroes random activations on every call (a different image on every run). forgeflow
// evaluates the network as trained networks are evaluated: dropout is the identity.

// hnActivations are ComfyUI's valid_activation names; "linear" is none.
var hnActivations = []string{"linear", "relu", "leakyrelu", "elu", "swish", "tanh", "sigmoid", "softsign", "mish"}

// Hypernetwork is a loaded hypernetwork file. Its weights alias the file's mapping:
// Close only once no model uses it.
type Hypernetwork struct {
	Name string
	// Activation is the file's activation_func; Unsupported says why the file patches
	// nothing (ComfyUI logs an error and returns the model unchanged for an unknown
	// activation), empty otherwise.
	Activation  string
	Unsupported string
	// layers holds the (keys, values) MLPs by attention width.
	layers map[int]*[2]hnMLP
	file   *tensorfile.File
}

// hnMLP is one of the small networks, in order.
type hnMLP []hnLayer

// hnLayer is a Linear followed by the activation (act, "" for none) and an optional
// LayerNorm.
type hnLayer struct {
	linear nn.Linear
	act    string
	norm   *nn.Norm
}

// Widths returns the attention widths the hypernetwork patches, ascending.
func (h *Hypernetwork) Widths() []int {
	w := make([]int, 0, len(h.layers))
	for d := range h.layers {
		w = append(w, d)
	}
	slices.Sort(w)
	return w
}

// Close releases the file.
func (h *Hypernetwork) Close() error { return h.file.Close() }

// Bytes is the size of the tensors the file maps.
func (h *Hypernetwork) Bytes() int64 {
	var n int64
	for _, t := range h.file.Tensors() {
		n += t.Size
	}
	return n
}

// LoadHypernetwork reads an A1111 hypernetwork (.pt). A safetensors file loads as
// ComfyUI loads one, with no layers (its keys are not integers), and patches nothing.
func LoadHypernetwork(rt *gpu.Runtime, path string) (*Hypernetwork, error) {
	f, err := tensorfile.Open(path, tensorfile.Torch, tensorfile.Safetensors)
	if err != nil {
		return nil, &FormatError{Path: path, Err: err}
	}
	return loadHypernetwork(rt, f)
}

// loadHypernetwork reads an open file; it closes f on failure.
func loadHypernetwork(rt *gpu.Runtime, f *tensorfile.File) (*Hypernetwork, error) {
	path := f.Name()
	h := &Hypernetwork{Name: path, Activation: "linear", layers: map[int]*[2]hnMLP{}, file: f}
	if f.Format() == tensorfile.Safetensors {
		h.Unsupported = "a safetensors file has no layers keyed by attention width (ComfyUI applies nothing)"
		return h, nil
	}
	if err := h.parse(rt, f.Torch()); err != nil {
		f.Close()
		return nil, &FormatError{Path: path, Err: fmt.Errorf("hypernetwork: %w", err)}
	}
	return h, nil
}

// parse reads the pickle's options and layers (load_hypernetwork_patch).
func (h *Hypernetwork) parse(rt *gpu.Runtime, tf *torch.File) error {
	root, ok := tf.Root().(*torch.Dict)
	if !ok {
		return fmt.Errorf("the pickle holds %T, not a dict", tf.Root())
	}
	if sd, ok := root.Get("state_dict"); ok {
		// comfy.utils.load_torch_file takes a "state_dict" entry when there is one.
		if root, ok = sd.(*torch.Dict); !ok {
			return fmt.Errorf("state_dict is %T, not a dict", sd)
		}
	}
	opt := func(key string) (bool, error) {
		v, ok := root.Get(key)
		if !ok || v == nil {
			return false, nil
		}
		b, ok := v.(bool)
		if !ok {
			return false, fmt.Errorf("option %s is %v, not a boolean", key, v)
		}
		return b, nil
	}
	if v, ok := root.Get("activation_func"); ok {
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("activation_func is %v, not a string", v)
		}
		h.Activation = s
	}
	var o hnOptions
	var err error
	for _, p := range []struct {
		key string
		dst *bool
	}{{"is_layer_norm", &o.layerNorm}, {"use_dropout", &o.dropout}, {"activate_output", &o.activateOutput}, {"last_layer_dropout", &o.lastLayerDropout}} {
		if *p.dst, err = opt(p.key); err != nil {
			return err
		}
	}
	if !slices.Contains(hnActivations, h.Activation) {
		h.Unsupported = fmt.Sprintf("activation %q is not one of %s (ComfyUI applies nothing)", h.Activation, strings.Join(hnActivations, ", "))
		return nil
	}
	o.act = h.Activation
	for i, k := range root.Keys {
		dim, ok := k.(int64)
		if !ok {
			continue
		}
		if dim <= 0 || dim > 1<<20 {
			return fmt.Errorf("attention width %d", dim)
		}
		pair, err := hnPair(root.Values[i])
		if err != nil {
			return fmt.Errorf("width %d: %w", dim, err)
		}
		var mlps [2]hnMLP
		for j, sd := range pair {
			if mlps[j], err = o.build(rt, tf, sd, fmt.Sprintf("%d.%d.", dim, j)); err != nil {
				return fmt.Errorf("width %d: %w", dim, err)
			}
			if err := mlps[j].check(int(dim)); err != nil {
				return fmt.Errorf("width %d, %s network: %w", dim, [2]string{"key", "value"}[j], err)
			}
		}
		h.layers[int(dim)] = &mlps
	}
	return nil
}

// hnPair returns the (keys, values) state dicts of one width: the first two items of
// a list or tuple, as ComfyUI indexes sd[dim][0] and sd[dim][1].
func hnPair(v any) ([2]*torch.Dict, error) {
	var items []any
	switch t := v.(type) {
	case torch.Tuple:
		items = t
	case *torch.List:
		items = t.Items
	default:
		return [2]*torch.Dict{}, fmt.Errorf("%T is not a (keys, values) pair", v)
	}
	if len(items) < 2 {
		return [2]*torch.Dict{}, fmt.Errorf("%d state dicts, want a (keys, values) pair", len(items))
	}
	var out [2]*torch.Dict
	for i := range out {
		d, ok := items[i].(*torch.Dict)
		if !ok {
			return out, fmt.Errorf("item %d is %T, not a state dict", i, items[i])
		}
		out[i] = d
	}
	return out, nil
}

// hnOptions are the file's options.
type hnOptions struct {
	act                                                  string
	layerNorm, dropout, activateOutput, lastLayerDropout bool
}

// build makes one MLP from its state dict as load_hypernetwork_patch does: the
// ".weight" keys in order are the layers (a LayerNorm's key after its Linear's when
// is_layer_norm), and "last layer" is judged by that key list's index. Dropout layers
// are left out (see the file comment).
func (o *hnOptions) build(rt *gpu.Runtime, tf *torch.File, sd *torch.Dict, prefix string) (hnMLP, error) {
	var names []string
	for _, k := range sd.Keys {
		if s, ok := k.(string); ok && strings.HasSuffix(s, ".weight") {
			names = append(names, strings.TrimSuffix(s, ".weight"))
		}
	}
	var mlp hnMLP
	for i := 0; i < len(names); i++ {
		last := i == len(names)-1
		w, err := hnTensor(rt, tf, sd, prefix, names[i]+".weight", 2)
		if err != nil {
			return nil, err
		}
		b, err := hnTensor(rt, tf, sd, prefix, names[i]+".bias", 1)
		if err != nil {
			return nil, err
		}
		l := hnLayer{linear: nn.Linear{Weight: w, Bias: b}}
		if o.act != "linear" && (!last || o.activateOutput) {
			l.act = o.act
		}
		if o.layerNorm {
			i++
			if i == len(names) {
				return nil, fmt.Errorf("%s%s has no LayerNorm after it (is_layer_norm)", prefix, names[i-1])
			}
			nw, err := hnTensor(rt, tf, sd, prefix, names[i]+".weight", 1)
			if err != nil {
				return nil, err
			}
			nb, err := hnTensor(rt, tf, sd, prefix, names[i]+".bias", 1)
			if err != nil {
				return nil, err
			}
			l.norm = &nn.Norm{Weight: nw, Bias: nb}
		}
		mlp = append(mlp, l)
	}
	return mlp, nil
}

// check verifies that the layers chain from width dim back to width dim (the output
// is added to the input) and that each LayerNorm fits its Linear.
func (m hnMLP) check(dim int) error {
	in := dim
	for i, l := range m {
		w := l.linear.Weight
		if w.Dim(1) != in || l.linear.Bias.Dim(0) != w.Dim(0) {
			return fmt.Errorf("layer %d: weight %v and bias %v after width %d", i, w.Shape(), l.linear.Bias.Shape(), in)
		}
		in = w.Dim(0)
		if l.norm != nil && (l.norm.Weight.Dim(0) != in || l.norm.Bias.Dim(0) != in) {
			return fmt.Errorf("layer %d: LayerNorm %v of width %d", i, l.norm.Weight.Shape(), in)
		}
	}
	if in != dim {
		return fmt.Errorf("the network maps width %d to %d", dim, in)
	}
	return nil
}

// hnTensor returns sd[key] as a runtime tensor of rank rank: a weight matrix in its
// stored dtype (aliasing the mapping where the storage allows), vectors as float32.
func hnTensor(rt *gpu.Runtime, tf *torch.File, sd *torch.Dict, prefix, key string, rank int) (*gpu.Tensor, error) {
	v, ok := sd.Get(key)
	if !ok {
		return nil, fmt.Errorf("no tensor %s%s", prefix, key)
	}
	ref, ok := v.(*torch.TensorRef)
	if !ok {
		return nil, fmt.Errorf("%s%s is %T, not a tensor", prefix, key, v)
	}
	t, err := tf.RefTensor(prefix+key, ref)
	if err != nil {
		return nil, err
	}
	if len(t.Shape) != rank {
		return nil, fmt.Errorf("%s%s has shape %v, want %d dimensions", prefix, key, t.Shape, rank)
	}
	shape := make([]int, rank)
	for i, d := range t.Shape {
		if d <= 0 || d > 1<<20 {
			return nil, fmt.Errorf("%s%s has shape %v", prefix, key, t.Shape)
		}
		shape[i] = int(d)
	}
	if rank == 1 || t.DType == weights.F32 {
		vals, err := t.Float32()
		if err != nil {
			return nil, err
		}
		return rt.FromFloat32(vals, shape...)
	}
	for g := gpu.F32; g.Valid(); g++ {
		if g.String() == string(t.DType) && g.IsFloat() {
			return rt.FromBytes(g, t.Data, shape...)
		}
	}
	return nil, fmt.Errorf("%s%s: dtype %s is not a float weight dtype", prefix, key, t.DType)
}

// forward runs the MLP on x (…, width).
func (m hnMLP) forward(rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error) {
	cur := x
	for _, l := range m {
		y, err := l.linear.Forward(rt, cur)
		if cur != x {
			cur.Release()
		}
		if err != nil {
			return nil, err
		}
		if l.act != "" {
			a, err := hnActivate(rt, y, l.act)
			y.Release()
			if err != nil {
				return nil, err
			}
			y = a
		}
		if l.norm != nil {
			n, err := l.norm.Layer(rt, y, 1e-5)
			y.Release()
			if err != nil {
				return nil, err
			}
			y = n
		}
		cur = y
	}
	if cur == x {
		return gpu.Contiguous(rt, x)
	}
	return cur, nil
}

// hnActivate applies one of torch.nn's activations (default arguments) element-wise:
// ReLU, LeakyReLU and Sigmoid as runtime ops, the others on the host in float64 rounded
// to float32.
func hnActivate(rt *gpu.Runtime, t *gpu.Tensor, act string) (*gpu.Tensor, error) {
	switch act {
	case "relu":
		return gpu.LeakyReLU(rt, t, 0)
	case "leakyrelu":
		return gpu.LeakyReLU(rt, t, 0.01)
	case "sigmoid":
		return gpu.Sigmoid(rt, t)
	}
	v, err := t.Float32()
	if err != nil {
		return nil, err
	}
	out := make([]float32, len(v))
	f := hnActivation(act)
	if f == nil {
		return nil, fmt.Errorf("activation %q", act)
	}
	for i, x := range v {
		out[i] = float32(f(float64(x)))
	}
	return rt.FromFloat32(out, t.Shape()...)
}

// hnActivation is the function of an activation name (torch.nn defaults: LeakyReLU
// slope 0.01, ELU α 1, Softplus threshold 20 inside Mish; "swish" is Hardswish, as
// ComfyUI maps it).
func hnActivation(act string) func(float64) float64 {
	switch act {
	case "relu":
		return func(x float64) float64 { return max(x, 0) }
	case "leakyrelu":
		return func(x float64) float64 {
			if x < 0 {
				return 0.01 * x
			}
			return x
		}
	case "elu":
		return func(x float64) float64 {
			if x > 0 {
				return x
			}
			return math.Expm1(x)
		}
	case "swish":
		return func(x float64) float64 { return x * min(max(x+3, 0), 6) / 6 }
	case "tanh":
		return math.Tanh
	case "sigmoid":
		return func(x float64) float64 { return 1 / (1 + math.Exp(-x)) }
	case "softsign":
		return func(x float64) float64 { return x / (1 + math.Abs(x)) }
	case "mish":
		return func(x float64) float64 {
			sp := x
			if x <= 20 {
				sp = math.Log1p(math.Exp(x))
			}
			return x * math.Tanh(sp)
		}
	}
	return nil
}

// HypernetworkPatch is a hypernetwork at a strength, as a model patch.
type HypernetworkPatch struct {
	Net      *Hypernetwork
	Strength float64
}

// attnInputs is hypernetwork_patch.__call__: the width is k's last dimension; q
// passes unchanged.
func (p HypernetworkPatch) attnInputs(rt *gpu.Runtime, _ int, x, k, v *gpu.Tensor) (*gpu.Tensor, *gpu.Tensor, *gpu.Tensor, error) {
	mlps := p.Net.layers[k.Dim(k.Rank()-1)]
	if mlps == nil {
		return x, k, v, nil
	}
	nk, err := hnApply(rt, mlps[0], k, p.Strength)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("hypernetwork %s: %w", p.Net.Name, err)
	}
	nv, err := hnApply(rt, mlps[1], v, p.Strength)
	if err != nil {
		nk.Release()
		return nil, nil, nil, fmt.Errorf("hypernetwork %s: %w", p.Net.Name, err)
	}
	return x, nk, nv, nil
}

// hnApply returns t + mlp(t)·strength (float32 products and sums, as torch).
func hnApply(rt *gpu.Runtime, mlp hnMLP, t *gpu.Tensor, strength float64) (*gpu.Tensor, error) {
	y, err := mlp.forward(rt, t)
	if err != nil {
		return nil, err
	}
	defer y.Release()
	if !slices.Equal(y.Shape(), t.Shape()) {
		return nil, errors.New("the network's output does not match its input's shape")
	}
	s, err := rt.FromFloat32([]float32{float32(strength)}, 1)
	if err != nil {
		return nil, err
	}
	defer s.Release()
	ys, err := gpu.Mul(rt, y, s)
	if err != nil {
		return nil, err
	}
	defer ys.Release()
	return gpu.Add(rt, t, ys)
}

// WithHypernetwork returns a copy of m patched with h at strength
// (HypernetworkLoader); a hypernetwork that patches nothing returns m itself.
func (m *Model) WithHypernetwork(h *Hypernetwork, strength float64) *Model {
	if h.Unsupported != "" || len(h.layers) == 0 {
		return m
	}
	return m.WithAttnInputPatch(HypernetworkPatch{Net: h, Strength: strength})
}

package torch

import (
	"fmt"

	"github.com/forgeflow/forgeflow/weights"
)

// The closed list of globals a checkpoint pickle may name, and how each call is
// interpreted (torch/_utils.py, torch/_tensor.py, torch/serialization.py).

// storageDTypes maps torch's legacy typed-storage classes to element types.
var storageDTypes = map[string]weights.DType{
	"DoubleStorage": weights.F64, "FloatStorage": weights.F32, "HalfStorage": weights.F16,
	"BFloat16Storage": weights.BF16, "LongStorage": weights.I64, "IntStorage": weights.I32,
	"ShortStorage": weights.I16, "CharStorage": weights.I8, "ByteStorage": weights.U8,
	"BoolStorage": weights.BOOL, "UntypedStorage": weights.U8,
	// torch/storage.py _dtype_to_storage_type_map names for the float8 dtypes.
	"Float8_e4m3fnStorage": weights.F8_E4M3, "Float8_e5m2Storage": weights.F8_E5M2,
}

// inertClasses may be instantiated as placeholders: they appear in real training
// checkpoints beside the state dict and carry no tensors.
var inertClasses = map[string]bool{
	"pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint": true,
	"numpy.core.multiarray.scalar":                                 true,
	"numpy._core.multiarray.scalar":                                true,
	"numpy.dtype":                                                  true,
	"_codecs.encode":                                               true,
	"builtins.set":                                                 true,
	"__builtin__.set":                                              true,
	"torch.Size":                                                   true,
	"torch.device":                                                 true,
}

// callableGlobals are interpreted by call below.
var callableGlobals = map[string]bool{
	"collections.OrderedDict":                    true,
	"torch._utils._rebuild_tensor":               true,
	"torch._utils._rebuild_tensor_v2":            true,
	"torch._utils._rebuild_parameter":            true,
	"torch._utils._rebuild_parameter_with_state": true,
	"torch._tensor._rebuild_from_type_v2":        true,
	"torch.nn.parameter.Parameter":               true,
	"torch.Tensor":                               true,
}

func allowedGlobal(g Global) bool {
	s := g.String()
	if callableGlobals[s] || inertClasses[s] {
		return true
	}
	_, storage := storageDTypes[g.Name]
	return storage && g.Module == "torch"
}

// call interprets a call of an allowed global. Nothing is executed: each case builds
// the value the real function would return.
func (u *unpickler) call(fn any, args Tuple) (any, error) {
	g, ok := fn.(Global)
	if !ok {
		return nil, u.forbid("call of %T, not an allowed global", fn)
	}
	switch g.String() {
	case "collections.OrderedDict":
		d := &Dict{}
		if len(args) > 0 {
			return nil, u.fail("OrderedDict with %d arguments", len(args))
		}
		return d, nil
	case "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor":
		return u.rebuildTensor(args)
	case "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
		"torch.nn.parameter.Parameter":
		if len(args) < 1 {
			return nil, u.fail("%s without data", g)
		}
		t, ok := args[0].(*TensorRef)
		if !ok {
			return nil, u.fail("%s of %T, not a tensor", g, args[0])
		}
		if len(args) > 1 {
			t.RequiresGrad, _ = args[1].(bool)
		}
		return t, nil
	case "torch._tensor._rebuild_from_type_v2":
		// (func, new_type, args, state): the result is func(*args) viewed as new_type.
		if len(args) != 4 {
			return nil, u.fail("_rebuild_from_type_v2 with %d arguments", len(args))
		}
		inner, ok := args[2].(Tuple)
		if !ok {
			return nil, u.fail("_rebuild_from_type_v2 arguments are %T", args[2])
		}
		if nt, ok := args[1].(Global); !ok || (nt.String() != "torch.Tensor" && nt.String() != "torch.nn.parameter.Parameter") {
			return nil, u.forbid("_rebuild_from_type_v2 to type %v", args[1])
		}
		return u.call(args[0], inner)
	}
	if inertClasses[g.String()] {
		return &Object{Class: g, Args: args}, nil
	}
	return nil, u.forbid("call of %q is not allowed", g.String())
}

// rebuildTensor interprets _rebuild_tensor_v2(storage, storage_offset, size, stride,
// requires_grad, backward_hooks[, metadata]) and _rebuild_tensor(storage, offset, size,
// stride).
func (u *unpickler) rebuildTensor(args Tuple) (any, error) {
	if len(args) < 4 {
		return nil, u.fail("_rebuild_tensor with %d arguments", len(args))
	}
	st, ok := args[0].(*Storage)
	if !ok {
		return nil, u.fail("_rebuild_tensor of %T, not a storage", args[0])
	}
	off, ok := args[1].(int64)
	if !ok || off < 0 {
		return nil, u.fail("_rebuild_tensor storage offset %v", args[1])
	}
	shape, err1 := intTuple(args[2])
	stride, err2 := intTuple(args[3])
	if err1 != nil || err2 != nil || len(shape) != len(stride) {
		return nil, u.fail("_rebuild_tensor size %v and stride %v", args[2], args[3])
	}
	t := &TensorRef{Storage: st, Offset: off, Shape: shape, Stride: stride}
	if len(args) > 4 {
		t.RequiresGrad, _ = args[4].(bool)
	}
	return t, nil
}

func intTuple(v any) ([]int64, error) {
	t, ok := v.(Tuple)
	if !ok {
		return nil, fmt.Errorf("%T is not a tuple", v)
	}
	out := make([]int64, len(t))
	for i, x := range t {
		n, ok := x.(int64)
		if !ok || n < 0 {
			return nil, fmt.Errorf("element %v", x)
		}
		out[i] = n
	}
	return out, nil
}

// build interprets BUILD: a dict keeps the state as attributes, tensors ignore their (hook) state,
// placeholders keep it.
func (u *unpickler) build(obj, state any) error {
	switch o := obj.(type) {
	case *Dict:
		o.Attrs = state
		return nil
	case *TensorRef:
		return nil
	case *Object:
		o.State = state
		return nil
	}
	return u.forbid("BUILD on %T", obj)
}

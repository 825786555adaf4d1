package nodes

import (
	"context"
	"fmt"
	"reflect"
	"strings"

	"github.com/forgeflow/forgeflow/graph"
)

// Typed is a node class written as a Go struct whose fields receive its inputs:
//
//	type KSampler struct {
//		Model *sd.Model `input:"model"`
//		Steps int       `input:"steps"`
//		...
//	}
//
// Registry.Add turns it into a Node. Schema is called once there; each run then fills
// a fresh copy of the registered value: untagged fields (options, shared services) are
// copied, each field tagged `input:"name"` receives that input, already checked, and
// Run is called on the copy, so concurrent runs never share input fields (untagged
// fields are shared: treat them as read-only). Run starts from values that fit the
// schema:
//
//   - INT into an int or uint kind (a seed into uint64), FLOAT into float64 or float32,
//     STRING into string, BOOLEAN into bool, COMBO into string (a multiselect combo into
//     []string); numbers within the input's Min and Max, combo values among its Choices
//     (unless the input has CustomValidation, or is a ComboV3 one, which ComfyUI passes
//     on unchecked: Run then says what an unlisted value does). The tag option
//     `input:"ckpt_name,unchecked"` leaves the membership check to Run too, for a list
//     that is costly to build (a model folder) where Run's own lookup says more.
//   - Any other type into the Go type of its ValueType (Registry.AddTypes), after the
//     value type's check; "*" and comma-joined types ("IMAGE,MASK") into an interface.
//   - An optional input that is absent, or linked to a nil value, leaves its field at
//     the zero value: a pointer field (*float64, *Mask) is then nil.
//   - With the schema's InputIsList, every field is a slice of the above.
//
// Every non-hidden input must have a field, and a field's type must hold every value
// the input allows (a uint64 for an INT with min 0 and max 2^64-1, an int only where
// max fits): Registry.Add fails otherwise, naming the class, input and field. Hidden
// inputs (PROMPT, UNIQUE_ID) are read from Env instead.
//
// A Typed node may also have the hooks IsChanged(env *Env) (string, error) (ComfyUI's
// IS_CHANGED, see IsChanger) and ValidateInputs(env *Env) error (VALIDATE_INPUTS, see
// InputValidator). They are called on a copy that holds the widget inputs the caller
// has (links are not resolved yet when they run); the other fields are zero.
type Typed interface {
	Schema() graph.Schema
	Run(ctx context.Context, env *Env) (Result, error)
}

// One returns a Result with the single output v, or err.
func One(v any, err error) (Result, error) {
	if err != nil {
		return Result{}, err
	}
	return Result{Outputs: []any{v}}, nil
}

// Outputs returns a Result with the given outputs, in schema order.
func Outputs(values ...any) (Result, error) { return Result{Outputs: values}, nil }

type (
	changeHook interface {
		IsChanged(env *Env) (string, error)
	}
	validateHook interface{ ValidateInputs(env *Env) error }
)

// typedNode is the Node a Typed value becomes.
type typedNode struct {
	proto  reflect.Value // the registered *T
	schema graph.Schema
	fields []field
	outs   []reflect.Type // the Go type of each output, nil where any value goes
}

func (n *typedNode) Schema() *graph.Schema { return &n.schema }

func (n *typedNode) Run(ctx context.Context, env *Env, in Inputs) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	t, err := n.decode(in, false)
	if err != nil {
		return Result{}, err
	}
	res, err := t.Run(ctx, env)
	if err != nil {
		return Result{}, err
	}
	return res, n.checkOutputs(res)
}

// checkOutputs reports a Run that returned the wrong number or Go types of outputs.
func (n *typedNode) checkOutputs(res Result) error {
	if len(res.Outputs) != len(n.outs) {
		return fmt.Errorf("nodes: %s returned %d outputs, its schema has %d", n.schema.Name, len(res.Outputs), len(n.outs))
	}
	for i, v := range res.Outputs {
		if t := n.outs[i]; t != nil && v != nil && !reflect.TypeOf(v).AssignableTo(t) {
			return fmt.Errorf("nodes: %s returned %T for output %d (%s), want %v", n.schema.Name, v, i, n.schema.Outputs[i].Type, t)
		}
	}
	return nil
}

// decode returns a copy of the registered value with its input fields filled from in;
// with widgetsOnly (for the hooks), link inputs (except CustomValidation ones) and
// absent widgets are left at their zero value.
func (n *typedNode) decode(in Inputs, widgetsOnly bool) (Typed, error) {
	v := reflect.New(n.proto.Elem().Type())
	v.Elem().Set(n.proto.Elem())
	for i := range n.fields {
		f := &n.fields[i]
		// The hooks get literals only; a socket-typed input the node validates itself
		// (WebcamCapture's WEBCAM file name) is one, written in the prompt.
		if widgetsOnly && f.link && !f.input.CustomValidation {
			continue
		}
		dst := v.Elem().FieldByIndex(f.index)
		dst.SetZero()
		raw, ok := in[f.input.Name]
		if !ok || raw == nil && f.input.Section != graph.Required {
			if !ok && f.input.Section == graph.Required && !widgetsOnly {
				return nil, fmt.Errorf("nodes: input %q: missing", f.input.Name)
			}
			continue
		}
		if !n.schema.InputIsList {
			if err := f.set(dst, raw); err != nil {
				return nil, err
			}
			continue
		}
		list, ok := raw.([]any)
		if !ok {
			return nil, fmt.Errorf("nodes: input %q: want a list, got %T", f.input.Name, raw)
		}
		s := reflect.MakeSlice(dst.Type(), len(list), len(list))
		for j, item := range list {
			if err := f.set(s.Index(j), item); err != nil {
				return nil, err
			}
		}
		dst.Set(s)
	}
	return v.Interface().(Typed), nil
}

type changingNode struct{ *typedNode }

func (n changingNode) IsChanged(env *Env, in Inputs) (string, error) {
	t, err := n.decode(in, true)
	if err != nil {
		return "", err
	}
	return t.(changeHook).IsChanged(env)
}

type validatingNode struct{ *typedNode }

func (n validatingNode) ValidateInputs(env *Env, in Inputs) error {
	t, err := n.decode(in, true)
	if err != nil {
		return err
	}
	return t.(validateHook).ValidateInputs(env)
}

type checkedNode struct {
	changingNode
	validatingNode
}

func (n checkedNode) Schema() *graph.Schema { return n.changingNode.Schema() }

func (n checkedNode) Run(ctx context.Context, env *Env, in Inputs) (Result, error) {
	return n.changingNode.Run(ctx, env, in)
}

// define builds the Node of a Typed value, checking its fields against its schema and
// the registry's value types.
func (r *Registry) define(t Typed) (Node, error) {
	pv := reflect.ValueOf(t)
	if pv.Kind() != reflect.Pointer || pv.IsNil() || pv.Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("nodes: add %T: a typed node must be a non-nil pointer to a struct", t)
	}
	n := &typedNode{proto: pv, schema: t.Schema()}
	fail := func(format string, args ...any) (Node, error) {
		return nil, fmt.Errorf("nodes: add %q (%T): %s", n.schema.Name, t, fmt.Sprintf(format, args...))
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	byInput := map[string]string{}
	for _, sf := range reflect.VisibleFields(pv.Elem().Type()) {
		tag, ok := sf.Tag.Lookup("input")
		if !ok {
			continue
		}
		name, opt, _ := strings.Cut(tag, ",")
		in, ok := n.schema.Input(name)
		switch {
		case !ok:
			return fail("field %s is tagged input %q, which the schema does not have", sf.Name, name)
		case in.Section == graph.Hidden:
			return fail("field %s is tagged hidden input %q; read it from nodes.Env", sf.Name, name)
		case byInput[name] != "":
			return fail("fields %s and %s are both tagged input %q", byInput[name], sf.Name, name)
		case !sf.IsExported():
			return fail("field %s of input %q is not exported", sf.Name, name)
		case throughPointer(pv.Elem().Type(), sf.Index):
			return fail("field %s of input %q is reached through an embedded pointer; embed the struct itself", sf.Name, name)
		}
		byInput[name] = sf.Name
		f, err := r.field(n.schema.InputIsList, in, sf)
		if err != nil {
			return fail("field %s (input %q): %v", sf.Name, name, err)
		}
		switch {
		case opt == "unchecked" && in.Type == graph.TypeCombo:
			f.unchecked = true
		case opt != "":
			return fail("field %s: tag option %q is not \"unchecked\" on a COMBO input", sf.Name, opt)
		}
		n.fields = append(n.fields, f)
	}
	for i := range n.schema.Inputs {
		in := &n.schema.Inputs[i]
		if in.Section != graph.Hidden && byInput[in.Name] == "" {
			return fail("input %q has no field (tag one `input:%q`)", in.Name, in.Name)
		}
	}
	for _, o := range n.schema.Outputs {
		t, err := r.outputType(o)
		if err != nil {
			return fail("output %q: %v", o.Name, err)
		}
		n.outs = append(n.outs, t)
	}
	_, changes := t.(changeHook)
	_, validates := t.(validateHook)
	switch {
	case changes && validates:
		return checkedNode{changingNode{n}, validatingNode{n}}, nil
	case changes:
		return changingNode{n}, nil
	case validates:
		return validatingNode{n}, nil
	}
	return n, nil
}

// throughPointer reports whether the field at index lies inside an embedded pointer,
// which a fresh copy of the node would leave nil (or share between runs).
func throughPointer(t reflect.Type, index []int) bool {
	for _, i := range index[:len(index)-1] {
		t = t.Field(i).Type
		if t.Kind() == reflect.Pointer {
			return true
		}
	}
	return false
}

// outputType is the Go type an output's values must have, or nil when any value goes.
func (r *Registry) outputType(o graph.Output) (reflect.Type, error) {
	if o.IsList || graph.IsWidgetType(o.Type) || o.Type == graph.TypeAny || strings.Contains(o.Type, ",") {
		return nil, nil
	}
	vt, ok := r.types[o.Type]
	if !ok {
		return nil, fmt.Errorf("type %s is not a value type of this registry (Registry.AddTypes)", o.Type)
	}
	return vt.goType, nil
}

package builtin

import (
	"context"
	"math"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// ComfyUI's primitive nodes (comfy_extras/nodes_primitive.py): each passes its one widget
// value through to an output of the same type, so a value can feed several inputs. The
// UI-only "PrimitiveNode" of the front end is resolved by the workflow converter and is
// not a node class.

const primitiveModule = "comfy_extras.nodes_primitive"

// primitive is the schema of a Primitive* class: one "value" widget of type typ,
// passed through to an output of the same type.
func primitive(class, display string, value graph.Input) graph.Schema {
	value.Name = "value"
	return graph.Schema{
		Name: class, DisplayName: display, Category: "utils/primitive", PythonModule: primitiveModule,
		Inputs:  []graph.Input{value},
		Outputs: outputs(value.Type),
		Extra:   v3Extra(1, &display),
	}
}

// pyMaxSize is Python's sys.maxsize on 64-bit builds, the bound of the Int and Float
// primitives.
const pyMaxSize = math.MaxInt64

// PrimitiveInt is ComfyUI's PrimitiveInt ("Int").
type PrimitiveInt struct {
	Value int64 `input:"value"`
}

// Schema implements nodes.Typed.
func (*PrimitiveInt) Schema() graph.Schema {
	return primitive("PrimitiveInt", "Int", graph.Input{Type: graph.TypeInt,
		Min: graph.Num(int64(-pyMaxSize)), Max: graph.Num(int64(pyMaxSize)), ControlAfterGenerate: true})
}

// Run implements nodes.Typed.
func (n *PrimitiveInt) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(n.Value, nil)
}

// PrimitiveFloat is ComfyUI's PrimitiveFloat ("Float").
type PrimitiveFloat struct {
	Value float64 `input:"value"`
}

// Schema implements nodes.Typed.
func (*PrimitiveFloat) Schema() graph.Schema {
	return primitive("PrimitiveFloat", "Float", graph.Input{Type: graph.TypeFloat,
		Min: graph.Num(int64(-pyMaxSize)), Max: graph.Num(int64(pyMaxSize))})
}

// Run implements nodes.Typed.
func (n *PrimitiveFloat) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(n.Value, nil)
}

// PrimitiveString is ComfyUI's PrimitiveString ("String").
type PrimitiveString struct {
	Value string `input:"value"`
}

// Schema implements nodes.Typed.
func (*PrimitiveString) Schema() graph.Schema {
	return primitive("PrimitiveString", "String", graph.Input{Type: graph.TypeString, Multiline: graph.Off})
}

// Run implements nodes.Typed.
func (n *PrimitiveString) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(n.Value, nil)
}

// PrimitiveStringMultiline is ComfyUI's PrimitiveStringMultiline ("String (Multiline)").
type PrimitiveStringMultiline struct {
	Value string `input:"value"`
}

// Schema implements nodes.Typed.
func (*PrimitiveStringMultiline) Schema() graph.Schema {
	return primitive("PrimitiveStringMultiline", "String (Multiline)", graph.Input{Type: graph.TypeString, Multiline: graph.On})
}

// Run implements nodes.Typed.
func (n *PrimitiveStringMultiline) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(n.Value, nil)
}

// PrimitiveBoolean is ComfyUI's PrimitiveBoolean ("Boolean").
type PrimitiveBoolean struct {
	Value bool `input:"value"`
}

// Schema implements nodes.Typed.
func (*PrimitiveBoolean) Schema() graph.Schema {
	return primitive("PrimitiveBoolean", "Boolean", graph.Input{Type: graph.TypeBoolean})
}

// Run implements nodes.Typed.
func (n *PrimitiveBoolean) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(n.Value, nil)
}

// Interface guards.
var (
	_ nodes.Typed = (*PrimitiveInt)(nil)
	_ nodes.Typed = (*PrimitiveFloat)(nil)
	_ nodes.Typed = (*PrimitiveString)(nil)
	_ nodes.Typed = (*PrimitiveStringMultiline)(nil)
	_ nodes.Typed = (*PrimitiveBoolean)(nil)
)

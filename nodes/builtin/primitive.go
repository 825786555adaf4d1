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

// Primitive is one of the Primitive* classes: its "value" widget, of Go type T, passed
// through to an output of the same type.
type Primitive[T int64 | float64 | string | bool] struct {
	schema graph.Schema
	Value  T `input:"value"`
}

// newPrimitive returns the class with the given "value" widget.
func newPrimitive[T int64 | float64 | string | bool](class, display string, value graph.Input) *Primitive[T] {
	value.Name = "value"
	return &Primitive[T]{schema: graph.Schema{
		Name: class, DisplayName: display, Category: "utils/primitive", PythonModule: primitiveModule,
		Inputs:  []graph.Input{value},
		Outputs: outputs(value.Type),
		Extra:   v3Extra(1, &display),
	}}
}

// pyMaxSize is Python's sys.maxsize on 64-bit builds, the bound of the Int and Float
// primitives.
const pyMaxSize = math.MaxInt64

// primitives are PrimitiveInt, PrimitiveFloat, PrimitiveString, PrimitiveStringMultiline
// and PrimitiveBoolean.
func primitives() []nodes.Typed {
	return []nodes.Typed{
		newPrimitive[int64]("PrimitiveInt", "Int", graph.Input{Type: graph.TypeInt,
			Min: graph.Num(int64(-pyMaxSize)), Max: graph.Num(int64(pyMaxSize)), ControlAfterGenerate: true}),
		newPrimitive[float64]("PrimitiveFloat", "Float", graph.Input{Type: graph.TypeFloat,
			Min: graph.Num(int64(-pyMaxSize)), Max: graph.Num(int64(pyMaxSize))}),
		newPrimitive[string]("PrimitiveString", "String", graph.Input{Type: graph.TypeString, Multiline: graph.Off}),
		newPrimitive[string]("PrimitiveStringMultiline", "String (Multiline)", graph.Input{Type: graph.TypeString, Multiline: graph.On}),
		newPrimitive[bool]("PrimitiveBoolean", "Boolean", graph.Input{Type: graph.TypeBoolean}),
	}
}

// Schema implements nodes.Typed.
func (p *Primitive[T]) Schema() graph.Schema { return p.schema }

// Run implements nodes.Typed.
func (p *Primitive[T]) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(p.Value, nil)
}

// Interface guard.
var _ nodes.Typed = (*Primitive[int64])(nil)

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

// Primitive is one of the Primitive* node classes. Its Run returns the "value" input
// after checking its type.
type Primitive struct {
	schema graph.Schema
	get    func(in nodes.Inputs) (any, error)
}

func newPrimitive(class, display, typ string, opts map[string]any, get func(in nodes.Inputs) (any, error)) *Primitive {
	name := display
	return &Primitive{
		schema: graph.Schema{
			Name: class, DisplayName: display, Category: "utils/primitive",
			PythonModule: primitiveModule,
			Inputs:       []graph.Input{widget("value", typ, opts)},
			Outputs:      outputs(typ),
			Extra:        v3Extra(1, &name),
		},
		get: get,
	}
}

// pyMaxSize is Python's sys.maxsize on 64-bit builds, the bound of the Int and Float
// primitives.
const pyMaxSize = math.MaxInt64

func newPrimitiveInt() *Primitive {
	return newPrimitive("PrimitiveInt", "Int", graph.TypeInt,
		map[string]any{"min": int64(-pyMaxSize), "max": int64(pyMaxSize), "control_after_generate": true},
		func(in nodes.Inputs) (any, error) { return in.Int("value") })
}

func newPrimitiveFloat() *Primitive {
	return newPrimitive("PrimitiveFloat", "Float", graph.TypeFloat,
		map[string]any{"min": int64(-pyMaxSize), "max": int64(pyMaxSize)},
		func(in nodes.Inputs) (any, error) { return in.Float("value") })
}

func newPrimitiveString() *Primitive {
	return newPrimitive("PrimitiveString", "String", graph.TypeString,
		map[string]any{"multiline": false},
		func(in nodes.Inputs) (any, error) { return in.String("value") })
}

func newPrimitiveStringMultiline() *Primitive {
	return newPrimitive("PrimitiveStringMultiline", "String (Multiline)", graph.TypeString,
		map[string]any{"multiline": true},
		func(in nodes.Inputs) (any, error) { return in.String("value") })
}

func newPrimitiveBoolean() *Primitive {
	return newPrimitive("PrimitiveBoolean", "Boolean", graph.TypeBoolean,
		map[string]any{},
		func(in nodes.Inputs) (any, error) { return in.Bool("value") })
}

// Schema implements nodes.Node.
func (p *Primitive) Schema() *graph.Schema { return &p.schema }

// Run implements nodes.Node.
func (p *Primitive) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	v, err := p.get(in)
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.Result{Outputs: []any{v}}, nil
}

// Interface guard.
var _ nodes.Node = (*Primitive)(nil)

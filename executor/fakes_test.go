package executor_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// counter counts node runs per node id, across the fake nodes of one test.
type counter struct {
	mu   sync.Mutex
	runs map[string]int
}

func (c *counter) add(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.runs == nil {
		c.runs = map[string]int{}
	}
	c.runs[id]++
}

// take returns the counts so far and resets them.
func (c *counter) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.runs
	c.runs = nil
	if r == nil {
		r = map[string]int{}
	}
	return r
}

// fake is a test node: a schema and a function.
type fake struct {
	schema *graph.Schema
	run    func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error)
}

func (f *fake) Schema() *graph.Schema { return f.schema }
func (f *fake) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	return f.run(ctx, env, in)
}

// fileNode is a fake with an IsChanged hook whose fingerprint the test controls.
type fileNode struct {
	fake
	mu sync.Mutex
	fp string
}

func (f *fileNode) IsChanged(env *nodes.Env, in nodes.Inputs) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fp, nil
}

func (f *fileNode) set(fp string) {
	f.mu.Lock()
	f.fp = fp
	f.mu.Unlock()
}

func intIn(name string) graph.Input {
	return graph.Input{Name: name, Type: graph.TypeInt, Default: 0}
}

// fixture is a registry of fake nodes sharing one run counter.
type fixture struct {
	reg     *nodes.Registry
	runs    *counter
	file    *fileNode
	started chan string // Blocker sends its node id after its first step
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	fx := &fixture{reg: nodes.NewRegistry(), runs: &counter{}, started: make(chan string, 16)}
	must := func(n nodes.Node) {
		if err := fx.reg.Register(n); err != nil {
			t.Fatal(err)
		}
	}
	// Const outputs its INT widget.
	must(&fake{
		schema: &graph.Schema{Name: "Const", Inputs: []graph.Input{intIn("value")}, Outputs: []graph.Output{{Type: "INT", Name: "INT"}}},
		run: func(_ context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
			fx.runs.add(env.NodeID)
			v, err := in.Int("value")
			return nodes.Result{Outputs: []any{v}}, err
		},
	})
	// Add outputs a + b.
	must(&fake{
		schema: &graph.Schema{Name: "Add", Inputs: []graph.Input{{Name: "a", Type: "INT"}, intIn("b")}, Outputs: []graph.Output{{Type: "INT", Name: "INT"}}},
		run: func(_ context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
			fx.runs.add(env.NodeID)
			a, err := in.Int("a")
			if err != nil {
				return nodes.Result{}, err
			}
			b, err := in.Int("b")
			return nodes.Result{Outputs: []any{a + b}}, err
		},
	})
	// Sink is an output node showing its value; it also reports its hidden inputs.
	must(&fake{
		schema: &graph.Schema{Name: "Sink", OutputNode: true, Inputs: []graph.Input{
			{Name: "value", Type: "*"},
			{Name: "prompt", Section: graph.Hidden, Type: "PROMPT"},
			{Name: "extra_pnginfo", Section: graph.Hidden, Type: "EXTRA_PNGINFO"},
			{Name: "unique_id", Section: graph.Hidden, Type: "UNIQUE_ID"},
		}},
		run: func(_ context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
			fx.runs.add(env.NodeID)
			if id, _ := in.String("unique_id"); id != env.NodeID {
				return nodes.Result{}, fmt.Errorf("unique_id %q, want %q", id, env.NodeID)
			}
			if _, ok := in["prompt"].(graph.Prompt); !ok {
				return nodes.Result{}, fmt.Errorf("hidden prompt is %T", in["prompt"])
			}
			return nodes.Result{Outputs: []any{}, UI: map[string]any{"values": []any{in["value"]}}}, nil
		},
	})
	// Range outputs the list 0..n-1 (OUTPUT_IS_LIST).
	must(&fake{
		schema: &graph.Schema{Name: "Range", Inputs: []graph.Input{intIn("n")}, Outputs: []graph.Output{{Type: "INT", Name: "INT", IsList: true}}},
		run: func(_ context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
			fx.runs.add(env.NodeID)
			n, err := in.Int("n")
			if n > 1000 {
				return nodes.Result{}, fmt.Errorf("range: %d items is too many for a test", n)
			}
			items := []any{}
			for i := range n {
				items = append(items, i)
			}
			return nodes.Result{Outputs: []any{items}}, err
		},
	})
	// Sum takes whole lists (INPUT_IS_LIST) and shows and outputs their sum.
	must(&fake{
		schema: &graph.Schema{Name: "Sum", OutputNode: true, InputIsList: true, Inputs: []graph.Input{{Name: "values", Type: "INT"}}, Outputs: []graph.Output{{Type: "INT", Name: "INT"}}},
		run: func(_ context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
			fx.runs.add(env.NodeID)
			l, ok := in["values"].([]any)
			if !ok {
				return nodes.Result{}, fmt.Errorf("values is %T, want a list", in["values"])
			}
			var s int64
			for _, v := range l {
				s += v.(int64)
			}
			return nodes.Result{Outputs: []any{s}, UI: map[string]any{"sum": []any{s}, "count": []any{len(l)}}}, nil
		},
	})
	// Blocker steps until cancelled, reporting progress each step.
	must(&fake{
		schema: &graph.Schema{Name: "Blocker", OutputNode: true, Inputs: []graph.Input{intIn("steps")}},
		run: func(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
			fx.runs.add(env.NodeID)
			steps, _ := in.Int("steps")
			for i := 0; steps <= 0 || i < int(steps); i++ {
				if err := ctx.Err(); err != nil {
					return nodes.Result{}, err
				}
				env.Progress(i, int(steps))
				env.Preview(nodes.PreviewImage{Format: "JPEG", Data: []byte{byte(i)}})
				if i == 0 {
					fx.started <- env.NodeID
				}
				select {
				case <-ctx.Done():
				case <-fx.tick():
				}
			}
			return nodes.Result{Outputs: []any{}}, nil
		},
	})
	// Panic panics; Fail fails.
	must(&fake{
		schema: &graph.Schema{Name: "Panic", OutputNode: true, Inputs: []graph.Input{{Name: "value", Type: "INT"}}},
		run: func(_ context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
			fx.runs.add(env.NodeID)
			panic(fmt.Sprintf("boom in node %s", env.NodeID))
		},
	})
	must(&fake{
		schema: &graph.Schema{Name: "Fail", OutputNode: true, Inputs: []graph.Input{intIn("value")}},
		run: func(_ context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
			fx.runs.add(env.NodeID)
			return nodes.Result{}, errors.New("fail: value rejected")
		},
	})
	// File has an IsChanged hook (like LoadImage's file hash).
	fx.file = &fileNode{fp: "v1", fake: fake{
		schema: &graph.Schema{Name: "File", Inputs: []graph.Input{{Name: "path", Type: graph.TypeString}}, Outputs: []graph.Output{{Type: "INT", Name: "INT"}}},
	}}
	fx.file.run = func(_ context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
		fx.runs.add(env.NodeID)
		return nodes.Result{Outputs: []any{int64(7)}}, nil
	}
	must(fx.file)
	return fx
}

// tick paces Blocker's steps; a closed channel makes it spin, which is fine: it checks
// ctx every step.
func (fx *fixture) tick() <-chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}

// node is a shorthand for a prompt node.
func node(class string, inputs map[string]any) *graph.Node {
	return &graph.Node{ClassType: class, Inputs: inputs}
}

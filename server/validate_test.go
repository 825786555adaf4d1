package server

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// checkedNode is an output node that checks its "path" input itself, as LoadImage does.
type checkedNode struct{ name string }

func (n checkedNode) Schema() *graph.Schema {
	return &graph.Schema{Name: n.name, OutputNode: true,
		Inputs: []graph.Input{
			{Name: "path", Type: graph.TypeString, CustomValidation: true},
			{Name: "count", Type: graph.TypeInt, Options: map[string]any{"default": 1, "min": 0, "max": 9}},
		}}
}

func (checkedNode) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	return nodes.Result{}, nil
}

func (checkedNode) ValidateInputs(env *nodes.Env, in nodes.Inputs) error {
	p, err := in.String("path")
	if err != nil {
		return err
	}
	if _, err := in.Int("count"); err != nil {
		return err // the literal must arrive coerced
	}
	if p == "bad" || env.Dirs.Input != "/in" {
		return errors.New("Invalid image file: " + p)
	}
	return nil
}

// textNode outputs a STRING, for a link into a checked input.
type textNode struct{}

func (textNode) Schema() *graph.Schema {
	return &graph.Schema{Name: "Text", Inputs: []graph.Input{{Name: "value", Type: graph.TypeString}}, Outputs: []graph.Output{{Type: "STRING", Name: "STRING"}}}
}
func (textNode) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	return nodes.Result{}, nil
}

func TestGraphValidatorCustom(t *testing.T) {
	reg := nodes.NewRegistry()
	for _, n := range []nodes.Node{checkedNode{"Checked"}, textNode{}} {
		if err := reg.Register(n); err != nil {
			t.Fatal(err)
		}
	}
	validate := GraphValidator(reg, nodes.Dirs{Input: "/in"})
	parse := func(s string) graph.Prompt {
		p, err := graph.ParsePrompt([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, prompt string
		outputs      []string // nil: rejected
		errType      string   // top-level error type when rejected
		nodeErr      string   // node id expected in node_errors
	}{
		{name: "passes", prompt: `{"1": {"class_type": "Checked", "inputs": {"path": "ok", "count": 2}}}`, outputs: []string{"1"}},
		{name: "fails", prompt: `{"1": {"class_type": "Checked", "inputs": {"path": "bad", "count": 2}}}`,
			errType: "prompt_outputs_failed_validation", nodeErr: "1"},
		{name: "one of two outputs fails", prompt: `{"1": {"class_type": "Checked", "inputs": {"path": "bad", "count": 2}},
			"2": {"class_type": "Checked", "inputs": {"path": "ok", "count": 2}}}`, outputs: []string{"2"}, nodeErr: "1"},
		{name: "linked input is checked at run time", prompt: `{"1": {"class_type": "Text", "inputs": {"value": "bad"}},
			"2": {"class_type": "Checked", "inputs": {"path": ["1", 0], "count": 2}}}`, outputs: []string{"2"}},
		{name: "schema errors come first", prompt: `{"1": {"class_type": "Checked", "inputs": {"path": "bad", "count": 99}}}`,
			errType: "prompt_outputs_failed_validation", nodeErr: "1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			outs, ne, err := validate(parse(tc.prompt), nil)
			if tc.outputs == nil {
				var rej *Rejection
				if !errors.As(err, &rej) {
					t.Fatalf("want a rejection, got outputs %v err %v", outs, err)
				}
				var e map[string]any
				json.Unmarshal(rej.Err, &e)
				if e["type"] != tc.errType {
					t.Fatalf("error %s", rej.Err)
				}
				ne = rej.NodeErrors
			} else if err != nil || strings.Join(outs, ",") != strings.Join(tc.outputs, ",") {
				t.Fatalf("outputs %v, err %v; want %v", outs, err, tc.outputs)
			}
			var nodeErrs map[string]graph.NodeErrors
			if err := json.Unmarshal(ne, &nodeErrs); err != nil {
				t.Fatal(err)
			}
			if tc.nodeErr == "" {
				if len(nodeErrs) != 0 {
					t.Fatalf("unexpected node_errors %s", ne)
				}
				return
			}
			got, ok := nodeErrs[tc.nodeErr]
			if !ok || len(got.Errors) == 0 || got.ClassType != "Checked" || len(got.DependentOutputs) != 1 {
				t.Fatalf("node_errors %s", ne)
			}
			if tc.name != "schema errors come first" {
				e := got.Errors[0]
				if e.Type != "custom_validation_failed" || e.Message != "Custom validation failed for node" ||
					e.Details != "path - Invalid image file: bad" || e.ExtraInfo["input_name"] != "path" {
					t.Fatalf("custom error %+v", e)
				}
			} else if got.Errors[0].Type != "value_bigger_than_max" {
				t.Fatalf("want the schema error, got %s", ne)
			}
		})
	}
}

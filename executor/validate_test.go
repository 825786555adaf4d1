package executor_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/executor/store"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// checkedNode is an output node that checks its "path" input itself, as LoadImage does.
type checkedNode struct{ name string }

func (n checkedNode) Schema() *graph.Schema {
	return &graph.Schema{Name: n.name, OutputNode: true,
		Inputs: []graph.Input{
			{Name: "path", Type: graph.TypeString, CustomValidation: true},
			{Name: "count", Type: graph.TypeInt, Default: 1, Min: graph.Num(0), Max: graph.Num(9)},
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

func validateRegistry(t *testing.T) *nodes.Registry {
	t.Helper()
	reg := nodes.NewRegistry()
	for _, n := range []nodes.Node{checkedNode{"Checked"}, textNode{}} {
		if err := reg.Register(n); err != nil {
			t.Fatal(err)
		}
	}
	return reg
}

func parse(t *testing.T, s string) graph.Prompt {
	t.Helper()
	p, err := graph.ParsePrompt([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidateCustom(t *testing.T) {
	reg := validateRegistry(t)
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
			outs, nodeErrs, err := executor.Validate(reg, nodes.Dirs{Input: "/in"}, parse(t, tc.prompt), nil)
			if tc.outputs == nil {
				var rej *executor.Rejection
				if !errors.As(err, &rej) {
					t.Fatalf("want a rejection, got outputs %v err %v", outs, err)
				}
				if rej.Err.Type != tc.errType {
					t.Fatalf("error %+v", rej.Err)
				}
				// The JSON form is ComfyUI's 400 body.
				b, _ := json.Marshal(rej)
				var body struct {
					Error      map[string]any             `json:"error"`
					NodeErrors map[string]json.RawMessage `json:"node_errors"`
				}
				if err := json.Unmarshal(b, &body); err != nil || body.Error["type"] != tc.errType || body.Error["extra_info"] == nil || body.NodeErrors == nil {
					t.Fatalf("rejection JSON %s", b)
				}
				nodeErrs = rej.NodeErrors
			} else if err != nil || strings.Join(outs, ",") != strings.Join(tc.outputs, ",") {
				t.Fatalf("outputs %v, err %v; want %v", outs, err, tc.outputs)
			}
			if tc.nodeErr == "" {
				if len(nodeErrs) != 0 {
					t.Fatalf("unexpected node_errors %v", nodeErrs)
				}
				return
			}
			got, ok := nodeErrs[tc.nodeErr]
			if !ok || len(got.Errors) == 0 || got.ClassType != "Checked" || len(got.DependentOutputs) != 1 {
				t.Fatalf("node_errors %+v", nodeErrs)
			}
			if tc.name != "schema errors come first" {
				e := got.Errors[0]
				if e.Type != "custom_validation_failed" || e.Message != "Custom validation failed for node" ||
					e.Details != "path - Invalid image file: bad" || e.ExtraInfo["input_name"] != "path" {
					t.Fatalf("custom error %+v", e)
				}
			} else if got.Errors[0].Type != "value_bigger_than_max" {
				t.Fatalf("want the schema error, got %+v", got.Errors[0])
			}
		})
	}
}

func TestRejectionJSON(t *testing.T) {
	rej := executor.Reject("invalid_prompt", "Cannot read workflow", "no such file")
	b, err := json.Marshal(rej)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"error":{"type":"invalid_prompt","message":"Cannot read workflow","details":"no such file","extra_info":{}},"node_errors":{}}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	var wrapped error = &wrapErr{rej}
	var got *executor.Rejection
	if !errors.As(wrapped, &got) || got != rej {
		t.Fatal("a wrapped rejection is not found by errors.As")
	}
	var ve *graph.ValidationError
	if !errors.As(rej, &ve) || ve.Type != "invalid_prompt" {
		t.Fatal("a rejection does not unwrap to its validation error")
	}
	if rej.Error() != "executor: prompt rejected: Cannot read workflow: no such file" {
		t.Fatalf("message %q", rej.Error())
	}
}

type wrapErr struct{ err error }

func (w *wrapErr) Error() string { return "wrapped: " + w.err.Error() }
func (w *wrapErr) Unwrap() error { return w.err }

// TestSubmitValidates: Submit refuses what Validate refuses, keeps only the outputs
// that validated (reporting the others), honours partial targets, moves sensitive
// extra_data out of the listing, stamps create_time and refuses an id already queued.
func TestSubmitValidates(t *testing.T) {
	reg := validateRegistry(t)
	st, err := store.Open(filepath.Join(t.TempDir(), "q.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e, err := executor.New(executor.Options{Registry: reg, Queue: st, Dirs: nodes.Dirs{Input: "/in"},
		Now: func() time.Time { return time.UnixMilli(1700000000123) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sub := e.Subscribe()
	defer sub.Close()

	_, err = e.Submit(ctx, &executor.Job{ID: "bad", Prompt: parse(t, `{"1": {"class_type": "Checked", "inputs": {"path": "bad", "count": 1}}}`)}, executor.PushOptions{})
	var rej *executor.Rejection
	if !errors.As(err, &rej) || rej.Err.Type != graph.ErrOutputsFailed {
		t.Fatalf("invalid prompt: err %v, want a rejection", err)
	}
	if n, _ := st.Remaining(ctx); n != 0 {
		t.Fatalf("a rejected prompt was queued")
	}

	two := `{"1": {"class_type": "Checked", "inputs": {"path": "bad", "count": 1}}, "2": {"class_type": "Checked", "inputs": {"path": "ok", "count": 1}},
		"3": {"class_type": "Checked", "inputs": {"path": "ok", "count": 1}}}`
	job := &executor.Job{ID: "p", Prompt: parse(t, two), ExtraData: map[string]any{"client_id": "c", "api_key_comfy_org": "k", "auth_token_comfy_org": "a",
		"create_time": 5}}
	res, err := e.Submit(ctx, job, executor.PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Number != 0 || strings.Join(job.Outputs, ",") != "2,3" || len(res.NodeErrors) != 1 || res.NodeErrors["1"] == nil {
		t.Fatalf("submitted %+v outputs %v", res, job.Outputs)
	}
	if ev := <-sub.C; ev.Type != executor.EventStatus || !ev.Broadcast {
		t.Fatalf("after submit: %+v, want a status broadcast", ev)
	}

	partial := &executor.Job{ID: "q", Prompt: parse(t, two), Outputs: []string{"3"}}
	if _, err := e.Submit(ctx, partial, executor.PushOptions{Front: true}); err != nil || strings.Join(partial.Outputs, ",") != "3" {
		t.Fatalf("partial targets: outputs %v, err %v", partial.Outputs, err)
	}
	_, pending, err := st.List(ctx)
	if err != nil || len(pending) != 2 || pending[0].ID != "q" || pending[1].ID != "p" {
		t.Fatalf("pending %v, err %v", pending, err)
	}
	if _, ok := pending[1].ExtraData["api_key_comfy_org"]; ok || pending[1].ExtraData["client_id"] != "c" {
		t.Fatalf("listing holds sensitive extra_data: %v", pending[1].ExtraData)
	}
	// The submit time replaced the client's create_time, in ms; a job without
	// extra_data gets one too.
	for _, p := range pending {
		if p.ExtraData[executor.CreateTimeKey] != json.Number("1700000000123") {
			t.Fatalf("%s: create_time %v", p.ID, p.ExtraData[executor.CreateTimeKey])
		}
	}
	if q, err := st.Lease(ctx); err != nil || q.ID != "q" {
		t.Fatalf("leased %v, err %v; want the front prompt q", q, err)
	}
	if leased, err := st.Lease(ctx); err != nil || leased.Sensitive["api_key_comfy_org"] != "k" || leased.Sensitive["auth_token_comfy_org"] != "a" {
		t.Fatalf("leased %+v, err %v: sensitive data not stored", leased, err)
	}

	_, err = e.Submit(ctx, &executor.Job{ID: "p", Prompt: parse(t, two)}, executor.PushOptions{})
	if !errors.Is(err, executor.ErrDuplicate) {
		t.Fatalf("duplicate id: %v, want ErrDuplicate", err)
	}
	generated := &executor.Job{Prompt: parse(t, two)}
	if _, err := e.Submit(ctx, generated, executor.PushOptions{}); err != nil || len(generated.ID) != 36 {
		t.Fatalf("generated id %q, err %v", generated.ID, err)
	}
}

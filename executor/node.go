package executor

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// runNode resolves a node's inputs and runs it, mapping it over list inputs as
// ComfyUI's map_node_over_list does (execution.py):
//
//   - every input is a list: a literal is a list of one, a link is the upstream
//     output's list of items (one item unless that output is a list or its node was
//     itself mapped);
//   - a node whose schema says InputIsList is called once with every input as []any;
//   - otherwise the node runs once per item of the longest input, the shorter inputs
//     repeating their last item; a node without inputs runs once, and a node with an
//     empty list input runs zero times (ComfyUI would call it with its inputs missing);
//   - the outputs of the calls are collected per slot: an IsList output's items are
//     concatenated, any other output contributes one item per call.
func (r *run) runNode(ctx context.Context, st *step) (*cacheEntry, *nodeError) {
	lists := map[string][]any{}
	for name, v := range st.literals {
		lists[name] = []any{v}
	}
	for name, l := range st.links {
		up, ok := r.results[l.NodeID]
		if !ok || l.Slot >= len(up.outputs) {
			return nil, &nodeError{nodeID: st.id, class: st.class, err: fmt.Errorf("input %q: no output from node %q", name, l.NodeID)}
		}
		lists[name] = up.outputs[l.Slot]
	}
	summary := summarize(lists)
	for _, in := range st.schema.Inputs {
		if in.Section != graph.Hidden {
			continue
		}
		if v, ok := r.hiddenValue(st, in.Type); ok {
			lists[in.Name] = []any{v}
		}
	}
	env := r.envFor(st)

	fail := func(err error) *nodeError {
		return &nodeError{nodeID: st.id, class: st.class, err: err, inputs: summary}
	}
	var calls []nodes.Inputs
	if st.schema.InputIsList {
		in := nodes.Inputs{}
		for name, l := range lists {
			in[name] = l
		}
		calls = append(calls, in)
	} else {
		n, empty := 0, false
		for _, l := range lists {
			n = max(n, len(l))
			empty = empty || len(l) == 0
		}
		switch {
		case len(lists) == 0:
			n = 1
		case empty:
			n = 0
		}
		for i := range n {
			in := nodes.Inputs{}
			for name, l := range lists {
				in[name] = l[min(i, len(l)-1)]
			}
			calls = append(calls, in)
		}
	}

	ent := &cacheEntry{outputs: make([][]any, len(st.schema.Outputs))}
	for i := range ent.outputs {
		ent.outputs[i] = []any{}
	}
	var uis []map[string]any
	for _, in := range calls {
		if err := ctx.Err(); err != nil {
			return nil, fail(err)
		}
		res, nerr := safeRun(ctx, st, env, in)
		if nerr != nil {
			nerr.inputs = summary
			return nil, nerr
		}
		if len(res.Outputs) != len(st.schema.Outputs) {
			return nil, fail(fmt.Errorf("returned %d outputs, schema has %d", len(res.Outputs), len(st.schema.Outputs)))
		}
		for slot, out := range st.schema.Outputs {
			v := res.Outputs[slot]
			if !out.IsList {
				ent.outputs[slot] = append(ent.outputs[slot], v)
				continue
			}
			items, ok := v.([]any)
			if !ok {
				return nil, fail(fmt.Errorf("output %d (%s) is a list output but Run returned %T, want []any", slot, out.Name, v))
			}
			ent.outputs[slot] = append(ent.outputs[slot], items...)
		}
		if res.UI != nil {
			uis = append(uis, res.UI)
		}
	}
	ent.ui = mergeUI(uis)
	if ent.ui != nil {
		// The UI output goes to websocket clients and into the durable history: one
		// that cannot be written as JSON (a NaN, a channel) is this node's error, not
		// a history write that fails later.
		if _, err := json.Marshal(ent.ui); err != nil {
			return nil, fail(fmt.Errorf("UI output is not valid JSON: %w", err))
		}
	}
	return ent, nil
}

// safeRun calls Run, turning a panic into a nodeError with the stack.
func safeRun(ctx context.Context, st *step, env *nodes.Env, in nodes.Inputs) (res nodes.Result, nerr *nodeError) {
	defer func() {
		if p := recover(); p != nil {
			nerr = &nodeError{nodeID: st.id, class: st.class, err: fmt.Errorf("panic: %v", p), panicked: true,
				stack: strings.Split(strings.TrimSpace(string(debug.Stack())), "\n")}
		}
	}()
	res, err := st.node.Run(ctx, env, in)
	if err != nil {
		return res, &nodeError{nodeID: st.id, class: st.class, err: err}
	}
	return res, nil
}

// mergeUI combines the UI outputs of a mapped node's calls as ComfyUI's
// merge_result_data does: the lists under each key are concatenated (keys of the
// first call). A key whose value is not a list keeps the last call's value.
func mergeUI(uis []map[string]any) map[string]any {
	switch len(uis) {
	case 0:
		return nil
	case 1:
		return uis[0]
	}
	out := map[string]any{}
	for k := range uis[0] {
		var items []any
		isList := true
		var last any
		for _, ui := range uis {
			v, ok := ui[k]
			if !ok {
				continue
			}
			last = v
			l, ok := v.([]any)
			if !ok {
				isList = false
				continue
			}
			items = append(items, l...)
		}
		if isList {
			if items == nil {
				items = []any{}
			}
			out[k] = items
		} else {
			out[k] = last
		}
	}
	return out
}

// hiddenValue fills a hidden input as ComfyUI does.
func (r *run) hiddenValue(st *step, typ string) (any, bool) {
	switch typ {
	case hiddenPrompt, hiddenDynPrompt:
		return r.job.Prompt, true
	case hiddenExtraPNGInfo:
		if info := r.job.ExtraPNGInfo(); info != nil {
			return info, true
		}
	case hiddenUniqueID:
		return st.id, true
	case hiddenAuthToken:
		v, ok := r.job.Sensitive["auth_token_comfy_org"]
		return v, ok
	case hiddenAPIKey:
		v, ok := r.job.Sensitive["api_key_comfy_org"]
		return v, ok
	}
	return nil, false
}

// summarize formats a node's inputs for execution_error's current_inputs as ComfyUI's
// format_value: null, numbers, strings and booleans as they are, other values as a
// short description.
func summarize(lists map[string][]any) map[string][]any {
	out := make(map[string][]any, len(lists))
	for name, l := range lists {
		vals := make([]any, len(l))
		for i, v := range l {
			vals[i] = formatValue(v)
		}
		out[name] = vals
	}
	return out
}

func formatValue(v any) any {
	switch x := v.(type) {
	case nil, bool, int, int64, uint64, float64:
		return x
	case string:
		if len(x) > 1024 {
			return x[:1024] + "…"
		}
		return x
	case fmt.Stringer:
		s := x.String()
		if len(s) > 200 {
			s = s[:200] + "…"
		}
		return s
	}
	return describe(v)
}

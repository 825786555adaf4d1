package executor

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// Validate checks prompt p before it is queued, as ComfyUI's validate_prompt does
// (execution.py): the schema checks of graph.ValidatePartial (invalid_prompt,
// prompt_no_outputs, per-node node_errors), then each node's own check of its literal
// inputs (nodes.InputValidator, ComfyUI's VALIDATE_INPUTS), whose failures become
// custom_validation_failed errors that drop the outputs depending on the node. dirs are
// the folders those checks read (LoadImage's input folder); targets restricts the run
// to these output nodes (partial_execution_targets; nil means every output node).
//
// It returns the output node ids to execute and the node errors of outputs that were
// dropped while others remain (ComfyUI answers those with its 200). A prompt that
// cannot run returns a *Rejection.
func Validate(reg *nodes.Registry, dirs nodes.Dirs, p graph.Prompt, targets []string) ([]string, map[string]*graph.NodeErrors, error) {
	if reg == nil {
		return nil, nil, fmt.Errorf("executor: validate: nil registry")
	}
	res := graph.ValidatePartial(p, reg, targets)
	if res.OK() {
		applyCustomValidation(res, p, reg, dirs)
	}
	if !res.OK() {
		return nil, nil, &Rejection{Err: res.Error, NodeErrors: res.NodeErrors}
	}
	ne := res.NodeErrors
	if ne == nil {
		ne = map[string]*graph.NodeErrors{}
	}
	return res.Outputs, ne, nil
}

// Rejection is a prompt refused before it is queued: ComfyUI's 400 answer of POST
// /prompt, {"error": {type, message, details, extra_info}, "node_errors": {...}}, which
// is its JSON form. Find it with errors.As.
type Rejection struct {
	// Err is the top-level "error" object; it is never nil.
	Err *graph.ValidationError
	// NodeErrors is "node_errors", keyed by node id; nil marshals as {}.
	NodeErrors map[string]*graph.NodeErrors
}

// Reject returns a Rejection with ComfyUI's error object and no node errors, for a
// prompt refused before its nodes were looked at (unreadable file, bad JSON).
func Reject(typ, message, details string) *Rejection {
	return &Rejection{Err: &graph.ValidationError{Type: typ, Message: message, Details: details, ExtraInfo: map[string]any{}}}
}

func (r *Rejection) Error() string {
	s := "executor: prompt rejected: " + r.Err.Message
	if r.Err.Details != "" {
		s += ": " + r.Err.Details
	}
	return s
}

// Unwrap returns the top-level validation error.
func (r *Rejection) Unwrap() error { return r.Err }

// MarshalJSON writes ComfyUI's 400 body.
func (r *Rejection) MarshalJSON() ([]byte, error) {
	ne := r.NodeErrors
	if ne == nil {
		ne = map[string]*graph.NodeErrors{}
	}
	return json.Marshal(struct {
		Error      *graph.ValidationError       `json:"error"`
		NodeErrors map[string]*graph.NodeErrors `json:"node_errors"`
	}{r.Err, ne})
}

// applyCustomValidation runs InputValidator on every node that an output of res needs,
// and moves the outputs that depend on a failing node from res.Outputs to
// res.NodeErrors (execution.py validate_inputs, the VALIDATE_INPUTS branch, and
// validate_prompt's bookkeeping of dependent_outputs). With no output left, res gets
// ComfyUI's prompt_outputs_failed_validation error.
func applyCustomValidation(res *graph.ValidationResult, p graph.Prompt, reg *nodes.Registry, dirs nodes.Dirs) {
	failed := map[string][]*graph.ValidationError{}
	checked := map[string]bool{}
	var good []string
	var details []string
	for _, out := range res.Outputs {
		bad := false
		for _, id := range ancestors(p, out) {
			if !checked[id] {
				checked[id] = true
				if errs := customErrors(p, id, reg, dirs); len(errs) > 0 {
					failed[id] = errs
				}
			}
			errs, ok := failed[id]
			if !ok {
				continue
			}
			bad = true
			if res.NodeErrors == nil {
				res.NodeErrors = map[string]*graph.NodeErrors{}
			}
			ne := res.NodeErrors[id]
			if ne == nil {
				ne = &graph.NodeErrors{Errors: errs, DependentOutputs: []string{}, ClassType: p[id].ClassType}
				res.NodeErrors[id] = ne
			}
			ne.DependentOutputs = append(ne.DependentOutputs, out)
			for _, e := range errs {
				details = append(details, e.Message+": "+e.Details)
			}
		}
		if !bad {
			good = append(good, out)
		}
	}
	res.Outputs = good
	if len(good) == 0 && len(failed) > 0 {
		res.Error = &graph.ValidationError{Type: graph.ErrOutputsFailed, Message: "Prompt outputs failed validation",
			Details: strings.Join(details, "\n"), ExtraInfo: map[string]any{}}
	}
}

// ancestors returns out and every node it reaches through links, sorted.
func ancestors(p graph.Prompt, out string) []string {
	seen := map[string]bool{}
	stack := []string{out}
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[id] {
			continue
		}
		seen[id] = true
		n := p[id]
		if n == nil {
			continue
		}
		for _, v := range n.Inputs {
			if l, ok := graph.AsLink(v); ok && !seen[l.NodeID] {
				stack = append(stack, l.NodeID)
			}
		}
	}
	ids := make([]string, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// customErrors runs one node's InputValidator on its literal inputs. As in ComfyUI, a
// node whose checked inputs come through links is not checked here (their values exist
// only at run time), and one error is reported per checked input, with details
// "input - message".
func customErrors(p graph.Prompt, id string, reg *nodes.Registry, dirs nodes.Dirs) []*graph.ValidationError {
	n := p[id]
	node, err := reg.Lookup(n.ClassType)
	if err != nil {
		return nil
	}
	v, ok := node.(nodes.InputValidator)
	if !ok {
		return nil
	}
	schema := node.Schema()
	var checked []string
	in := nodes.Inputs{}
	for i := range schema.Inputs {
		spec := &schema.Inputs[i]
		raw, present := n.Inputs[spec.Name]
		if !present {
			continue
		}
		if _, isLink := graph.AsLink(raw); isLink {
			if spec.CustomValidation {
				return nil
			}
			continue
		}
		val, err := graph.Coerce(spec, raw)
		if err != nil {
			continue // the schema checks have reported it
		}
		in[spec.Name] = val
		if spec.CustomValidation {
			checked = append(checked, spec.Name)
		}
	}
	env := &nodes.Env{NodeID: id, Dirs: dirs, Prompt: p}
	verr := v.ValidateInputs(env, in)
	if verr == nil {
		return nil
	}
	if len(checked) == 0 {
		checked = []string{""}
	}
	slices.Sort(checked)
	errs := make([]*graph.ValidationError, 0, len(checked))
	for _, name := range checked {
		d := verr.Error()
		if name != "" {
			d = fmt.Sprintf("%s - %s", name, verr.Error())
		}
		errs = append(errs, &graph.ValidationError{Type: graph.ErrCustomValidationFailed, Message: "Custom validation failed for node",
			Details: d, ExtraInfo: map[string]any{"input_name": name}, NodeID: id, ClassType: n.ClassType, Input: name})
	}
	return errs
}

package graph

import (
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"sort"
	"strings"
)

// Validation of an API prompt against node schemas, with the error shapes, types and
// messages of ComfyUI 0.3.64 (execution.py validate_prompt and validate_inputs;
// comfy_execution/validation.py validate_node_input; server.py post_prompt for the 400
// body). Where ComfyUI raises a Python exception instead of reporting (a link to a
// node that does not exist, an output slot out of range, a dependency cycle), we report
// a typed error of our own; see the codex note for the list.

// ComfyUI's error types.
const (
	ErrInvalidPrompt          = "invalid_prompt"
	ErrPromptNoOutputs        = "prompt_no_outputs"
	ErrOutputsFailed          = "prompt_outputs_failed_validation"
	ErrRequiredInputMissing   = "required_input_missing"
	ErrBadLinkedInput         = "bad_linked_input"
	ErrReturnTypeMismatch     = "return_type_mismatch"
	ErrInvalidInputType       = "invalid_input_type"
	ErrValueSmallerThanMin    = "value_smaller_than_min"
	ErrValueBiggerThanMax     = "value_bigger_than_max"
	ErrValueNotInList         = "value_not_in_list"
	ErrDependencyCycle        = "dependency_cycle" // ours: ComfyUI fails at run time
	ErrCustomValidationFailed = "custom_validation_failed"
)

// ValidationError is one error object of ComfyUI's /prompt reply: the top-level
// "error", or one entry of a node's "errors". NodeID, ClassType and Input say where it
// is, for Go callers; they are not part of the JSON.
type ValidationError struct {
	Type      string         `json:"type"`
	Message   string         `json:"message"`
	Details   string         `json:"details"`
	ExtraInfo map[string]any `json:"extra_info"`

	NodeID    string `json:"-"`
	ClassType string `json:"-"`
	Input     string `json:"-"`
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString("graph: ")
	if e.NodeID != "" {
		fmt.Fprintf(&b, "node %q", e.NodeID)
		if e.ClassType != "" {
			fmt.Fprintf(&b, " (%s)", e.ClassType)
		}
		b.WriteString(": ")
	}
	if e.Input != "" {
		fmt.Fprintf(&b, "input %q: ", e.Input)
	}
	b.WriteString(e.Type)
	b.WriteString(": ")
	b.WriteString(e.Message)
	if e.Details != "" && e.Details != e.Input {
		b.WriteString(": ")
		b.WriteString(e.Details)
	}
	return b.String()
}

// NodeErrors is one entry of ComfyUI's "node_errors".
type NodeErrors struct {
	Errors           []*ValidationError `json:"errors"`
	DependentOutputs []string           `json:"dependent_outputs"`
	ClassType        string             `json:"class_type"`
}

// ValidationResult is the outcome of Validate. When Error is nil the prompt may run:
// Outputs lists the output nodes that validated (NodeErrors may still describe outputs
// that did not, as ComfyUI reports with a 200). When Error is set, the prompt is
// refused and Body is ComfyUI's 400 body.
type ValidationResult struct {
	Error      *ValidationError
	NodeErrors map[string]*NodeErrors
	Outputs    []string
}

// OK reports whether the prompt may run.
func (r *ValidationResult) OK() bool { return r.Error == nil }

// Body returns ComfyUI's /prompt error body {"error": ..., "node_errors": ...}.
func (r *ValidationResult) Body() map[string]any {
	ne := r.NodeErrors
	if ne == nil {
		ne = map[string]*NodeErrors{}
	}
	return map[string]any{"error": r.Error, "node_errors": ne}
}

// Err returns the result as a Go error (nil when OK): the top-level error, or for a
// prompt that failed on nodes, the first node error.
func (r *ValidationResult) Err() error {
	if r.Error == nil {
		return nil
	}
	for _, id := range sortedKeys(r.NodeErrors) {
		if ne := r.NodeErrors[id]; len(ne.Errors) > 0 {
			return ne.Errors[0]
		}
	}
	return r.Error
}

func sortedKeys[V any](m map[string]V) []string {
	ids := make([]string, 0, len(m))
	for k := range m {
		ids = append(ids, k)
	}
	SortIDs(ids)
	return ids
}

// Validate checks p against the schemas as ComfyUI does before queueing it.
func Validate(p Prompt, s Schemas) *ValidationResult {
	return ValidatePartial(p, s, nil)
}

// ValidatePartial is Validate restricted to the output nodes in targets (ComfyUI's
// partial_execution_targets); nil means every output node.
func ValidatePartial(p Prompt, s Schemas, targets []string) *ValidationResult {
	res := &ValidationResult{NodeErrors: map[string]*NodeErrors{}}
	want := map[string]bool{}
	for _, t := range targets {
		want[t] = true
	}
	var outputs []string
	for _, id := range SortedIDs(p) {
		n := p[id]
		if n == nil || n.ClassType == "" {
			res.Error = &ValidationError{Type: ErrInvalidPrompt, Message: "Cannot execute because a node is missing the class_type property.",
				Details: fmt.Sprintf("Node ID '#%s'", id), ExtraInfo: map[string]any{}, NodeID: id}
			return res
		}
		sc, ok := s.Schema(n.ClassType)
		if !ok {
			res.Error = &ValidationError{Type: ErrInvalidPrompt, Message: fmt.Sprintf("Cannot execute because node %s does not exist.", n.ClassType),
				Details: fmt.Sprintf("Node ID '#%s'", id), ExtraInfo: map[string]any{}, NodeID: id, ClassType: n.ClassType}
			return res
		}
		if sc.OutputNode && (targets == nil || want[id]) {
			outputs = append(outputs, id)
		}
	}
	if len(outputs) == 0 {
		res.Error = &ValidationError{Type: ErrPromptNoOutputs, Message: "Prompt has no outputs", Details: "", ExtraInfo: map[string]any{}}
		return res
	}
	v := &validator{p: p, s: s, done: map[string]*nodeResult{}, busy: map[string]bool{}, cycle: map[string][]string{}}
	for _, c := range Cycles(p, outputs) {
		// Each cycle is reported once, on its first node, with at most MaxCycleIDs ids:
		// listing the whole cycle on each of its nodes made the answer quadratic.
		v.cycle[c[0]] = c
	}
	var lines []string
	var failed []int // indexes in outputs of the outputs that failed, ascending
	for i, o := range outputs {
		v.output = i
		r := v.node(o)
		if r.ok {
			res.Outputs = append(res.Outputs, o)
			continue
		}
		failed = append(failed, i)
		for _, e := range r.errs {
			lines = append(lines, e.Message+": "+e.Details)
		}
	}
	// ComfyUI appends each failed output to the dependent_outputs of every failing node
	// validated so far: a node's list is the failed outputs from the one whose
	// validation first reached it on. Built once here, capped per node, so that many
	// failing outputs over many failing nodes cost no quadratic answer.
	for _, id := range sortedKeys(v.done) {
		d := v.done[id]
		if d.ok || len(d.errs) == 0 {
			continue
		}
		from := sort.SearchInts(failed, d.output)
		deps := make([]string, 0, min(len(failed)-from, MaxDependentOutputs))
		for _, i := range failed[from:] {
			if len(deps) == MaxDependentOutputs {
				break
			}
			deps = append(deps, outputs[i])
		}
		if len(deps) > 0 {
			res.NodeErrors[id] = &NodeErrors{Errors: d.errs, DependentOutputs: deps, ClassType: p[id].ClassType}
		}
	}
	if len(res.Outputs) == 0 {
		res.Error = &ValidationError{Type: ErrOutputsFailed, Message: "Prompt outputs failed validation",
			Details: strings.Join(lines, "\n"), ExtraInfo: map[string]any{}}
	}
	return res
}

type nodeResult struct {
	ok   bool
	errs []*ValidationError
	// output is the index of the output whose validation first reached the node.
	output int
}

// MaxDependentOutputs bounds the dependent_outputs listed for one failing node.
const MaxDependentOutputs = 64

type validator struct {
	p     Prompt
	s     Schemas
	done  map[string]*nodeResult
	busy  map[string]bool
	cycle map[string][]string
	// output is the index of the output being validated.
	output int
}

// node validates one node and, through its links, everything upstream of it
// (validate_inputs), memoised.
func (v *validator) node(id string) *nodeResult {
	if r, ok := v.done[id]; ok {
		return r
	}
	if v.busy[id] {
		// Reached again through a cycle: the cycle error is reported on the node itself.
		return &nodeResult{ok: false}
	}
	v.busy[id] = true
	defer delete(v.busy, id)
	n := v.p[id]
	sc, _ := v.s.Schema(n.ClassType)
	r := &nodeResult{ok: true, output: v.output}
	add := func(e *ValidationError) {
		e.NodeID, e.ClassType = id, n.ClassType
		if e.ExtraInfo == nil {
			e.ExtraInfo = map[string]any{}
		}
		r.errs = append(r.errs, e)
	}
	if c := v.cycle[id]; c != nil {
		listed := CappedCycle(c)
		add(&ValidationError{Type: ErrDependencyCycle, Message: "Dependency cycle detected",
			Details:   "nodes " + CycleText(listed, len(c)) + " depend on each other",
			ExtraInfo: map[string]any{"cycle": listed, "cycle_size": len(c)}})
	}
	upstreamOK := true
	for i := range sc.Inputs {
		in := &sc.Inputs[i]
		if in.Section == Hidden {
			continue
		}
		val, present := n.Inputs[in.Name]
		if !present {
			if in.Section == Required {
				add(&ValidationError{Type: ErrRequiredInputMissing, Message: "Required input is missing", Details: in.Name,
					ExtraInfo: map[string]any{"input_name": in.Name}, Input: in.Name})
			}
			continue
		}
		if l, isLink := val.(Link); isLink {
			val = NewLink(l.NodeID, l.Slot)
		}
		if list, isList := val.([]any); isList {
			e, ok := v.link(id, in, list)
			if e != nil {
				e.Input = in.Name
				add(e)
			}
			if !ok {
				upstreamOK = false
			}
			continue
		}
		if e := checkLiteral(in, val); e != nil {
			e.Input = in.Name
			add(e)
		}
	}
	r.ok = upstreamOK && len(r.errs) == 0
	v.done[id] = r
	return r
}

// inputConfig is ComfyUI's (input_type, extra_info) pair for extra_info.input_config.
func inputConfig(in *Input) []any {
	opts := in.Options()
	if in.Type == TypeCombo {
		choices := []string{}
		if in.Choices != nil {
			choices = in.Choices()
		}
		if in.ComboV3 {
			opts["options"] = choices
			return []any{TypeCombo, opts}
		}
		return []any{choices, opts}
	}
	return []any{in.Type, opts}
}

// link checks a linked input: its shape, the node and slot it points at, and the
// type, then validates the upstream node. ok is false when the input or anything
// upstream failed.
func (v *validator) link(id string, in *Input, list []any) (*ValidationError, bool) {
	info := inputConfig(in)
	bad := func(msg, details string) *ValidationError {
		return &ValidationError{Type: ErrBadLinkedInput, Message: msg, Details: details,
			ExtraInfo: map[string]any{"input_name": in.Name, "input_config": info, "received_value": list}}
	}
	if len(list) != 2 {
		return bad("Bad linked input, must be a length-2 list of [node_id, slot_index]", in.Name), false
	}
	l, ok := AsLink(list)
	if !ok {
		return bad("Bad linked input, must be a length-2 list of [node_id, slot_index]", in.Name), false
	}
	up := v.p[l.NodeID]
	if up == nil {
		return bad("Bad linked input, the linked node does not exist", fmt.Sprintf("%s, node '%s' does not exist", in.Name, l.NodeID)), false
	}
	usc, ok := v.s.Schema(up.ClassType)
	if !ok {
		return bad("Bad linked input, the linked node's class does not exist", fmt.Sprintf("%s, node '%s' has unknown class %s", in.Name, l.NodeID, up.ClassType)), false
	}
	if l.Slot < 0 || l.Slot >= len(usc.Outputs) {
		return bad("Bad linked input, the linked node has no such output",
			fmt.Sprintf("%s, node '%s' (%s) has %d outputs, slot %d requested", in.Name, l.NodeID, up.ClassType, len(usc.Outputs), l.Slot)), false
	}
	received := usc.Outputs[l.Slot].Type
	if !TypesMatch(received, in.Type) {
		inType := in.Type
		if in.Type == TypeCombo && !in.ComboV3 && in.Choices != nil {
			inType = pyRepr(in.Choices())
		}
		return &ValidationError{Type: ErrReturnTypeMismatch, Message: "Return type mismatch between linked nodes",
			Details:   fmt.Sprintf("%s, received_type(%s) mismatch input_type(%s)", in.Name, received, inType),
			ExtraInfo: map[string]any{"input_name": in.Name, "input_config": info, "received_type": received, "linked_node": list}}, false
	}
	return nil, v.node(l.NodeID).ok
}

// TypesMatch reports whether an output of type received may feed an input of type
// expected, as ComfyUI decides (validate_node_input, non-strict, with the IO enum's
// wildcard): "*" on either side matches; otherwise the comma-separated type sets must
// share a type ("IMAGE" fits "IMAGE,MASK").
func TypesMatch(received, expected string) bool {
	if received == expected || received == TypeAny || expected == TypeAny {
		return true
	}
	a := map[string]bool{}
	for _, t := range strings.Split(received, ",") {
		a[strings.TrimSpace(t)] = true
	}
	for _, t := range strings.Split(expected, ",") {
		if a[strings.TrimSpace(t)] {
			return true
		}
	}
	return false
}

// checkLiteral converts a literal and checks min, max and combo choices.
func checkLiteral(in *Input, raw any) (e *ValidationError) {
	info := inputConfig(in)
	val := unwrapValue(raw)
	var num *big.Rat // the converted value, for min/max
	var received any = val
	switch in.Type {
	case TypeInt:
		n, err := pyInt(val)
		if err != nil {
			return convertFailed(in, info, val, err.Error())
		}
		num = new(big.Rat).SetInt(n)
		received = json.Number(n.String())
		// The 64-bit range is checked after min and max, so that a seed past 2^64-1
		// gets ComfyUI's value_bigger_than_max rather than a conversion error.
		defer func() {
			if e == nil {
				if _, err := intValue(in, n, val); err != nil {
					e = convertFailed(in, info, val, err.(*CoerceError).Msg)
				}
			}
		}()
	case TypeFloat:
		f, err := pyFloat(val)
		if err == nil && (math.IsNaN(f) || math.IsInf(f, 0)) {
			err = fmt.Errorf("value is not a finite number")
		}
		if err != nil {
			return convertFailed(in, info, val, err.Error())
		}
		num = new(big.Rat).SetFloat64(f)
		received = json.Number(pyFloatRepr(f))
	case TypeString:
		received = pyStr(val)
	case TypeBoolean:
		received = pyBool(val)
	}
	if in.CustomValidation {
		// The node's own check (VALIDATE_INPUTS) replaces min, max and list membership,
		// as in ComfyUI's validate_inputs; the conversion above still applies.
		return nil
	}
	if num != nil {
		valText := pyRepr(received)
		if mr := in.Min.Rat(); mr != nil {
			if num.Cmp(mr) < 0 {
				return &ValidationError{Type: ErrValueSmallerThanMin, Message: fmt.Sprintf("Value %s smaller than min of %s", valText, pyRepr(in.Min.json())),
					Details: in.Name, ExtraInfo: map[string]any{"input_name": in.Name, "input_config": info, "received_value": received}}
			}
		}
		if mr := in.Max.Rat(); mr != nil {
			if num.Cmp(mr) > 0 {
				return &ValidationError{Type: ErrValueBiggerThanMax, Message: fmt.Sprintf("Value %s bigger than max of %s", valText, pyRepr(in.Max.json())),
					Details: in.Name, ExtraInfo: map[string]any{"input_name": in.Name, "input_config": info, "received_value": received}}
			}
		}
	}
	if in.Type == TypeCombo {
		if in.ComboV3 {
			// ComfyUI 0.3.64 checks membership only for classic list combos; a
			// ("COMBO", {"options": [...]}) input is passed on unchecked. We still require
			// a string, which is what Coerce gives the node.
			if _, ok := val.(string); !ok {
				if _, multi := comboMulti(in, val); !multi {
					return convertFailed(in, info, val, "a combo value must be a string")
				}
			}
			return nil
		}
		var choices []string
		if in.Choices != nil {
			choices = in.Choices()
		}
		s, isStr := val.(string)
		found := false
		if isStr {
			for _, c := range choices {
				if c == s {
					found = true
					break
				}
			}
		}
		if !found {
			listInfo := pyRepr(choices)
			var cfg any = info
			if len(choices) > 20 {
				listInfo = fmt.Sprintf("(list of length %d)", len(choices))
				cfg = nil
			}
			details := fmt.Sprintf("%s: '%s' not in %s", in.Name, pyStr(val), listInfo)
			if in.ChoicesHint != nil {
				if h := in.ChoicesHint(); h != "" {
					details += " (" + h + ")"
				}
			}
			return &ValidationError{Type: ErrValueNotInList, Message: "Value not in list",
				Details:   details,
				ExtraInfo: map[string]any{"input_name": in.Name, "input_config": cfg, "received_value": jsonSafe(val)}}
		}
	}
	return nil
}

func convertFailed(in *Input, info []any, val any, msg string) *ValidationError {
	return &ValidationError{Type: ErrInvalidInputType,
		Message: fmt.Sprintf("Failed to convert an input value to a %s value", in.Type),
		Details: fmt.Sprintf("%s, %s, %s", in.Name, pyStr(val), msg),
		ExtraInfo: map[string]any{"input_name": in.Name, "input_config": info, "received_value": jsonSafe(val),
			"exception_message": msg}}
}

// jsonSafe replaces values that encoding/json cannot write (NaN, ±Inf) by their Python
// text, so that an error body always encodes.
func jsonSafe(v any) any {
	switch x := v.(type) {
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return pyFloatRepr(x)
		}
	case float32:
		return jsonSafe(float64(x))
	}
	return v
}

// hasNodeError reports whether node id has errors of its own.
func (r *ValidationResult) hasNodeError(id string) bool {
	ne := r.NodeErrors[id]
	return ne != nil && len(ne.Errors) > 0
}

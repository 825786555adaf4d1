package graph

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// The UI "workflow" format: the litegraph graph that ComfyUI's front end saves, in its
// two link encodings. Version 0.4 stores links as arrays
// [id, origin_id, origin_slot, target_id, target_slot, type]; the version-1 schema
// (ComfyUI_frontend src/schemas/comfyWorkflowSchema.ts, "zComfyWorkflow1") stores
// them as objects and may carry subgraph definitions under definitions.subgraphs.
// Every type here keeps the keys it does not model, so a decoded workflow encodes back
// without losing anything.

// Node modes (litegraph's LGraphEventMode).
const (
	ModeAlways  = 0
	ModeOnEvent = 1
	ModeNever   = 2 // "muted": not queued
	ModeTrigger = 3
	ModeBypass  = 4 // passed through: consumers read a matching input instead
)

// Workflow is a UI workflow (or a subgraph definition, which has the same graph part).
type Workflow struct {
	Nodes       []*WorkflowNode
	Links       []*WorkflowLink
	Groups      []*WorkflowGroup
	Version     json.Number
	Extra       map[string]json.RawMessage // the "extra" object (ds, groupNodes, ...)
	Definitions *Definitions

	rest    rawFields
	present []string
}

func (w *Workflow) fields() []field {
	return []field{
		{"nodes", &w.Nodes}, {"links", &w.Links}, {"groups", &w.Groups},
		{"version", &w.Version}, {"extra", &w.Extra}, {"definitions", &w.Definitions},
	}
}

// UnmarshalJSON decodes a workflow, keeping unknown keys.
func (w *Workflow) UnmarshalJSON(b []byte) error {
	return decodeObject(b, "workflow", &w.rest, &w.present, w.fields()...)
}

// MarshalJSON encodes the workflow with its unknown keys.
func (w *Workflow) MarshalJSON() ([]byte, error) {
	return encodeObject(w.rest, w.present, w.fields()...)
}

// Unknown returns the raw value of a key that has no typed field, such as
// "last_node_id", "config", "state" or "id".
func (w *Workflow) Unknown(key string) (json.RawMessage, bool) {
	v, ok := w.rest[key]
	return v, ok
}

// Definitions is the version-1 "definitions" object.
type Definitions struct {
	Subgraphs []*Subgraph

	rest    rawFields
	present []string
}

func (d *Definitions) fields() []field { return []field{{"subgraphs", &d.Subgraphs}} }

// UnmarshalJSON decodes the definitions, keeping unknown keys.
func (d *Definitions) UnmarshalJSON(b []byte) error {
	return decodeObject(b, "definitions", &d.rest, &d.present, d.fields()...)
}

// MarshalJSON encodes the definitions with their unknown keys.
func (d *Definitions) MarshalJSON() ([]byte, error) {
	return encodeObject(d.rest, d.present, d.fields()...)
}

// Subgraph is a subgraph definition: a graph with declared inputs and outputs. A node
// whose type is the subgraph's ID is an instance of it. Inside, links from the subgraph's
// input node have origin id -10 and origin slot = the input's index; links into its
// output node have target id -20 and target slot = the output's index.
type Subgraph struct {
	ID      string
	Name    string
	Inputs  []*SubgraphIO
	Outputs []*SubgraphIO
	Nodes   []*WorkflowNode
	Links   []*WorkflowLink

	rest    rawFields
	present []string
}

// Subgraph IO node ids (litegraph's SUBGRAPH_INPUT_ID and SUBGRAPH_OUTPUT_ID).
const (
	SubgraphInputNodeID  = -10
	SubgraphOutputNodeID = -20
)

func (s *Subgraph) fields() []field {
	return []field{
		{"id", &s.ID}, {"name", &s.Name}, {"inputs", &s.Inputs}, {"outputs", &s.Outputs},
		{"nodes", &s.Nodes}, {"links", &s.Links},
	}
}

// UnmarshalJSON decodes a subgraph definition, keeping unknown keys.
func (s *Subgraph) UnmarshalJSON(b []byte) error {
	return decodeObject(b, "subgraph", &s.rest, &s.present, s.fields()...)
}

// MarshalJSON encodes the subgraph with its unknown keys.
func (s *Subgraph) MarshalJSON() ([]byte, error) {
	return encodeObject(s.rest, s.present, s.fields()...)
}

// SubgraphIO is one declared input or output of a subgraph.
type SubgraphIO struct {
	Name    string
	Type    SlotType
	LinkIDs []int64

	rest    rawFields
	present []string
}

func (s *SubgraphIO) fields() []field {
	return []field{{"name", &s.Name}, {"type", &s.Type}, {"linkIds", &s.LinkIDs}}
}

// UnmarshalJSON decodes the slot, keeping unknown keys.
func (s *SubgraphIO) UnmarshalJSON(b []byte) error {
	return decodeObject(b, "subgraph slot", &s.rest, &s.present, s.fields()...)
}

// MarshalJSON encodes the slot with its unknown keys.
func (s *SubgraphIO) MarshalJSON() ([]byte, error) {
	return encodeObject(s.rest, s.present, s.fields()...)
}

// WorkflowGroup is a visual group box; it does not affect conversion.
type WorkflowGroup struct {
	Title string

	rest    rawFields
	present []string
}

// UnmarshalJSON decodes the group, keeping unknown keys.
func (g *WorkflowGroup) UnmarshalJSON(b []byte) error {
	return decodeObject(b, "group", &g.rest, &g.present, field{"title", &g.Title})
}

// MarshalJSON encodes the group with its unknown keys.
func (g *WorkflowGroup) MarshalJSON() ([]byte, error) {
	return encodeObject(g.rest, g.present, field{"title", &g.Title})
}

// WorkflowNode is one node of a UI workflow.
type WorkflowNode struct {
	ID      ID
	Type    string
	Title   string
	Mode    int
	Inputs  []*WorkflowInput
	Outputs []*WorkflowOutput
	// WidgetsValues is kept verbatim: usually an array in widget order, sometimes an
	// object keyed by widget name (some custom nodes). Use Widgets to decode it.
	WidgetsValues json.RawMessage
	Properties    map[string]json.RawMessage

	rest    rawFields
	present []string
}

func (n *WorkflowNode) fields() []field {
	return []field{
		{"id", &n.ID}, {"type", &n.Type}, {"title", &n.Title}, {"mode", &n.Mode},
		{"inputs", &n.Inputs}, {"outputs", &n.Outputs},
		{"widgets_values", &n.WidgetsValues}, {"properties", &n.Properties},
	}
}

// UnmarshalJSON decodes the node, keeping unknown keys.
func (n *WorkflowNode) UnmarshalJSON(b []byte) error {
	return decodeObject(b, "node", &n.rest, &n.present, n.fields()...)
}

// MarshalJSON encodes the node with its unknown keys.
func (n *WorkflowNode) MarshalJSON() ([]byte, error) {
	return encodeObject(n.rest, n.present, n.fields()...)
}

// Widgets decodes widgets_values with numbers as json.Number: a list (the usual form),
// or a map keyed by widget name. Both are nil when the node has none.
func (n *WorkflowNode) Widgets() (list []any, named map[string]any, err error) {
	raw := bytes.TrimSpace(n.WidgetsValues)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil, nil
	}
	switch raw[0] {
	case '[':
		err = decodeNumbers(raw, &list)
	case '{':
		err = decodeNumbers(raw, &named)
	default:
		err = fmt.Errorf("widgets_values is %s, want an array or an object", jsonKind(raw))
	}
	return list, named, err
}

// WorkflowInput is an input slot of a UI node. Widget is set when the slot belongs to a
// widget (a widget converted to an input, or in newer front ends every widget input).
type WorkflowInput struct {
	Name   string
	Type   SlotType
	Link   *int64
	Widget *SlotWidget

	rest    rawFields
	present []string
}

func (s *WorkflowInput) fields() []field {
	return []field{{"name", &s.Name}, {"type", &s.Type}, {"link", &s.Link}, {"widget", &s.Widget}}
}

// UnmarshalJSON decodes the slot, keeping unknown keys.
func (s *WorkflowInput) UnmarshalJSON(b []byte) error {
	return decodeObject(b, "input slot", &s.rest, &s.present, s.fields()...)
}

// MarshalJSON encodes the slot with its unknown keys.
func (s *WorkflowInput) MarshalJSON() ([]byte, error) {
	return encodeObject(s.rest, s.present, s.fields()...)
}

// SlotWidget is the "widget" object of an input slot.
type SlotWidget struct {
	Name string

	rest    rawFields
	present []string
}

// UnmarshalJSON decodes the widget reference, keeping unknown keys.
func (w *SlotWidget) UnmarshalJSON(b []byte) error {
	return decodeObject(b, "slot widget", &w.rest, &w.present, field{"name", &w.Name})
}

// MarshalJSON encodes the widget reference with its unknown keys.
func (w *SlotWidget) MarshalJSON() ([]byte, error) {
	return encodeObject(w.rest, w.present, field{"name", &w.Name})
}

// WorkflowOutput is an output slot of a UI node.
type WorkflowOutput struct {
	Name  string
	Type  SlotType
	Links []int64

	rest    rawFields
	present []string
}

func (s *WorkflowOutput) fields() []field {
	return []field{{"name", &s.Name}, {"type", &s.Type}, {"links", &s.Links}}
}

// UnmarshalJSON decodes the slot, keeping unknown keys.
func (s *WorkflowOutput) UnmarshalJSON(b []byte) error {
	return decodeObject(b, "output slot", &s.rest, &s.present, s.fields()...)
}

// MarshalJSON encodes the slot with its unknown keys.
func (s *WorkflowOutput) MarshalJSON() ([]byte, error) {
	return encodeObject(s.rest, s.present, s.fields()...)
}

// SlotType is a litegraph slot type: normally a type name ("IMAGE", "*", "INT,FLOAT"),
// but old workflows hold other JSON here (a list of combo values, a number for
// litegraph's event slots). The raw JSON is kept so that it encodes back unchanged.
type SlotType struct {
	Name string // the type name; "COMBO" for a list of values; "" when unknown
	raw  json.RawMessage
}

// MarshalJSON writes the type as it was read.
func (t SlotType) MarshalJSON() ([]byte, error) {
	if t.raw != nil {
		return t.raw, nil
	}
	return json.Marshal(t.Name)
}

// UnmarshalJSON accepts any JSON value.
func (t *SlotType) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	*t = SlotType{}
	switch jsonKind(b) {
	case "a string":
		return json.Unmarshal(b, &t.Name)
	case "an array":
		t.Name = TypeCombo
	case "a number":
		t.Name = "*"
	}
	t.raw = append(json.RawMessage(nil), b...)
	return nil
}

// IsZero reports whether the type is unset (so that an absent key stays absent).
func (t SlotType) IsZero() bool { return t.Name == "" && t.raw == nil }

// WorkflowLink is a link of a UI workflow. It encodes back in the form it was read
// (an array in version 0.4, an object in the version-1 schema).
type WorkflowLink struct {
	ID         int64
	OriginID   ID
	OriginSlot int
	TargetID   ID
	TargetSlot int
	Type       SlotType

	asObject bool
	tail     []json.RawMessage // array elements past the sixth, kept verbatim
	rest     rawFields
	present  []string
}

func (l *WorkflowLink) fields() []field {
	return []field{
		{"id", &l.ID}, {"origin_id", &l.OriginID}, {"origin_slot", &l.OriginSlot},
		{"target_id", &l.TargetID}, {"target_slot", &l.TargetSlot}, {"type", &l.Type},
	}
}

// UnmarshalJSON accepts both link encodings.
func (l *WorkflowLink) UnmarshalJSON(b []byte) error {
	switch jsonKind(b) {
	case "an object":
		l.asObject = true
		return decodeObject(b, "link", &l.rest, &l.present, l.fields()...)
	case "an array":
		var elems []json.RawMessage
		if err := json.Unmarshal(b, &elems); err != nil {
			return err
		}
		if len(elems) < 5 {
			return fmt.Errorf("link has %d elements, want [id, origin_id, origin_slot, target_id, target_slot, type]", len(elems))
		}
		fs := l.fields()
		for i := 0; i < len(fs) && i < len(elems); i++ {
			if err := decodeNumbers(elems[i], fs[i].ptr); err != nil {
				return fmt.Errorf("link element %d (%s): %s", i, fs[i].key, shortJSONError(elems[i], err))
			}
		}
		if len(elems) > 6 {
			l.tail = elems[6:]
		}
		return nil
	default:
		return fmt.Errorf("link is %s, want an array or an object", jsonKind(b))
	}
}

// MarshalJSON writes the link in the form it was read.
func (l *WorkflowLink) MarshalJSON() ([]byte, error) {
	if l.asObject {
		return encodeObject(l.rest, l.present, l.fields()...)
	}
	arr := []any{l.ID, l.OriginID, l.OriginSlot, l.TargetID, l.TargetSlot, l.Type}
	for _, t := range l.tail {
		arr = append(arr, t)
	}
	return json.Marshal(arr)
}

// ParseWorkflow decodes a UI workflow. Malformed JSON gives a *ParseError with the byte
// offset; a value of the wrong shape gives a *ParseError that names where it is.
func ParseWorkflow(data []byte) (*Workflow, error) {
	if _, err := objectMembers("workflow", data); err != nil {
		return nil, err
	}
	// Nodes are decoded one by one so that an error can name the node.
	var top struct {
		Nodes []json.RawMessage `json:"nodes"`
	}
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, &ParseError{What: "workflow", Offset: -1, Msg: `"nodes" is not an array`, Err: err}
	}
	for i, raw := range top.Nodes {
		var n WorkflowNode
		if err := json.Unmarshal(raw, &n); err != nil {
			pe := &ParseError{What: "workflow", Offset: -1, Msg: fmt.Sprintf("nodes[%d]: %v", i, err), Err: err}
			var probe struct {
				ID ID `json:"id"`
			}
			if json.Unmarshal(raw, &probe) == nil && !probe.ID.IsZero() {
				pe.NodeID = probe.ID.String()
			}
			return nil, pe
		}
	}
	w := &Workflow{}
	if err := json.Unmarshal(data, w); err != nil {
		return nil, &ParseError{What: "workflow", Offset: -1, Msg: err.Error(), Err: err}
	}
	if !contains(w.present, "nodes") {
		return nil, &ParseError{What: "workflow", Offset: -1, Msg: `no "nodes" array`}
	}
	return w, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

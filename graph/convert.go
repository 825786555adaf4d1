package graph

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
)

// UI → API conversion, re-derived from what ComfyUI's front end does when it queues a
// graph (ComfyUI_frontend src/utils/executionUtil.ts graphToPrompt, with
// ExecutableNodeDTO.resolveInput/resolveOutput in litegraph's subgraph/ExecutableNodeDTO.ts,
// PrimitiveNode.applyToGraph in extensions/core/widgetInputs.ts, the legacy group nodes
// of extensions/core/groupNode.ts, and the widget constructors that decide which widgets
// a node has). In short:
//
//   - Each node's widgets are its schema's widget inputs (INT, FLOAT, STRING, BOOLEAN,
//     COMBO without forceInput) in input order, required then optional. Some widgets are
//     followed by front-end-only widgets that take a place in widgets_values but are
//     never queued: control_after_generate after an INT whose options say so, or, when
//     the option is absent, an INT named seed or noise_seed; control_after_generate and
//     control_filter_list after a COMBO with control_after_generate; the "upload" button
//     after an input with image_upload/video_upload/audio_upload/... options.
//   - Every widget is queued under its input name; a missing value (an older workflow)
//     takes the schema default. An array value is wrapped as {"__value__": [...]}.
//   - A linked input replaces the widget value with [origin id, slot]. Links are
//     followed through Reroute nodes and bypassed (mode 4) nodes; a bypassed node passes
//     its first input whose type fits (same slot first). PrimitiveNode copies its value
//     into the widgets it feeds and is not queued itself.
//   - Muted (mode 2) and bypassed nodes, Note, MarkdownNote, Reroute and PrimitiveNode are
//     not queued; an input linked to a node that is not queued is dropped.
//   - Subgraph instances (definitions.subgraphs) and legacy group nodes
//     (extra.groupNodes) are flattened; inner nodes get ids "outer:inner".
//   - _meta.title is the node's title (its display name when the workflow has none).

// Node types that exist only in the front end.
var virtualTypes = map[string]bool{
	"Reroute": true, "PrimitiveNode": true, "Note": true, "MarkdownNote": true,
}

// uploadOptions name the input options that make the front end add an upload button
// widget after the input's own widget.
var uploadOptions = []string{"image_upload", "video_upload", "audio_upload", "animated_image_upload", "file_upload", "model_upload", "3d_upload"}

// MissingTypesError reports node types that the schemas do not know.
type MissingTypesError struct {
	Types []string            // sorted, each once
	Nodes map[string][]string // type → ids of the nodes using it
}

func (e *MissingTypesError) Error() string {
	return "graph: workflow uses node types that are not available: " + strings.Join(e.Types, ", ")
}

// ConvertError reports a workflow that cannot be converted (a broken link, a link
// cycle through reroutes or bypassed nodes, a bad widget value).
type ConvertError struct {
	NodeID string
	Msg    string
}

func (e *ConvertError) Error() string {
	if e.NodeID == "" {
		return "graph: convert: " + e.Msg
	}
	return fmt.Sprintf("graph: convert: node %q: %s", e.NodeID, e.Msg)
}

// ConvertOptions adjust Convert.
type ConvertOptions struct {
	// ChooseDynamic picks one of n alternatives for a {a|b|c} group in a text widget
	// with dynamicPrompts; nil picks at random, as the front end does.
	ChooseDynamic func(n int) int
}

// Convert turns a UI workflow into the API prompt ComfyUI's front end would queue for
// it. Node types unknown to s give a *MissingTypesError listing every one of them.
func Convert(w *Workflow, s Schemas) (Prompt, error) {
	return ConvertWith(w, s, ConvertOptions{})
}

// ConvertWith is Convert with options.
func ConvertWith(w *Workflow, s Schemas, opts ConvertOptions) (Prompt, error) {
	if w == nil {
		return nil, &ConvertError{Msg: "nil workflow"}
	}
	c := &converter{schemas: s, opts: opts, byID: map[string]*execNode{}, missing: map[string][]string{}, active: map[string]bool{}}
	if c.opts.ChooseDynamic == nil {
		c.opts.ChooseDynamic = func(n int) int { return rand.IntN(n) }
	}
	if err := c.indexDefinitions(w); err != nil {
		return nil, err
	}
	root, err := newScope(w.Nodes, w.Links, "root graph")
	if err != nil {
		return nil, err
	}
	if err := c.expand(root, nil, nil); err != nil {
		return nil, err
	}
	if len(c.missing) > 0 {
		e := &MissingTypesError{Nodes: c.missing}
		for t := range c.missing {
			e.Types = append(e.Types, t)
		}
		sort.Strings(e.Types)
		return nil, e
	}
	if err := c.applyPrimitives(); err != nil {
		return nil, err
	}
	out := Prompt{}
	for _, en := range c.order {
		if en.virtual() || en.mode() == ModeNever || en.mode() == ModeBypass || en.container {
			continue
		}
		n, err := c.promptNode(en)
		if err != nil {
			return nil, err
		}
		out[en.id] = n
	}
	// Inputs linked to nodes that are not queued are dropped (graphToPrompt's last pass).
	for _, n := range out {
		for name, v := range n.Inputs {
			if l, ok := AsLink(v); ok {
				if _, there := out[l.NodeID]; !there {
					delete(n.Inputs, name)
				}
			}
		}
	}
	return out, nil
}

// scope is one graph: the root, a subgraph definition, or a legacy group's inner graph.
type scope struct {
	nodes map[string]*WorkflowNode
	links map[int64]*WorkflowLink
	list  []*WorkflowNode
}

func newScope(nodes []*WorkflowNode, links []*WorkflowLink, what string) (*scope, error) {
	s := &scope{nodes: map[string]*WorkflowNode{}, links: map[int64]*WorkflowLink{}}
	for i, n := range nodes {
		if n == nil {
			return nil, &ConvertError{Msg: fmt.Sprintf("%s: nodes[%d] is null", what, i)}
		}
		id := n.ID.String()
		if _, dup := s.nodes[id]; dup {
			return nil, &ConvertError{NodeID: id, Msg: what + ": duplicate node id"}
		}
		s.nodes[id] = n
		s.list = append(s.list, n)
	}
	for _, l := range links {
		if l != nil {
			s.links[l.ID] = l
		}
	}
	return s, nil
}

// execNode is a node after flattening (the front end's ExecutableNodeDTO).
type execNode struct {
	id     string // execution id: instance path and node id joined by ":"
	node   *WorkflowNode
	scope  *scope
	path   []string  // execution ids of containing instances are strings.Join(path[:k], ":")
	parent *execNode // the subgraph instance or group node this node is inside
	schema *Schema
	// For subgraph instances and group nodes (container is set): the inner graph and
	// the mapping of the container's slots to inner nodes.
	container bool
	sub       *Subgraph
	inner     *scope
	group     *groupDef
	// widgets holds the node's widget values by widget name, after PrimitiveNode values
	// were applied.
	widgets map[string]any
	// modeOverride is the mode of a containing muted/bypassed group node, if any.
	modeOverride int
}

func (en *execNode) mode() int {
	if en.modeOverride != 0 {
		return en.modeOverride
	}
	return en.node.Mode
}

func (en *execNode) virtual() bool { return virtualTypes[en.node.Type] }

type converter struct {
	schemas   Schemas
	opts      ConvertOptions
	subgraphs map[string]*Subgraph
	groups    map[string]*groupDef
	byID      map[string]*execNode
	order     []*execNode
	missing   map[string][]string
	depth     int
	active    map[string]bool // subgraphs being expanded (the current path)
}

func (c *converter) indexDefinitions(w *Workflow) error {
	c.subgraphs = map[string]*Subgraph{}
	if w.Definitions != nil {
		for _, sg := range w.Definitions.Subgraphs {
			if sg != nil && sg.ID != "" {
				c.subgraphs[sg.ID] = sg
			}
		}
	}
	groups, err := parseGroupNodes(w.Extra)
	if err != nil {
		return err
	}
	c.groups = groups
	return nil
}

// maxNesting bounds subgraph nesting, so that a subgraph that contains itself is an
// error rather than endless recursion.
const maxNesting = 32

// maxExecNodes bounds the flattened graph, so that subgraphs that each hold several
// instances of the next cannot multiply without end.
const maxExecNodes = 1 << 16

// expand creates the execNodes of a scope, recursing into subgraph instances and
// group nodes.
func (c *converter) expand(sc *scope, path []string, parent *execNode) error {
	c.depth++
	defer func() { c.depth-- }()
	if c.depth > maxNesting {
		return &ConvertError{Msg: fmt.Sprintf("subgraphs nested deeper than %d (a subgraph that contains itself?)", maxNesting)}
	}
	for _, n := range sc.list {
		id := strings.Join(append(append([]string{}, path...), n.ID.String()), ":")
		if _, dup := c.byID[id]; dup {
			return &ConvertError{NodeID: id, Msg: "duplicate execution id"}
		}
		en := &execNode{id: id, node: n, scope: sc, path: path, parent: parent}
		if parent != nil && parent.group != nil {
			en.modeOverride = parent.modeOverride
			if m := parent.mode(); m == ModeNever || m == ModeBypass {
				en.modeOverride = m
			}
		}
		c.byID[id] = en
		c.order = append(c.order, en)
		if len(c.order) > maxExecNodes {
			return &ConvertError{Msg: fmt.Sprintf("the flattened graph has more than %d nodes", maxExecNodes)}
		}
		switch {
		case virtualTypes[n.Type]:
		case c.subgraphs[n.Type] != nil:
			sg := c.subgraphs[n.Type]
			if c.active[sg.ID] {
				return &ConvertError{NodeID: id, Msg: fmt.Sprintf("subgraph %q contains itself", sg.Name)}
			}
			en.container, en.sub = true, sg
			inner, err := newScope(sg.Nodes, sg.Links, fmt.Sprintf("subgraph %q", sg.Name))
			if err != nil {
				return err
			}
			en.inner = inner
			c.active[sg.ID] = true
			err = c.expand(inner, append(append([]string{}, path...), n.ID.String()), en)
			delete(c.active, sg.ID)
			if err != nil {
				return err
			}
		case c.groupFor(n.Type) != nil:
			g := c.groupFor(n.Type)
			en.container, en.group, en.inner = true, g, g.scope
			if err := c.expand(g.scope, append(append([]string{}, path...), n.ID.String()), en); err != nil {
				return err
			}
			if err := c.bindGroup(en); err != nil {
				return err
			}
		case n.Type == "":
			return &ConvertError{NodeID: id, Msg: "node has no type"}
		default:
			s, ok := c.schemas.Schema(n.Type)
			if !ok {
				c.missing[n.Type] = append(c.missing[n.Type], id)
				continue
			}
			en.schema = s
		}
	}
	// Widgets need the schemas of every node, so they are read in a second pass.
	for _, n := range sc.list {
		en := c.byID[strings.Join(append(append([]string{}, path...), n.ID.String()), ":")]
		if en.schema == nil {
			continue
		}
		if en.parent != nil && en.parent.group != nil {
			continue // bindGroup filled them from the group node's widgets
		}
		vals, err := c.readWidgets(en, en.node)
		if err != nil {
			return err
		}
		en.widgets = vals
	}
	return nil
}

// widgetSlot is one entry of a node's widget list: a schema input, or a front-end-only
// widget that only takes a place in widgets_values.
type widgetSlot struct {
	input *Input // nil for front-end-only widgets
	name  string
}

// widgetSlots lists the widgets the front end creates for a node of schema s.
func widgetSlots(s *Schema) []widgetSlot {
	var out []widgetSlot
	for _, sec := range []Section{Required, Optional} {
		for i := range s.Inputs {
			in := &s.Inputs[i]
			// A socket-typed input its node validates itself holds a value written by a
			// custom front-end widget (WebcamCapture's WEBCAM), so it takes a widget slot.
			if in.Section != sec || !in.IsWidget() && !in.CustomValidation || in.ForceInput {
				continue
			}
			opts := in.Options()
			out = append(out, widgetSlot{input: in, name: in.Name})
			switch in.Type {
			case TypeInt:
				ctl, set := opts["control_after_generate"]
				if set && truthy(ctl) || !set && (in.Name == "seed" || in.Name == "noise_seed") {
					out = append(out, widgetSlot{name: "control_after_generate"})
				}
			case TypeCombo:
				if in.ControlAfterGenerate {
					out = append(out, widgetSlot{name: "control_after_generate"}, widgetSlot{name: "control_filter_list"})
				}
			}
			for _, u := range uploadOptions {
				if truthy(opts[u]) {
					out = append(out, widgetSlot{name: "upload"})
					break
				}
			}
		}
	}
	return out
}

// truthy is JavaScript's truthiness for a JSON value, as the front end tests options.
func truthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case string:
		return x != ""
	case json.Number:
		f, err := x.Float64()
		return err != nil || f != 0
	case float64:
		return x != 0
	case int:
		return x != 0
	case int64:
		return x != 0
	}
	return true
}

// readWidgets maps a node's widgets_values to its schema's widget inputs.
func (c *converter) readWidgets(en *execNode, n *WorkflowNode) (map[string]any, error) {
	list, named, err := n.Widgets()
	if err != nil {
		return nil, &ConvertError{NodeID: en.id, Msg: err.Error()}
	}
	// Newer front ends also save "widgets_values_named" (widget name → value) beside the
	// list; where a name is there, it is the unambiguous source.
	var byName map[string]any
	if raw, ok := n.rest["widgets_values_named"]; ok && jsonKind(raw) == "an object" {
		if decodeNumbers(raw, &byName) != nil {
			byName = nil
		}
	}
	vals := map[string]any{}
	for i, ws := range widgetSlots(en.schema) {
		if ws.input == nil {
			continue
		}
		v, ok := byName[ws.name]
		switch {
		case ok:
		case named != nil:
			v, ok = named[ws.name]
		case i < len(list):
			v, ok = list[i], true
		}
		if !ok {
			v, ok = widgetDefault(ws.input)
			if !ok {
				continue
			}
		}
		vals[ws.name] = v
	}
	return vals, nil
}

// widgetDefault is the value a front-end widget starts with: the schema default, else
// the widget constructor's fallback (the first combo choice, min or 0, "", false).
func widgetDefault(in *Input) (any, bool) {
	if in.Default != nil {
		return in.Default, true
	}
	switch in.Type {
	case TypeCombo:
		if in.Choices != nil {
			if ch := in.Choices(); len(ch) > 0 {
				return ch[0], true
			}
		}
		return nil, false
	case TypeInt, TypeFloat:
		if in.Min.IsSet() {
			return in.Min.json(), true
		}
		return json.Number("0"), true
	case TypeString:
		return "", true
	case TypeBoolean:
		return false, true
	}
	return nil, false
}

// applyPrimitives copies each PrimitiveNode's value into the widgets it feeds
// (PrimitiveNode.applyToGraph in the front end's widgetInputs.ts).
func (c *converter) applyPrimitives() error {
	for _, en := range c.order {
		if en.node.Type != "PrimitiveNode" || len(en.node.Outputs) == 0 || en.node.Outputs[0] == nil {
			continue
		}
		list, named, err := en.node.Widgets()
		if err != nil {
			return &ConvertError{NodeID: en.id, Msg: err.Error()}
		}
		var value any
		switch {
		case len(list) > 0:
			value = list[0]
		case named != nil:
			for _, v := range named {
				value = v
				break
			}
		default:
			continue
		}
		prefix := strings.Join(en.path, ":")
		for _, lid := range en.node.Outputs[0].Links {
			l := en.scope.links[lid]
			if l == nil {
				continue
			}
			tid := l.TargetID.String()
			if prefix != "" {
				tid = prefix + ":" + tid
			}
			target := c.byID[tid]
			if target == nil || target.schema == nil || l.TargetSlot < 0 || l.TargetSlot >= len(target.node.Inputs) {
				continue
			}
			in := target.node.Inputs[l.TargetSlot]
			if in == nil {
				continue
			}
			name := in.Name
			if in.Widget != nil && in.Widget.Name != "" {
				name = in.Widget.Name
			}
			if _, isWidget := target.widgets[name]; isWidget {
				target.widgets[name] = value
			}
		}
	}
	return nil
}

// promptNode builds the API node for a queued execNode.
func (c *converter) promptNode(en *execNode) (*Node, error) {
	n := &Node{ClassType: en.node.Type, Inputs: map[string]any{}}
	for _, ws := range widgetSlots(en.schema) {
		if ws.input == nil {
			continue
		}
		v, ok := en.widgets[ws.name]
		if !ok {
			continue
		}
		if s, isStr := v.(string); isStr && ws.input.DynamicPrompts {
			r, err := resolveDynamicPrompt(s, c.opts.ChooseDynamic)
			if err != nil {
				return nil, &ConvertError{NodeID: en.id, Msg: fmt.Sprintf("input %q: %v", ws.name, err)}
			}
			v = r
		}
		n.Inputs[ws.name] = wrapArray(v)
	}
	for i, in := range en.node.Inputs {
		if in == nil {
			continue
		}
		r, err := c.resolveInput(en, i, nil, map[string]bool{})
		if err != nil {
			return nil, err
		}
		if r == nil {
			continue
		}
		if r.hasValue {
			n.Inputs[in.Name] = wrapArray(r.value)
			continue
		}
		n.Inputs[in.Name] = NewLink(r.originID, r.originSlot)
	}
	title := en.node.Title
	if title == "" && en.schema != nil {
		title = en.schema.DisplayName
	}
	if title == "" {
		title = en.node.Type
	}
	n.Meta = &Meta{Title: title}
	return n, nil
}

// wrapArray wraps a list widget value so that it is not read as a link.
func wrapArray(v any) any {
	if arr, ok := v.([]any); ok {
		return map[string]any{"__value__": arr}
	}
	return v
}

// resolveDynamicPrompt does what the front end's Comfy.DynamicPrompts extension does
// when it queues a text widget: strip /* */ and // comments, then, while the text holds
// a "{" and a "}" (the first escaped one of each aside), replace the span between the
// first of each by one of its "|"-separated alternatives. JavaScript's substring
// semantics (clamped, swapped bounds) are kept, so odd input gives the same text; input
// on which the front end would loop forever is an error here.
func resolveDynamicPrompt(s string, choose func(int) int) (string, error) {
	s = stripComments(s)
	for iter := 0; ; iter++ {
		if !strings.Contains(strings.Replace(s, `\{`, "", 1), "{") || !strings.Contains(strings.Replace(s, `\}`, "", 1), "}") {
			return s, nil
		}
		if iter >= 4096 || len(s) > 1<<20 {
			return "", errors.New("dynamic prompt does not terminate (unbalanced braces)")
		}
		start := strings.Index(strings.Replace(s, `\{`, "00", 1), "{")
		end := strings.Index(strings.Replace(s, `\}`, "00", 1), "}")
		opts := strings.Split(jsSubstring(s, start+1, end), "|")
		k := choose(len(opts))
		if k < 0 || k >= len(opts) {
			k = 0
		}
		s = jsSubstring(s, 0, start) + opts[k] + jsSubstring(s, end+1, len(s))
	}
}

// jsSubstring is JavaScript's String.prototype.substring on byte offsets: bounds are
// clamped to the string and swapped when reversed. (The offsets used here point at
// ASCII braces, so byte and UTF-16 offsets select the same text.)
func jsSubstring(s string, a, b int) string {
	clamp := func(x int) int { return max(0, min(x, len(s))) }
	a, b = clamp(a), clamp(b)
	if a > b {
		a, b = b, a
	}
	return s[a:b]
}

// stripComments removes /* ... */ blocks and // to the end of the line, as the
// regular expression /\/\*[\s\S]*?\*\/|\/\/.*/g does in JavaScript (where "." stops at
// \n, \r, U+2028 and U+2029).
func stripComments(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		if strings.HasPrefix(s[i:], "/*") {
			if end := strings.Index(s[i+2:], "*/"); end >= 0 {
				i += 2 + end + 2
				continue
			}
		}
		if strings.HasPrefix(s[i:], "//") {
			j := i + 2
			for j < len(s) {
				if s[j] == '\n' || s[j] == '\r' || strings.HasPrefix(s[j:], "\u2028") || strings.HasPrefix(s[j:], "\u2029") {
					break
				}
				j++
			}
			i = j
			continue
		}
		b.WriteByte(s[i])
		i++
	}
	return b.String()
}

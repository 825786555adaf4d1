package graph

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Link resolution, re-derived from litegraph's ExecutableNodeDTO (resolveInput,
// resolveOutput, getBypassSlotIndex, resolveSubgraphOutput) in ComfyUI_frontend.

// resolved is where an input's link ends: a queued node's output, or (for a subgraph
// input promoted to a widget on the instance) a literal value.
type resolved struct {
	originID   string
	originSlot int
	hasValue   bool
	value      any
}

// execID returns the execution id of node id in en's scope.
func execID(path []string, id string) string {
	if len(path) == 0 {
		return id
	}
	return strings.Join(path, ":") + ":" + id
}

// resolveInput follows the link into input slot of en to the output it comes from.
// typ, when set, is the type of the input that started the walk (for bypass matching).
func (c *converter) resolveInput(en *execNode, slot int, typ *string, visited map[string]bool) (*resolved, error) {
	key := en.id + "[I]" + strconv.Itoa(slot)
	if visited[key] {
		return nil, &ConvertError{NodeID: en.id, Msg: fmt.Sprintf("circular reference while resolving input %d (a loop of reroutes or bypassed nodes)", slot)}
	}
	visited[key] = true
	if slot < 0 || slot >= len(en.node.Inputs) || en.node.Inputs[slot] == nil {
		return nil, &ConvertError{NodeID: en.id, Msg: fmt.Sprintf("no input slot %d", slot)}
	}
	input := en.node.Inputs[slot]
	if input.Link == nil {
		return nil, nil
	}
	link := en.scope.links[*input.Link]
	if link == nil {
		return nil, &ConvertError{NodeID: en.id, Msg: fmt.Sprintf("input %q: link %d does not exist", input.Name, *input.Link)}
	}
	if inst := en.parent; inst != nil && isIONode(link.OriginID, SubgraphInputNodeID) {
		return c.resolveFromInstance(en, inst, link, input, visited)
	}
	origin := c.byID[execID(en.path, link.OriginID.String())]
	if origin == nil {
		return nil, &ConvertError{NodeID: en.id, Msg: fmt.Sprintf("input %q: link %d comes from node %s, which does not exist", input.Name, link.ID, link.OriginID)}
	}
	if typ == nil {
		t := input.Type.Name
		typ = &t
	}
	return c.resolveOutput(origin, link.OriginSlot, *typ, visited)
}

func isIONode(id ID, want int64) bool {
	n, ok := id.Int()
	return ok && n == want
}

// resolveFromInstance continues a link that enters a subgraph (or group node) from its
// input node: through the instance's matching input, or to the instance's widget.
func (c *converter) resolveFromInstance(en, inst *execNode, link *WorkflowLink, input *WorkflowInput, visited map[string]bool) (*resolved, error) {
	k := link.OriginSlot
	if k < 0 || k >= len(inst.node.Inputs) || inst.node.Inputs[k] == nil {
		return nil, &ConvertError{NodeID: en.id, Msg: fmt.Sprintf("input %q: the containing node %s has no input %d", input.Name, inst.id, k)}
	}
	instIn := inst.node.Inputs[k]
	if instIn.Link == nil {
		if inst.sub != nil && instIn.Widget != nil {
			if v, ok := c.instanceWidget(inst, instIn); ok {
				return &resolved{hasValue: true, value: v}, nil
			}
		}
		return nil, nil
	}
	outer := inst.scope.links[*instIn.Link]
	if outer == nil {
		return nil, &ConvertError{NodeID: inst.id, Msg: fmt.Sprintf("input %q: link %d does not exist", instIn.Name, *instIn.Link)}
	}
	return c.resolveInput(inst, outer.TargetSlot, nil, visited)
}

// instanceWidget returns the value of the widget a subgraph instance shows for one of
// its inputs: widgets_values follows the order of the inputs that carry a widget.
func (c *converter) instanceWidget(inst *execNode, in *WorkflowInput) (any, bool) {
	list, named, err := inst.node.Widgets()
	if err != nil {
		return nil, false
	}
	if named != nil {
		v, ok := named[in.Widget.Name]
		return v, ok
	}
	k := 0
	for _, x := range inst.node.Inputs {
		if x == nil || x.Widget == nil {
			continue
		}
		if x == in {
			if k < len(list) {
				return list[k], true
			}
			return nil, false
		}
		k++
	}
	return nil, false
}

// resolveOutput finds the queued node behind output slot of en: en itself, or, for a
// bypassed, virtual or container node, whatever it passes through.
func (c *converter) resolveOutput(en *execNode, slot int, typ string, visited map[string]bool) (*resolved, error) {
	key := en.id + "[O]" + strconv.Itoa(slot)
	if visited[key] {
		return nil, &ConvertError{NodeID: en.id, Msg: fmt.Sprintf("circular reference while resolving output %d (a loop of reroutes or bypassed nodes)", slot)}
	}
	visited[key] = true
	if en.mode() == ModeBypass {
		idx, err := bypassSlotIndex(en, slot, typ)
		if err != nil || idx < 0 {
			return nil, err
		}
		return c.resolveInput(en, idx, nil, visited)
	}
	if en.container {
		return c.resolveContainerOutput(en, slot, typ, visited)
	}
	if en.virtual() {
		if slot >= 0 && slot < len(en.node.Inputs) && en.node.Inputs[slot] != nil {
			return c.resolveInput(en, slot, &typ, visited)
		}
		return nil, nil
	}
	return &resolved{originID: en.id, originSlot: slot}, nil
}

// resolveContainerOutput follows output slot of a subgraph instance or group node to
// the inner node that feeds the inner output node.
func (c *converter) resolveContainerOutput(en *execNode, slot int, typ string, visited map[string]bool) (*resolved, error) {
	if slot < 0 || slot >= len(en.node.Outputs) {
		return nil, &ConvertError{NodeID: en.id, Msg: fmt.Sprintf("no output slot %d", slot)}
	}
	var link *WorkflowLink
	for _, l := range sortedLinks(en.inner) {
		if isIONode(l.TargetID, SubgraphOutputNodeID) && l.TargetSlot == slot {
			link = l
			break
		}
	}
	if link == nil {
		return nil, nil
	}
	innerPath := append(append([]string{}, en.path...), en.node.ID.String())
	inner := c.byID[execID(innerPath, link.OriginID.String())]
	if inner == nil {
		return nil, &ConvertError{NodeID: en.id, Msg: fmt.Sprintf("output %d: inner node %s does not exist", slot, link.OriginID)}
	}
	return c.resolveOutput(inner, link.OriginSlot, typ, visited)
}

func sortedLinks(sc *scope) []*WorkflowLink {
	out := make([]*WorkflowLink, 0, len(sc.links))
	for _, l := range sc.links {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// bypassSlotIndex picks the input a bypassed node passes to its output slot for a
// consumer of type typ: the input in the same slot if its type fits both, else the
// first input of exactly typ, else the first whose type fits both; -1 if none.
func bypassSlotIndex(en *execNode, slot int, typ string) (int, error) {
	inputs := en.node.Inputs
	if typ == "*" || typ == "" {
		if len(inputs) > slot {
			return slot, nil
		}
		if len(inputs) == 0 {
			return -1, nil
		}
		return 0, nil
	}
	if slot < 0 || slot >= len(en.node.Outputs) || en.node.Outputs[slot] == nil {
		return -1, &ConvertError{NodeID: en.id, Msg: fmt.Sprintf("bypassed node has no output slot %d", slot)}
	}
	outType := en.node.Outputs[slot].Type.Name
	if slot < len(inputs) && inputs[slot] != nil {
		t := inputs[slot].Type.Name
		if validConnection(t, outType) && validConnection(t, typ) {
			return slot, nil
		}
	}
	for i, in := range inputs {
		if in != nil && in.Type.Name == typ {
			return i, nil
		}
	}
	for i, in := range inputs {
		if in != nil && validConnection(in.Type.Name, outType) && validConnection(in.Type.Name, typ) {
			return i, nil
		}
	}
	return -1, nil
}

// validConnection is litegraph's LiteGraph.isValidConnection for type names: "" and
// "*" match anything; otherwise a case-insensitive match of the names or of any of
// their comma-separated parts.
func validConnection(a, b string) bool {
	if a == "" || a == "*" || b == "" || b == "*" || a == b {
		return true
	}
	a, b = strings.ToLower(a), strings.ToLower(b)
	if !strings.Contains(a, ",") && !strings.Contains(b, ",") {
		return a == b
	}
	for _, x := range strings.Split(a, ",") {
		for _, y := range strings.Split(b, ",") {
			if validConnection(x, y) {
				return true
			}
		}
	}
	return false
}

// Legacy group nodes: extra.groupNodes[name] = {nodes (with "index"), links
// [origin_index|null, origin_slot, target_index, target_slot, external_id, type],
// external [[index, slot, type]], config}. A node of type "workflow/name" (older) or
// "workflow>name" stands for the group. Its inputs are the inner sockets not linked
// from inside, its outputs the inner outputs not linked inside or listed in external,
// and its widgets_values the inner nodes' widgets in order, all in inner node order
// (groupNode.ts GroupNodeConfig). We model the group as a subgraph: synthetic links
// from the input node (-10) and to the output node (-20).

type groupDef struct {
	name  string
	scope *scope
}

type groupInnerNode struct {
	Index int `json:"index"`
}

type groupRaw struct {
	Nodes    []json.RawMessage `json:"nodes"`
	Links    [][]any           `json:"links"`
	External [][]any           `json:"external"`
	Config   json.RawMessage   `json:"config"`
}

// groupConfig is the part of a group definition's "config" that conversion reads:
// slots hidden with "visible": false. It is read leniently: a config of another shape
// hides nothing.
type groupConfig map[string]struct {
	Input  map[string]struct{ Visible *bool } `json:"input"`
	Output map[string]struct{ Visible *bool } `json:"output"`
}

func (c *converter) groupFor(typ string) *groupDef {
	for _, p := range []string{"workflow>", "workflow/"} {
		if name, ok := strings.CutPrefix(typ, p); ok {
			return c.groups[name]
		}
	}
	return nil
}

func parseGroupNodes(extra map[string]json.RawMessage) (map[string]*groupDef, error) {
	raw, ok := extra["groupNodes"]
	if !ok || jsonKind(raw) != "an object" {
		return nil, nil
	}
	var defs map[string]json.RawMessage
	if err := json.Unmarshal(raw, &defs); err != nil {
		return nil, &ConvertError{Msg: "extra.groupNodes: " + err.Error()}
	}
	out := map[string]*groupDef{}
	for name, d := range defs {
		g, err := parseGroupDef(name, d)
		if err != nil {
			return nil, &ConvertError{Msg: fmt.Sprintf("extra.groupNodes[%q]: %v", name, err)}
		}
		out[name] = g
	}
	return out, nil
}

func linkInt(v any) (int, bool) {
	n, ok := v.(json.Number)
	if !ok {
		f, isF := v.(float64)
		if !isF {
			return 0, false
		}
		return int(f), f == float64(int(f))
	}
	i, err := n.Int64()
	return int(i), err == nil
}

func parseGroupDef(name string, data []byte) (*groupDef, error) {
	var g groupRaw
	if err := decodeNumbers(data, &g); err != nil {
		return nil, err
	}
	var nodes []*WorkflowNode
	byIndex := map[int]*WorkflowNode{}
	for i, rn := range g.Nodes {
		var n WorkflowNode
		if err := json.Unmarshal(rn, &n); err != nil {
			return nil, fmt.Errorf("nodes[%d]: %v", i, err)
		}
		var idx groupInnerNode
		idx.Index = i
		_ = json.Unmarshal(rn, &idx)
		if _, dup := byIndex[idx.Index]; dup {
			return nil, fmt.Errorf("nodes[%d]: duplicate index %d", i, idx.Index)
		}
		n.ID = NumID(int64(idx.Index))
		// Inner slots get synthetic links below; copy them so the definition stays as read.
		ins := make([]*WorkflowInput, len(n.Inputs))
		for j, in := range n.Inputs {
			if in != nil {
				cp := *in
				cp.Link = nil
				ins[j] = &cp
			}
		}
		n.Inputs = ins
		byIndex[idx.Index] = &n
		nodes = append(nodes, &n)
	}
	sort.Slice(nodes, func(i, j int) bool {
		a, _ := nodes[i].ID.Int()
		b, _ := nodes[j].ID.Int()
		return a < b
	})
	var links []*WorkflowLink
	nextID := int64(1)
	addLink := func(o ID, os int, t ID, ts int) int64 {
		l := &WorkflowLink{ID: nextID, OriginID: o, OriginSlot: os, TargetID: t, TargetSlot: ts}
		nextID++
		links = append(links, l)
		return l.ID
	}
	internalIn := map[[2]int]bool{}
	internalOut := map[[2]int]bool{}
	for i, l := range g.Links {
		if len(l) < 4 {
			return nil, fmt.Errorf("links[%d]: %d elements, want at least 4", i, len(l))
		}
		ts, ok1 := linkInt(l[2])
		tslot, ok2 := linkInt(l[3])
		oslot, ok3 := linkInt(l[1])
		if !ok1 || !ok2 || !ok3 {
			return nil, fmt.Errorf("links[%d]: indices must be integers", i)
		}
		if l[0] == nil {
			continue // records an outside connection; the group node's own links carry it
		}
		os, ok := linkInt(l[0])
		if !ok {
			return nil, fmt.Errorf("links[%d]: origin index must be an integer or null", i)
		}
		tn := byIndex[ts]
		if tn == nil || byIndex[os] == nil {
			return nil, fmt.Errorf("links[%d]: no inner node %d or %d", i, os, ts)
		}
		if tslot < 0 || tslot >= len(tn.Inputs) || tn.Inputs[tslot] == nil {
			return nil, fmt.Errorf("links[%d]: inner node %d has no input %d", i, ts, tslot)
		}
		id := addLink(NumID(int64(os)), oslot, NumID(int64(ts)), tslot)
		tn.Inputs[tslot].Link = &id
		internalIn[[2]int{ts, tslot}] = true
		internalOut[[2]int{os, oslot}] = true
	}
	external := map[[2]int]bool{}
	for _, e := range g.External {
		if len(e) < 2 {
			continue
		}
		slot, ok := linkInt(e[1])
		if !ok {
			continue
		}
		idx, ok := linkInt(e[0])
		if !ok {
			if m, isMap := e[0].(map[string]any); isMap {
				idx, ok = linkInt(m["index"])
			}
		}
		if ok {
			external[[2]int{idx, slot}] = true
		}
	}
	var config groupConfig
	if json.Unmarshal(g.Config, &config) != nil {
		config = nil
	}
	hidden := func(idx int, section, key string) bool {
		cfg, ok := config[strconv.Itoa(idx)]
		if !ok {
			return false
		}
		m := cfg.Input
		if section == "output" {
			m = cfg.Output
		}
		v, ok := m[key]
		return ok && v.Visible != nil && !*v.Visible
	}
	in, out := 0, 0
	for _, n := range nodes {
		idx64, _ := n.ID.Int()
		idx := int(idx64)
		for j, slot := range n.Inputs {
			if slot == nil || internalIn[[2]int{idx, j}] || slot.Widget != nil || hidden(idx, "input", slot.Name) {
				continue
			}
			id := addLink(NumID(SubgraphInputNodeID), in, n.ID, j)
			slot.Link = &id
			in++
		}
		for o, slot := range n.Outputs {
			if slot == nil {
				continue
			}
			if internalOut[[2]int{idx, o}] && !external[[2]int{idx, o}] || hidden(idx, "output", strconv.Itoa(o)) {
				continue
			}
			addLink(n.ID, o, NumID(SubgraphOutputNodeID), out)
			out++
		}
	}
	sc, err := newScope(nodes, links, fmt.Sprintf("group node %q", name))
	if err != nil {
		return nil, err
	}
	return &groupDef{name: name, scope: sc}, nil
}

// bindGroup gives the inner nodes of a group node instance their widget values: the
// instance's widgets_values, consumed in inner node order by each node's widget list
// (widgets linked from inside the group are not part of it).
func (c *converter) bindGroup(en *execNode) error {
	list, named, err := en.node.Widgets()
	if err != nil {
		return &ConvertError{NodeID: en.id, Msg: err.Error()}
	}
	innerPath := append(append([]string{}, en.path...), en.node.ID.String())
	pos := 0
	for _, n := range en.inner.list {
		inner := c.byID[execID(innerPath, n.ID.String())]
		if inner == nil || inner.schema == nil {
			continue
		}
		inner.widgets = map[string]any{}
		for _, ws := range widgetSlots(inner.schema) {
			if ws.input != nil && linkedWidget(n, ws.name) {
				continue
			}
			var v any
			ok := false
			if named != nil && ws.input != nil {
				v, ok = named[ws.name]
			} else if pos < len(list) {
				v, ok = list[pos], true
			}
			pos++
			if ws.input == nil {
				continue
			}
			if !ok {
				if v, ok = widgetDefault(ws.input); !ok {
					continue
				}
			}
			inner.widgets[ws.name] = v
		}
	}
	return nil
}

// linkedWidget reports whether node n has the widget name converted to an input that a
// link feeds.
func linkedWidget(n *WorkflowNode, name string) bool {
	for _, in := range n.Inputs {
		if in != nil && in.Widget != nil && in.Widget.Name == name && in.Link != nil {
			return true
		}
	}
	return false
}

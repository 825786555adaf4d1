package executor

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// Hidden input types ComfyUI fills in itself (comfy_execution's get_input_data).
const (
	hiddenPrompt       = "PROMPT"
	hiddenDynPrompt    = "DYNPROMPT"
	hiddenExtraPNGInfo = "EXTRA_PNGINFO"
	hiddenUniqueID     = "UNIQUE_ID"
	hiddenAuthToken    = "AUTH_TOKEN_COMFY_ORG"
	hiddenAPIKey       = "API_KEY_COMFY_ORG"
)

// step is one node of a plan.
type step struct {
	id     string
	class  string
	node   nodes.Node
	schema *graph.Schema
	// literals are the node's literal inputs, coerced by the schema; links its linked
	// inputs. Inputs of the prompt that the schema does not list are ignored, as
	// ComfyUI's get_input_data does.
	literals map[string]any
	links    map[string]graph.Link
	sig      string
}

// plan is the part of a prompt that reaches the requested outputs.
type plan struct {
	steps   map[string]*step
	order   []string // topological: every node after the nodes it links from
	outputs []string
	// side holds the prompt's other nodes that resolve, with their signatures only:
	// they are never run, but their cache entries count as the prompt's.
	side map[string]*step
}

// nodeError is a failure tied to one node, reported as execution_error.
type nodeError struct {
	nodeID, class string
	err           error
	panicked      bool
	stack         []string
	inputs        map[string][]any
}

func (e *nodeError) Error() string {
	return fmt.Sprintf("executor: node %q (%s): %v", e.nodeID, e.class, e.err)
}

func (e *nodeError) Unwrap() error { return e.err }

// makePlan resolves the nodes that reach the job's outputs (all output nodes of the
// prompt when the job names none), checks links and classes, coerces literals and
// orders the nodes (graph.Order: deterministic Kahn order, cycles reported).
func (e *Engine) makePlan(job *Job) (*plan, *nodeError) {
	p := &plan{steps: map[string]*step{}}
	outs := job.Outputs
	if len(outs) == 0 {
		for _, id := range graph.SortedIDs(job.Prompt) {
			n := job.Prompt[id]
			if n == nil {
				continue
			}
			if s, ok := e.reg.Schema(n.ClassType); ok && s.OutputNode {
				outs = append(outs, id)
			}
		}
		if len(outs) == 0 {
			return nil, &nodeError{err: errors.New("prompt has no outputs")}
		}
	}
	p.outputs = outs
	// Depth-first walk from the outputs along links.
	var visit func(id string) *nodeError
	visit = func(id string) *nodeError {
		if _, done := p.steps[id]; done {
			return nil
		}
		n := job.Prompt[id]
		if n == nil {
			return &nodeError{nodeID: id, err: errors.New("node not found in prompt")}
		}
		st, nerr := e.makeStep(id, n)
		if nerr != nil {
			return nerr
		}
		p.steps[id] = st
		for _, name := range sortedKeys(st.links) {
			l := st.links[name]
			from, ok := job.Prompt[l.NodeID]
			if !ok || from == nil {
				return &nodeError{nodeID: id, class: st.class, err: fmt.Errorf("input %q: link %v to a missing node", name, l)}
			}
			if nerr := visit(l.NodeID); nerr != nil {
				return nerr
			}
			up := p.steps[l.NodeID]
			if l.Slot < 0 || l.Slot >= len(up.schema.Outputs) {
				return &nodeError{nodeID: id, class: st.class, err: fmt.Errorf("input %q: link %v: %s has %d outputs", name, l, up.class, len(up.schema.Outputs))}
			}
		}
		return nil
	}
	for _, id := range outs {
		if nerr := visit(id); nerr != nil {
			return nil, nerr
		}
	}
	order, err := graph.Order(job.Prompt, outs)
	if err != nil {
		var cyc *graph.CycleError
		if errors.As(err, &cyc) && len(cyc.Nodes) > 0 {
			if st := p.steps[cyc.Nodes[0]]; st != nil {
				return nil, &nodeError{nodeID: st.id, class: st.class, err: err}
			}
			return nil, &nodeError{nodeID: cyc.Nodes[0], err: err}
		}
		return nil, &nodeError{err: err}
	}
	// Order follows every link of the prompt; the plan holds only the inputs the
	// schemas list, so nodes reached only through unlisted inputs are left out.
	p.order = order[:0]
	for _, id := range order {
		if p.steps[id] != nil {
			p.order = append(p.order, id)
		}
	}
	return p, nil
}

// makeStep looks up the node's class and splits its inputs into coerced literals and links.
func (e *Engine) makeStep(id string, n *graph.Node) (*step, *nodeError) {
	node, err := e.reg.Lookup(n.ClassType)
	if err != nil {
		return nil, &nodeError{nodeID: id, class: n.ClassType, err: err}
	}
	st := &step{id: id, class: n.ClassType, node: node, schema: node.Schema(), literals: map[string]any{}, links: map[string]graph.Link{}}
	for _, in := range st.schema.Inputs {
		if in.Section == graph.Hidden {
			continue
		}
		raw, ok := n.Inputs[in.Name]
		if !ok {
			if in.Section == graph.Required {
				return nil, &nodeError{nodeID: id, class: st.class, err: fmt.Errorf("required input %q missing", in.Name)}
			}
			continue
		}
		if l, ok := graph.AsLink(raw); ok {
			st.links[in.Name] = l
			continue
		}
		// graph.Coerce converts as ComfyUI's validate_inputs does (INT → int64, or uint64
		// for seeds above 2^63-1, FLOAT → float64, STRING, BOOLEAN, COMBO);
		// it leaves other types as decoded, so numbers there become int64 or float64.
		v, err := graph.Coerce(&in, raw)
		if err != nil {
			return nil, &nodeError{nodeID: id, class: st.class, err: err}
		}
		st.literals[in.Name] = normalize(v)
	}
	return st, nil
}

// normalize converts json.Number (inside structured literals too) to int64 when
// integral, else float64.
func normalize(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		if f, err := x.Float64(); err == nil {
			return f
		}
		return x.String()
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalize(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = normalize(e)
		}
		return out
	}
	return v
}

// signatures computes the cache signature of every planned step, and of every other
// prompt node that resolves (its class is known and its links lead to resolvable
// nodes): ComfyUI's caches are keyed over the whole prompt, so execution_cached and the
// classic cache cover nodes that this run does not execute (a partial run of some
// outputs keeps the other outputs' cached results).
//
// ids are the prompt's node ids in graph.SortIDs order.
func (e *Engine) signatures(job *Job, ids []string, p *plan, envFor func(*step) *nodes.Env) {
	for _, id := range p.order {
		st := p.steps[id]
		st.sig = e.sign(st, func(up string) string { return p.steps[up].sig }, envFor)
	}
	p.side = map[string]*step{}
	failed := map[string]bool{}
	var resolve func(id string) *step
	resolve = func(id string) *step {
		if st := p.steps[id]; st != nil {
			return st
		}
		if st := p.side[id]; st != nil {
			return st
		}
		n := job.Prompt[id]
		if failed[id] || n == nil {
			return nil
		}
		failed[id] = true // until resolved; also stops a walk around a cycle
		st, nerr := e.makeStep(id, n)
		if nerr != nil {
			return nil
		}
		for _, l := range st.links {
			up := resolve(l.NodeID)
			if up == nil || l.Slot < 0 || l.Slot >= len(up.schema.Outputs) {
				return nil
			}
		}
		st.sig = e.sign(st, func(up string) string { return resolve(up).sig }, envFor)
		delete(failed, id)
		p.side[id] = st
		return st
	}
	for _, id := range ids {
		resolve(id)
	}
}

// sign hashes one step's input signature, as ComfyUI's CacheKeySetInputSignature
// (comfy_execution/caching.py): the class, the IsChanged fingerprint, the literal inputs
// in sorted key order, and for each link the upstream node's signature and slot; the
// node id too when the class takes UNIQUE_ID (its output may depend on it).
func (e *Engine) sign(st *step, upSig func(id string) string, envFor func(*step) *nodes.Env) string {
	h := sha256.New()
	field := func(s string) {
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	field(st.class)
	field(e.fingerprint(st, envFor))
	names := make([]string, 0, len(st.literals)+len(st.links))
	for k := range st.literals {
		names = append(names, k)
	}
	for k := range st.links {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		field(name)
		if l, ok := st.links[name]; ok {
			field("link")
			field(upSig(l.NodeID))
			field(strconv.Itoa(l.Slot))
			continue
		}
		b, err := json.Marshal(st.literals[name])
		if err != nil {
			b = []byte(fmt.Sprintf("%#v", st.literals[name]))
		}
		field("value")
		field(string(b))
	}
	if hasHidden(st.schema, hiddenUniqueID) {
		field("unique_id")
		field(st.id)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// fingerprint returns the node's IsChanged value. A failing IsChanged gives a fresh
// random value, so the node always runs (ComfyUI uses NaN, which equals nothing).
func (e *Engine) fingerprint(st *step, envFor func(*step) *nodes.Env) string {
	ic, ok := st.node.(nodes.IsChanger)
	if !ok {
		return ""
	}
	env := envFor(st)
	in := nodes.Inputs{}
	for k, v := range st.literals {
		in[k] = v
	}
	fp, err := safeIsChanged(ic, env, in)
	if err != nil {
		e.log.Warn("is_changed failed; node will run", "node", st.id, "class", st.class, "err", err)
		var nonce [16]byte
		rand.Read(nonce[:])
		return "error:" + hex.EncodeToString(nonce[:])
	}
	return "fp:" + fp
}

func safeIsChanged(ic nodes.IsChanger, env *nodes.Env, in nodes.Inputs) (fp string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return ic.IsChanged(env, in)
}

func hasHidden(s *graph.Schema, typ string) bool {
	for _, in := range s.Inputs {
		if in.Section == graph.Hidden && in.Type == typ {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// describe names a value's kind for error messages and execution_error's inputs.
func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return strconv.Quote(x)
	case json.Number:
		return x.String()
	case bool, int, int64, uint64, float64:
		return fmt.Sprint(x)
	case []any:
		return fmt.Sprintf("list of %d", len(x))
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

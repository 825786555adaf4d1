package graph

import (
	"fmt"
	"sort"
	"strings"
)

// MaxCycleIDs bounds the node ids a cycle report lists: a cycle through thousands of
// nodes is reported with its first MaxCycleIDs ids (in id order) and its size, so that
// the error costs the same whatever the prompt.
const MaxCycleIDs = 32

// CycleError reports nodes that depend on each other through links.
type CycleError struct {
	// Nodes are the first MaxCycleIDs nodes of one cycle, in id order.
	Nodes []string
	// Size is the number of nodes in the cycle (len(Nodes) unless it was capped).
	Size int
}

func (e *CycleError) Error() string {
	return "graph: dependency cycle between nodes " + CycleText(e.Nodes, e.Size)
}

// CappedCycle returns the ids a report lists for cycle (sorted ids): at most
// MaxCycleIDs of them.
func CappedCycle(cycle []string) []string {
	return cycle[:min(len(cycle), MaxCycleIDs)]
}

// CycleText lists the ids of a cycle of size nodes whose first ids are listed: "1, 2, 4",
// or "1, 10, 100 and 9997 more" when the list was capped.
func CycleText(listed []string, size int) string {
	s := strings.Join(listed, ", ")
	if size > len(listed) {
		s += fmt.Sprintf(" and %d more", size-len(listed))
	}
	return s
}

// upstream returns the ids of the nodes that node id links to and that exist in p,
// each once, in id order.
func upstream(p Prompt, id string) []string {
	n := p[id]
	if n == nil {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	for _, v := range n.Inputs {
		if l, ok := AsLink(v); ok && p[l.NodeID] != nil && !seen[l.NodeID] {
			seen[l.NodeID] = true
			out = append(out, l.NodeID)
		}
	}
	SortIDs(out)
	return out
}

// reach returns, for each node from which one of outputs can be reached (outputs
// included, following links upstream), its upstream nodes.
func reach(p Prompt, outputs []string) map[string][]string {
	ups := map[string][]string{}
	stack := append([]string(nil), outputs...)
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if _, seen := ups[id]; seen || p[id] == nil {
			continue
		}
		u := upstream(p, id)
		ups[id] = u
		stack = append(stack, u...)
	}
	return ups
}

// Order returns the nodes that outputs depend on (outputs included), in an order in
// which every node comes after the nodes it links to. Among nodes that are ready at the
// same time the smallest id (SortIDs order) comes first, so the order is deterministic.
// A cycle gives a *CycleError; an output id that is not in p is an error.
//
// Kahn's algorithm with an ordered ready set; the graphs are small (tens to a few
// thousand nodes), so a sorted slice is enough.
func Order(p Prompt, outputs []string) ([]string, error) {
	for _, o := range outputs {
		if p[o] == nil {
			return nil, fmt.Errorf("graph: order: output node %q is not in the prompt", o)
		}
	}
	nodes := reach(p, outputs)
	pending := map[string]int{}         // node → number of distinct upstream nodes not yet placed
	downstream := map[string][]string{} // node → nodes that link to it
	for id, ups := range nodes {
		pending[id] = len(ups)
		for _, u := range ups {
			downstream[u] = append(downstream[u], id)
		}
	}
	var ready []string
	for id, n := range pending {
		if n == 0 {
			ready = append(ready, id)
		}
	}
	SortIDs(ready)
	out := make([]string, 0, len(nodes))
	for len(ready) > 0 {
		id := ready[0]
		ready = ready[1:]
		out = append(out, id)
		for _, d := range downstream[id] {
			pending[d]--
			if pending[d] == 0 {
				i := sort.Search(len(ready), func(i int) bool { return !lessID(ready[i], d) })
				ready = append(ready, "")
				copy(ready[i+1:], ready[i:])
				ready[i] = d
			}
		}
	}
	if len(out) < len(nodes) {
		cycles := Cycles(p, outputs)
		if len(cycles) > 0 {
			return nil, &CycleError{Nodes: CappedCycle(cycles[0]), Size: len(cycles[0])}
		}
		return nil, fmt.Errorf("graph: order: %d nodes could not be ordered", len(nodes)-len(out))
	}
	return out, nil
}

// Cycles returns the dependency cycles among the nodes that outputs depend on: each
// strongly connected component of more than one node, or a node that links to itself,
// as a sorted list of ids. The list of cycles is sorted by first id.
func Cycles(p Prompt, outputs []string) [][]string {
	nodes := reach(p, outputs)
	ids := make([]string, 0, len(nodes))
	for id := range nodes {
		ids = append(ids, id)
	}
	SortIDs(ids)
	// Tarjan's strongly connected components, iterative so that a long chain cannot
	// exhaust the stack.
	index := map[string]int{}
	low := map[string]int{}
	onStack := map[string]bool{}
	var stack []string
	var out [][]string
	next := 0
	type frame struct {
		id  string
		ups []string
		i   int
	}
	for _, root := range ids {
		if _, seen := index[root]; seen {
			continue
		}
		work := []*frame{{id: root, ups: nodes[root]}}
		index[root], low[root] = next, next
		next++
		stack = append(stack, root)
		onStack[root] = true
		for len(work) > 0 {
			f := work[len(work)-1]
			if f.i < len(f.ups) {
				u := f.ups[f.i]
				f.i++
				if _, seen := index[u]; !seen {
					index[u], low[u] = next, next
					next++
					stack = append(stack, u)
					onStack[u] = true
					work = append(work, &frame{id: u, ups: nodes[u]})
				} else if onStack[u] {
					low[f.id] = min(low[f.id], index[u])
				}
				continue
			}
			work = work[:len(work)-1]
			if len(work) > 0 {
				parent := work[len(work)-1].id
				low[parent] = min(low[parent], low[f.id])
			}
			if low[f.id] != index[f.id] {
				continue
			}
			var comp []string
			for {
				top := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				onStack[top] = false
				comp = append(comp, top)
				if top == f.id {
					break
				}
			}
			if len(comp) > 1 || selfLinked(p, f.id) {
				SortIDs(comp)
				out = append(out, comp)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return lessID(out[i][0], out[j][0]) })
	return out
}

func selfLinked(p Prompt, id string) bool {
	for _, u := range upstream(p, id) {
		if u == id {
			return true
		}
	}
	return false
}

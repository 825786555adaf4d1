package nodes

import (
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/forgeflow/forgeflow/graph"
)

// Registry holds node classes by ComfyUI class name, and the value types its typed
// nodes take. It is built at start-up by cmd/ (or a test) and then only read; it is
// safe for concurrent use.
type Registry struct {
	mu    sync.RWMutex
	nodes map[string]Node
	types map[string]ValueType
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{nodes: map[string]Node{}, types: map[string]ValueType{}}
}

// Add registers typed node classes (see Typed), in order. It fails, naming the class,
// where a field does not fit its input (Typed says what fits) and where Register would.
func (r *Registry) Add(ts ...Typed) error {
	for _, t := range ts {
		n, err := r.define(t)
		if err != nil {
			return err
		}
		if err := r.Register(n); err != nil {
			return err
		}
	}
	return nil
}

// Register adds a node class. It fails on an empty or duplicate class name, on a
// schema with unnamed or duplicate inputs, and on options an input cannot serve or
// enforce (graph.Input.Check).
func (r *Registry) Register(n Node) error {
	s := n.Schema()
	if s == nil || s.Name == "" {
		return errors.New("nodes: register: empty class name")
	}
	seen := map[string]bool{}
	for _, in := range s.Inputs {
		if in.Name == "" {
			return fmt.Errorf("nodes: register %q: input with empty name", s.Name)
		}
		if seen[in.Name] {
			return fmt.Errorf("nodes: register %q: duplicate input %q", s.Name, in.Name)
		}
		if err := in.Check(); err != nil {
			return fmt.Errorf("nodes: register %q: %w", s.Name, err)
		}
		seen[in.Name] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.nodes[s.Name]; dup {
		return fmt.Errorf("nodes: register %q: already registered", s.Name)
	}
	r.nodes[s.Name] = n
	return nil
}

// Lookup returns the node class, or an error naming the unknown class.
func (r *Registry) Lookup(class string) (Node, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	n, ok := r.nodes[class]
	if !ok {
		return nil, fmt.Errorf("nodes: unknown node class %q", class)
	}
	return n, nil
}

// Schema implements graph.Schemas.
func (r *Registry) Schema(class string) (*graph.Schema, bool) {
	n, err := r.Lookup(class)
	if err != nil {
		return nil, false
	}
	return n.Schema(), true
}

// Names returns the registered class names, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.nodes))
	for k := range r.nodes {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// ObjectInfo returns every class's /object_info entry, keyed by class name.
func (r *Registry) ObjectInfo() map[string]any {
	out := map[string]any{}
	for _, name := range r.Names() {
		n, _ := r.Lookup(name)
		out[name] = n.Schema().ObjectInfo()
	}
	return out
}

var _ graph.Schemas = (*Registry)(nil)

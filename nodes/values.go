package nodes

import (
	"fmt"
	"reflect"
)

// ValueType is a socket type (IMAGE, LATENT, MODEL, ...) as typed nodes see it: the Go
// type its values have and the check each value passes before a node's Run receives
// it. A registry knows the value types its typed nodes take (Registry.AddTypes).
type ValueType struct {
	name   string
	goType reflect.Type
	check  func(any) error
}

// Value returns the value type name, whose values are Go values of type T. check, if
// not nil, runs on every value a typed node receives for an input of this type (a nil
// pointer included, so it can say why one is missing); its error is reported with the
// input's name.
func Value[T any](name string, check func(T) error) ValueType {
	vt := ValueType{name: name, goType: reflect.TypeFor[T]()}
	if check != nil {
		vt.check = func(v any) error { return check(v.(T)) }
	}
	return vt
}

// Name returns the socket type name.
func (vt ValueType) Name() string { return vt.name }

// AddTypes makes value types known to the typed nodes added after it. It fails on an
// empty or repeated name.
func (r *Registry) AddTypes(types ...ValueType) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, vt := range types {
		if vt.name == "" || vt.goType == nil {
			return fmt.Errorf("nodes: value type without a name or Go type")
		}
		if _, dup := r.types[vt.name]; dup {
			return fmt.Errorf("nodes: value type %s: already added", vt.name)
		}
		r.types[vt.name] = vt
	}
	return nil
}

package nn

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/forgeflow/forgeflow/gpu"
)

// Layer is one of the layer types: *Linear, *Conv, *Norm or *RMSNorm.
type Layer interface {
	Prefix() (prefix string, ok bool)
	isLayer()
}

func (*Linear) isLayer()  {}
func (*Conv) isLayer()    {}
func (*Norm) isLayer()    {}
func (*RMSNorm) isLayer() {}

var layerTypes = map[reflect.Type]bool{
	reflect.TypeOf(Linear{}): true, reflect.TypeOf(Conv{}): true,
	reflect.TypeOf(Norm{}): true, reflect.TypeOf(RMSNorm{}): true,
}

var tensorType = reflect.TypeOf((*gpu.Tensor)(nil))

// tree walks the exported fields of a model: structs, pointers to structs, slices and
// arrays. Interfaces, maps, functions and unexported fields are not entered: a layer
// or tensor field reachable only through them is neither visited nor cloned.
type tree struct {
	holds map[reflect.Type]bool // whether a type leads to a layer or a tensor field
}

func newTree() *tree { return &tree{holds: map[reflect.Type]bool{}} }

// leads reports whether values of type t contain a layer or a tensor field (Fields).
func (w *tree) leads(t reflect.Type) bool {
	if v, ok := w.holds[t]; ok {
		return v
	}
	r := reaches(t, map[reflect.Type]bool{})
	w.holds[t] = r
	return r
}

// reaches is leads without the memo: a depth-first search of the types t is made of,
// each entered once (a type that contains itself leads only through its other parts).
func reaches(t reflect.Type, entered map[reflect.Type]bool) bool {
	if entered[t] {
		return false
	}
	entered[t] = true
	switch t.Kind() {
	case reflect.Struct:
		if layerTypes[t] {
			return true
		}
		for i := 0; i < t.NumField(); i++ {
			if f := t.Field(i); f.IsExported() && (isTensorField(f) || reaches(f.Type, entered)) {
				return true
			}
		}
	case reflect.Pointer, reflect.Slice, reflect.Array:
		return reaches(t.Elem(), entered)
	}
	return false
}

// Layers calls visit for every layer reachable from root (a pointer to a struct) through
// exported fields, in field order; a layer reached twice through shared pointers is
// visited once. It stops at the first error visit returns.
func Layers(root any, visit func(Layer) error) error {
	v := reflect.ValueOf(root)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return errors.New("nn: Layers needs a non-nil pointer to a struct")
	}
	w := newTree()
	seen := map[uintptr]bool{}
	var walk func(v reflect.Value) error
	walk = func(v reflect.Value) error {
		if !w.leads(v.Type()) {
			return nil
		}
		switch v.Kind() {
		case reflect.Pointer:
			if v.IsNil() || seen[v.Pointer()] {
				return nil
			}
			seen[v.Pointer()] = true
			return walk(v.Elem())
		case reflect.Slice, reflect.Array:
			for i := 0; i < v.Len(); i++ {
				if err := walk(v.Index(i)); err != nil {
					return err
				}
			}
		case reflect.Struct:
			if layerTypes[v.Type()] {
				return visit(v.Addr().Interface().(Layer))
			}
			for i := 0; i < v.NumField(); i++ {
				if v.Type().Field(i).IsExported() {
					if err := walk(v.Field(i)); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	return walk(v.Elem())
}

// Clone returns a copy of the model root points to in which every struct, pointer, slice
// and array that leads to a layer is copied, so that the copy's layers can be given
// other tensors or patches without touching root's. Tensors, and everything that holds
// no layer, are shared. Pointers shared within root stay shared within the copy.
func Clone[T any](root *T) (*T, error) {
	if root == nil {
		return nil, errors.New("nn: Clone of nil")
	}
	if reflect.TypeOf(root).Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("nn: Clone needs a pointer to a struct, not %T", root)
	}
	c := &cloner{tree: newTree(), ptrs: map[uintptr]reflect.Value{}}
	return c.value(reflect.ValueOf(root)).Interface().(*T), nil
}

type cloner struct {
	*tree
	ptrs map[uintptr]reflect.Value // original pointer → its copy
}

// value returns v itself when it holds no layer, else a copy.
func (c *cloner) value(v reflect.Value) reflect.Value {
	if !c.leads(v.Type()) {
		return v
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return v
		}
		if p, ok := c.ptrs[v.Pointer()]; ok {
			return p
		}
		p := reflect.New(v.Type().Elem())
		c.ptrs[v.Pointer()] = p
		p.Elem().Set(c.value(v.Elem()))
		return p
	case reflect.Slice:
		if v.IsNil() {
			return v
		}
		s := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		for i := 0; i < v.Len(); i++ {
			s.Index(i).Set(c.value(v.Index(i)))
		}
		return s
	case reflect.Array:
		a := reflect.New(v.Type()).Elem()
		for i := 0; i < v.Len(); i++ {
			a.Index(i).Set(c.value(v.Index(i)))
		}
		return a
	case reflect.Struct:
		s := reflect.New(v.Type()).Elem()
		s.Set(v) // every field, unexported ones too
		if layerTypes[v.Type()] {
			// A layer's own slices (Patches) are replaced, never appended to in place,
			// by the code that patches it; the copy above is enough.
			return s
		}
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() && c.leads(v.Field(i).Type()) {
				s.Field(i).Set(c.value(v.Field(i)))
			}
		}
		return s
	}
	return v
}

// isTensorField reports whether f is a tensor statedict.Bind fills (an sd-tagged
// *gpu.Tensor).
func isTensorField(f reflect.StructField) bool {
	_, tagged := f.Tag.Lookup("sd")
	return f.IsExported() && tagged && f.Type == tensorType
}

// Field is a tensor of a model tree held outside the layer types: an embedding table, a
// norm's scale, a position table. Key is its state-dict key as bound; Tensor is the
// field, so that a clone can be given another tensor.
type Field struct {
	Key    string
	Tensor **gpu.Tensor
}

// Fields calls visit for every sd-tagged *gpu.Tensor field reachable from root (a
// pointer to a struct) outside the layer types, in field order, skipping nil ones.
// A field's key is the prefix its nearest enclosing bound struct (one that embeds
// Module or is a layer) was bound at, followed by the sd tags below it as
// statedict.Bind composes them; a field with no bound struct above it, or one reached
// through an untagged field below that struct, has no key and is not visited.
func Fields(root any, visit func(Field) error) error {
	v := reflect.ValueOf(root)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return errors.New("nn: Fields needs a non-nil pointer to a struct")
	}
	w := newTree()
	seen := map[uintptr]bool{}
	// path is the key prefix of v; known is false once an untagged field was crossed
	// below the last bound struct.
	var walk func(v reflect.Value, path string, known bool) error
	walk = func(v reflect.Value, path string, known bool) error {
		if !w.leads(v.Type()) {
			return nil
		}
		switch v.Kind() {
		case reflect.Pointer:
			if v.IsNil() || seen[v.Pointer()] {
				return nil
			}
			seen[v.Pointer()] = true
			return walk(v.Elem(), path, known)
		case reflect.Slice, reflect.Array:
			for i := 0; i < v.Len(); i++ {
				if err := walk(v.Index(i), path+strconv.Itoa(i)+".", known); err != nil {
					return err
				}
			}
		case reflect.Struct:
			if layerTypes[v.Type()] {
				return nil
			}
			if k, ok := v.Addr().Interface().(interface{ Prefix() (string, bool) }); ok {
				if p, bound := k.Prefix(); bound {
					path, known = p, true
				}
			}
			t := v.Type()
			for i := 0; i < t.NumField(); i++ {
				f := t.Field(i)
				if !f.IsExported() {
					continue
				}
				tag, tagged := f.Tag.Lookup("sd")
				name, _, _ := strings.Cut(tag, ",")
				fv := v.Field(i)
				if isTensorField(f) {
					if known && !fv.IsNil() {
						if err := visit(Field{Key: path + name, Tensor: fv.Addr().Interface().(**gpu.Tensor)}); err != nil {
							return err
						}
					}
					continue
				}
				sub, subKnown := path+name+".", known && tagged
				if f.Anonymous && !tagged {
					sub, subKnown = path, known
				}
				if err := walk(fv, sub, subKnown); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk(v.Elem(), "", false)
}

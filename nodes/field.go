package nodes

import (
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/forgeflow/forgeflow/graph"
)

// field is one tagged field of a typed node: where it is, the input it receives and
// how a value is checked on its way in.
type field struct {
	index []int
	input *graph.Input
	link  bool        // not a widget type: a value from another node
	types []ValueType // a link's value types (several for "IMAGE,MASK"; none for "*")
	lo    *big.Rat    // INT/FLOAT bounds from the schema, nil where unbounded
	hi    *big.Rat
	elem  reflect.Type // the decoded type (the field's type without the pointer or slice)
	// unchecked leaves a combo value's membership in Choices to Run (tag option).
	unchecked bool
}

// fieldKinds are the Go kinds a widget type decodes into.
var fieldKinds = map[string][]reflect.Kind{
	graph.TypeInt:     {reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64},
	graph.TypeFloat:   {reflect.Float64, reflect.Float32},
	graph.TypeString:  {reflect.String},
	graph.TypeBoolean: {reflect.Bool},
	graph.TypeCombo:   {reflect.String},
}

// field checks that struct field sf can hold every value of input in and returns how to
// fill it.
func (r *Registry) field(isList bool, in *graph.Input, sf reflect.StructField) (field, error) {
	f := field{index: sf.Index, input: in, link: !in.IsWidget(), lo: in.Min.Rat(), hi: in.Max.Rat(), elem: sf.Type}
	switch {
	case isList:
		if f.elem.Kind() != reflect.Slice {
			return f, fmt.Errorf("the node takes lists (InputIsList): want a slice, have %v", sf.Type)
		}
		f.elem = f.elem.Elem()
	case !f.link && in.Section != graph.Required && f.elem.Kind() == reflect.Pointer:
		f.elem = f.elem.Elem() // an optional widget: nil when absent
	}
	if f.link {
		return f, r.linkField(&f)
	}
	if in.Type == graph.TypeCombo && in.Multiselect == graph.On {
		if f.elem != reflect.TypeFor[[]string]() {
			return f, fmt.Errorf("a multiselect COMBO goes into []string, not %v", f.elem)
		}
		return f, nil
	}
	if !slices.Contains(fieldKinds[in.Type], f.elem.Kind()) {
		return f, fmt.Errorf("%v cannot hold a %s", f.elem, in.Type)
	}
	if in.Type == graph.TypeInt {
		return f, intFits(f.elem, in)
	}
	return f, nil
}

// intFits checks that every integer the input admits fits Go type t: [Min, Max], where
// an unset bound admits every int64 on its side (Coerce's range, beyond which only a
// seed's max reaches; a value past the field's type then fails at run time).
func intFits(t reflect.Type, in *graph.Input) error {
	lo, hi := new(big.Rat), new(big.Rat)
	if t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uint64 {
		hi.SetInt(new(big.Int).SetUint64(uint64(math.MaxUint64) >> (64 - t.Bits())))
	} else {
		lo.SetInt64(int64(math.MinInt64) >> (64 - t.Bits()))
		hi.SetInt64(int64(math.MaxInt64) >> (64 - t.Bits()))
	}
	min, max := in.Min.Rat(), in.Max.Rat()
	if min == nil {
		min = new(big.Rat).SetInt64(math.MinInt64)
	}
	if max == nil {
		max = new(big.Rat).SetInt64(math.MaxInt64)
	}
	if min.Cmp(lo) < 0 {
		return fmt.Errorf("%v cannot hold the input's minimum %s; use a signed or wider type", t, bound(in.Min, "(unset)"))
	}
	if max.Cmp(hi) > 0 {
		return fmt.Errorf("%v cannot hold the input's maximum %s; use a wider type (uint64 for a seed)", t, bound(in.Max, "(unset)"))
	}
	return nil
}

// linkField finds the value types of a link input and checks the field can hold them.
func (r *Registry) linkField(f *field) error {
	typ := f.input.Type
	if typ == graph.TypeAny || strings.Contains(typ, ",") {
		if f.elem.Kind() != reflect.Interface {
			return fmt.Errorf("a %s input goes into an interface type (any), not %v", typ, f.elem)
		}
		if typ == graph.TypeAny {
			return nil
		}
		for _, name := range strings.Split(typ, ",") {
			name = strings.TrimSpace(name)
			vt, ok := r.types[name]
			if !ok {
				return fmt.Errorf("type %s is not a value type of this registry (Registry.AddTypes)", name)
			}
			if !vt.goType.Implements(f.elem) {
				return fmt.Errorf("%v cannot hold a %s (%v)", f.elem, name, vt.goType)
			}
			f.types = append(f.types, vt)
		}
		return nil
	}
	vt, ok := r.types[typ]
	if !ok {
		return fmt.Errorf("type %s is not a value type of this registry (Registry.AddTypes)", typ)
	}
	if !vt.goType.AssignableTo(f.elem) {
		return fmt.Errorf("%v cannot hold a %s, whose values are %v", f.elem, typ, vt.goType)
	}
	f.types = []ValueType{vt}
	return nil
}

// set stores raw, checked, into dst (the field, or one element of a list field).
func (f *field) set(dst reflect.Value, raw any) error {
	if f.link {
		return f.setLink(dst, raw)
	}
	if dst.Kind() == reflect.Pointer && f.elem.Kind() != reflect.Pointer {
		p := reflect.New(f.elem)
		if err := f.setWidget(p.Elem(), raw); err != nil {
			return err
		}
		dst.Set(p)
		return nil
	}
	return f.setWidget(dst, raw)
}

func (f *field) errorf(format string, args ...any) error {
	return fmt.Errorf("nodes: input %q: "+format, append([]any{f.input.Name}, args...)...)
}

func (f *field) setLink(dst reflect.Value, raw any) error {
	if raw == nil {
		return f.errorf("missing %s", f.input.Type)
	}
	rt := reflect.TypeOf(raw)
	i := slices.IndexFunc(f.types, func(vt ValueType) bool { return rt.AssignableTo(vt.goType) })
	if len(f.types) > 0 && i < 0 || !rt.AssignableTo(dst.Type()) {
		return f.errorf("want %s, got %T", f.input.Type, raw)
	}
	if i >= 0 && f.types[i].check != nil {
		if err := f.types[i].check(raw); err != nil {
			return f.errorf("%w", err)
		}
	}
	dst.Set(reflect.ValueOf(raw))
	return nil
}

func (f *field) setWidget(dst reflect.Value, raw any) error {
	switch f.input.Type {
	case graph.TypeInt:
		n, ok := integer(raw)
		if !ok {
			return f.errorf("want INT, got %T", raw)
		}
		if err := f.bounded(new(big.Rat).SetInt(n), n.String()); err != nil {
			return err
		}
		if dst.CanUint() {
			if n.Sign() < 0 || !n.IsUint64() || dst.OverflowUint(n.Uint64()) {
				return f.errorf("%s does not fit %v", n, dst.Type())
			}
			dst.SetUint(n.Uint64())
			return nil
		}
		if !n.IsInt64() || dst.OverflowInt(n.Int64()) {
			return f.errorf("%s does not fit %v", n, dst.Type())
		}
		dst.SetInt(n.Int64())
	case graph.TypeFloat:
		x, ok := float(raw)
		if !ok {
			return f.errorf("want FLOAT, got %T", raw)
		}
		r := new(big.Rat)
		if math.IsNaN(x) || math.IsInf(x, 0) {
			r = nil
		} else {
			r.SetFloat64(x)
		}
		if err := f.bounded(r, strconv.FormatFloat(x, 'g', -1, 64)); err != nil {
			return err
		}
		dst.SetFloat(x)
	case graph.TypeBoolean:
		b, ok := raw.(bool)
		if !ok {
			return f.errorf("want BOOLEAN, got %T", raw)
		}
		dst.SetBool(b)
	case graph.TypeString:
		s, ok := raw.(string)
		if !ok {
			return f.errorf("want STRING, got %T", raw)
		}
		dst.SetString(s)
	case graph.TypeCombo:
		return f.setCombo(dst, raw)
	}
	return nil
}

// bounded checks a number against the schema's Min and Max; r is nil for NaN and ±Inf,
// which no bound admits (and which only a bounded input refuses here: Coerce already
// refuses them for literals).
func (f *field) bounded(r *big.Rat, text string) error {
	if f.lo == nil && f.hi == nil {
		if r == nil {
			return f.errorf("%s is not a finite number", text)
		}
		return nil
	}
	if r == nil || f.lo != nil && r.Cmp(f.lo) < 0 || f.hi != nil && r.Cmp(f.hi) > 0 {
		return f.errorf("%s is outside [%s, %s]", text, bound(f.input.Min, "-inf"), bound(f.input.Max, "inf"))
	}
	return nil
}

func bound(n graph.Number, unset string) string {
	if !n.IsSet() {
		return unset
	}
	return n.String()
}

func (f *field) setCombo(dst reflect.Value, raw any) error {
	var values []string
	switch v := raw.(type) {
	case string:
		values = []string{v}
	case []string:
		values = v
	case []any:
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return f.errorf("want a list of strings, got %T in it", e)
			}
			values = append(values, s)
		}
	default:
		return f.errorf("want a COMBO value (a string), got %T", raw)
	}
	multi := dst.Kind() == reflect.Slice
	if !multi && len(values) != 1 {
		return f.errorf("want one COMBO value, got %d", len(values))
	}
	// As in ComfyUI's validation, a V3 combo's value is not checked against its list:
	// the node's own code says what an unlisted value does.
	if !f.unchecked && !f.input.CustomValidation && !f.input.ComboV3 && f.input.Choices != nil {
		choices := f.input.Choices()
		for _, s := range values {
			if !slices.Contains(choices, s) {
				return f.errorf("%q is not one of %s", s, listText(choices))
			}
		}
	}
	if multi {
		dst.Set(reflect.ValueOf(values))
	} else {
		dst.SetString(values[0])
	}
	return nil
}

// listText writes combo choices for an error, or their count when there are many.
func listText(choices []string) string {
	if len(choices) > 20 {
		return fmt.Sprintf("the input's %d choices", len(choices))
	}
	return fmt.Sprintf("%q", choices)
}

// integer reads an INT value: a Go integer, an integral float or a JSON number.
func integer(v any) (*big.Int, bool) {
	switch x := v.(type) {
	case int:
		return big.NewInt(int64(x)), true
	case int64:
		return big.NewInt(x), true
	case uint64:
		return new(big.Int).SetUint64(x), true
	case float64:
		if x != math.Trunc(x) || math.IsInf(x, 0) {
			return nil, false
		}
		n, _ := big.NewFloat(x).Int(nil)
		return n, true
	case json.Number:
		n, ok := new(big.Int).SetString(x.String(), 10)
		return n, ok
	}
	return nil, false
}

// float reads a FLOAT value: a Go float or integer, or a JSON number.
func float(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case float32:
		return float64(x), true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case uint64:
		return float64(x), true
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	}
	return 0, false
}

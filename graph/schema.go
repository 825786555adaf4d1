package graph

import (
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"strconv"
)

// Section says where an input is listed in a node's object_info entry.
type Section int

// The three input sections of ComfyUI's INPUT_TYPES.
const (
	Required Section = iota
	Optional
	Hidden
)

// String returns the section's object_info key.
func (s Section) String() string {
	switch s {
	case Optional:
		return "optional"
	case Hidden:
		return "hidden"
	default:
		return "required"
	}
}

// Widget and socket type names that have a meaning of their own in ComfyUI.
const (
	TypeInt     = "INT"
	TypeFloat   = "FLOAT"
	TypeString  = "STRING"
	TypeBoolean = "BOOLEAN"
	TypeCombo   = "COMBO"
	TypeAny     = "*"
)

// Schema describes a node class exactly as ComfyUI's /object_info does. It is static
// data: a node class returns the same schema for its whole life, except for combo
// choices, which Input.Choices computes each time (model and input file lists).
type Schema struct {
	Name         string
	DisplayName  string
	Category     string
	Description  string
	PythonModule string // "nodes" for ComfyUI's core nodes; kept for clients that group by it
	OutputNode   bool
	InputIsList  bool // ComfyUI's INPUT_IS_LIST: Run receives every input as a list
	Inputs       []Input
	Outputs      []Output
	// Extra holds the remaining object_info keys of this node verbatim (for instance
	// "deprecated", "experimental", "api_node", "output_tooltips"); a key here replaces
	// the computed one, so a node can reproduce ComfyUI's entry byte for byte.
	Extra map[string]any
}

// Input is one named input of a node: its socket or widget type and ComfyUI's option
// dict for it ({"default": 20, "min": 1, "max": 10000, ...}) as typed fields. An option
// field left at its zero value leaves its key out of the dict. The same fields are what
// /object_info serves, what the prompt validator checks literals against and what
// nodes' typed inputs are bounded by.
type Input struct {
	Name    string
	Section Section
	// Type is the socket or widget type: INT, FLOAT, STRING, BOOLEAN, COMBO, IMAGE, MODEL,
	// ..., "*" for any, or a comma-joined list ("IMAGE,MASK") as ComfyUI allows.
	Type string
	// Choices returns the values of a COMBO input; nil for other types.
	Choices func() []string
	// ChoicesHint, when set, says where a COMBO's values come from and how to get more
	// (the model folders searched, the download command): validation adds it to the
	// details of a "Value not in list" error.
	ChoicesHint func() string

	// Default is the widget's starting value: an integer (int, int64, uint64) for INT, a
	// float64 for FLOAT, a string for STRING and COMBO, a bool for BOOLEAN (json.Number
	// where it was read from an object_info document); nil for none.
	Default any
	// Min and Max bound an INT or FLOAT widget, inclusive; Step is its increment.
	Min, Max, Step Number
	// Round is a FLOAT widget's rounding precision ("round": 0.01); NoRound writes
	// "round": false (no rounding beyond the step).
	Round   Number
	NoRound bool
	// Display is how the front end draws a number ("color", "number", "slider").
	Display string
	Tooltip string
	// Multiline makes a STRING widget a text area; Multiselect lets a COMBO take a list
	// of its values. Both are written when set either way.
	Multiline, Multiselect Flag
	// DynamicPrompts expands {a|b} choices in a STRING widget before queueing.
	DynamicPrompts bool
	// ControlAfterGenerate adds the fixed/increment/decrement/randomize widget after an
	// INT or COMBO widget (seeds).
	ControlAfterGenerate bool
	// ImageUpload adds an upload button after a COMBO of input files.
	ImageUpload bool
	// ForceInput makes a widget type a socket only.
	ForceInput bool
	// Advanced hides the input under the node's advanced options.
	Advanced bool
	// Extra holds option keys that have no field above ("file_upload", "remote", ...), or
	// a value a field cannot hold (a false ControlAfterGenerate), verbatim.
	Extra map[string]any

	// ComboV3 serialises a COMBO as ["COMBO", {"options": [...], ...}] (ComfyUI's newer
	// node API) rather than the classic [[...], {...}] form.
	ComboV3 bool
	// Bare serialises the spec as [TYPE] with no option dict (ComfyUI's ("IMAGE",)).
	Bare bool
	// Plain serialises the spec as the type string alone ("PROMPT"), as ComfyUI writes
	// most hidden inputs ({"prompt": "PROMPT"}).
	Plain bool
	// CustomValidation marks an input the node checks itself (nodes.InputValidator,
	// ComfyUI's VALIDATE_INPUTS argument): ComfyUI then skips its min/max and combo-list
	// checks for it (execution.py validate_inputs) and reports the node's failure as
	// custom_validation_failed. LoadImage's "image" accepts "sub/x.png [input]" this way.
	CustomValidation bool
}

// Flag is a boolean option that ComfyUI writes as true, as false, or leaves out (the
// zero Flag).
type Flag uint8

// The set values of a Flag.
const (
	Off Flag = iota + 1
	On
)

// Number is a numeric option (min, max, step, round), kept as the decimal text ComfyUI
// writes: integers are exact over the whole int64 and uint64 range (a seed's max is
// 2^64-1), floats read as Python prints them ("1.0", "0.01"). The zero Number is unset.
type Number struct{ text string }

// Num returns v as a Number: Num(1) is the integer 1, Num(1.0) the float 1.0. NaN and
// ±Inf give an invalid Number, which Input.Check reports.
func Num[T int | int64 | uint64 | float64](v T) Number {
	switch x := any(v).(type) {
	case int:
		return Number{strconv.Itoa(x)}
	case int64:
		return Number{strconv.FormatInt(x, 10)}
	case uint64:
		return Number{strconv.FormatUint(x, 10)}
	case float64:
		return Number{pyFloatRepr(x)}
	}
	return Number{}
}

// IsSet reports whether the number was given.
func (n Number) IsSet() bool { return n.text != "" }

// String returns the number's decimal text ("" when unset).
func (n Number) String() string { return n.text }

// Rat returns the number's exact value, or nil when it is unset or not a finite number.
func (n Number) Rat() *big.Rat {
	if !n.IsSet() {
		return nil
	}
	r, ok := new(big.Rat).SetString(n.text)
	if !ok {
		return nil
	}
	return r
}

// Float64 returns the number as the nearest float64 (0 when unset).
func (n Number) Float64() float64 {
	f, _ := strconv.ParseFloat(n.text, 64)
	return f
}

// IsInt reports whether the number is written as an integer.
func (n Number) IsInt() bool { return n.IsSet() && isIntLiteral(n.text) }

// json returns the number for encoding/json, written as its text.
func (n Number) json() json.Number { return json.Number(n.text) }

// Output is one output socket of a node.
type Output struct {
	Type   string
	Name   string
	IsList bool // ComfyUI's OUTPUT_IS_LIST
}

// Input returns the named input and whether it exists.
func (s *Schema) Input(name string) (*Input, bool) {
	for i := range s.Inputs {
		if s.Inputs[i].Name == name {
			return &s.Inputs[i], true
		}
	}
	return nil, false
}

// IsWidget reports whether the input is edited as a widget in the UI (a literal value)
// rather than a socket: the primitive types and combos.
func (in *Input) IsWidget() bool {
	return IsWidgetType(in.Type)
}

// IsWidgetType reports whether typ is a widget type: INT, FLOAT, STRING, BOOLEAN or
// COMBO.
func IsWidgetType(typ string) bool {
	switch typ {
	case TypeInt, TypeFloat, TypeString, TypeBoolean, TypeCombo:
		return true
	}
	return false
}

// typedOptions are the option keys Input has fields for; Extra must not repeat them,
// except that it may hold false for the keys of bool fields (which write only true).
var typedOptions = map[string]bool{
	"default": true, "min": true, "max": true, "step": true, "round": true, "display": true,
	"tooltip": true, "multiline": true, "multiselect": true, "options": true,
	"dynamicPrompts": false, "control_after_generate": false, "image_upload": false,
	"forceInput": false, "advanced": false,
}

// Options returns the input's option dict as ComfyUI serves it (without a combo's
// "options" list, which comes from Choices): the typed fields that are set, then Extra.
func (in *Input) Options() map[string]any {
	o := map[string]any{}
	if in.Default != nil {
		o["default"] = jsonOption(in.Default)
	}
	for _, n := range []struct {
		key string
		v   Number
	}{{"min", in.Min}, {"max", in.Max}, {"step", in.Step}, {"round", in.Round}} {
		if n.v.IsSet() {
			o[n.key] = n.v.json()
		}
	}
	if in.NoRound {
		o["round"] = false
	}
	for _, s := range []struct{ key, v string }{{"display", in.Display}, {"tooltip", in.Tooltip}} {
		if s.v != "" {
			o[s.key] = s.v
		}
	}
	for _, f := range []struct {
		key string
		v   Flag
	}{{"multiline", in.Multiline}, {"multiselect", in.Multiselect}} {
		if f.v != 0 {
			o[f.key] = f.v == On
		}
	}
	for _, b := range []struct {
		key string
		v   bool
	}{{"dynamicPrompts", in.DynamicPrompts}, {"control_after_generate", in.ControlAfterGenerate},
		{"image_upload", in.ImageUpload}, {"forceInput", in.ForceInput}, {"advanced", in.Advanced}} {
		if b.v {
			o[b.key] = true
		}
	}
	for k, v := range in.Extra {
		o[k] = v
	}
	return o
}

// jsonOption writes a float64 default as Python prints it (1.0, not 1), as ComfyUI
// serves it; other values are unchanged.
func jsonOption(v any) any {
	if f, ok := v.(float64); ok && !math.IsNaN(f) && !math.IsInf(f, 0) {
		return json.Number(pyFloatRepr(f))
	}
	return v
}

// Check reports an input whose options cannot be served or enforced: a key in Extra
// that has a field, an invalid number, a default of the wrong type or outside
// [Min, Max], Min above Max, or both Round and NoRound.
func (in *Input) Check() error {
	for k, v := range in.Extra {
		if always, typed := typedOptions[k]; typed && (always || v != false) {
			return fmt.Errorf("input %q: option %q belongs in its field, not in Extra", in.Name, k)
		}
	}
	for _, n := range []struct {
		key string
		v   Number
	}{{"min", in.Min}, {"max", in.Max}, {"step", in.Step}, {"round", in.Round}} {
		if n.v.IsSet() && n.v.Rat() == nil {
			return fmt.Errorf("input %q: %s %q is not a finite number", in.Name, n.key, n.v.text)
		}
	}
	if in.Round.IsSet() && in.NoRound {
		return fmt.Errorf("input %q: both Round and NoRound are set", in.Name)
	}
	lo, hi := in.Min.Rat(), in.Max.Rat()
	if lo != nil && hi != nil && lo.Cmp(hi) > 0 {
		return fmt.Errorf("input %q: min %s is above max %s", in.Name, in.Min, in.Max)
	}
	if in.Default == nil {
		return nil
	}
	switch in.Type {
	case TypeInt, TypeFloat:
		d := numberRat(in.Default)
		if d == nil {
			return fmt.Errorf("input %q: default %v (%T) is not a number", in.Name, in.Default, in.Default)
		}
		if in.Type == TypeInt && !d.IsInt() {
			return fmt.Errorf("input %q: default %v of an INT is not an integer", in.Name, in.Default)
		}
		if lo != nil && d.Cmp(lo) < 0 || hi != nil && d.Cmp(hi) > 0 {
			return fmt.Errorf("input %q: default %v is outside [%s, %s]", in.Name, in.Default, orInf(in.Min, "-inf"), orInf(in.Max, "inf"))
		}
	case TypeString, TypeCombo:
		if _, ok := in.Default.(string); !ok {
			return fmt.Errorf("input %q: default %v (%T) of a %s is not a string", in.Name, in.Default, in.Default, in.Type)
		}
	case TypeBoolean:
		if _, ok := in.Default.(bool); !ok {
			return fmt.Errorf("input %q: default %v (%T) of a BOOLEAN is not a bool", in.Name, in.Default, in.Default)
		}
	}
	return nil
}

// orInf writes a bound, or inf where it is unset.
func orInf(n Number, inf string) string {
	if !n.IsSet() {
		return inf
	}
	return n.text
}

// numberRat returns a Go or JSON number exactly, or nil.
func numberRat(v any) *big.Rat {
	switch x := v.(type) {
	case json.Number:
		r, ok := new(big.Rat).SetString(x.String())
		if !ok {
			return nil
		}
		return r
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil
		}
		return new(big.Rat).SetFloat64(x)
	case float32:
		return numberRat(float64(x))
	case int:
		return new(big.Rat).SetInt64(int64(x))
	case int64:
		return new(big.Rat).SetInt64(x)
	case uint64:
		return new(big.Rat).SetInt(new(big.Int).SetUint64(x))
	case Number:
		return x.Rat()
	}
	return nil
}

// Schemas finds node schemas by class name. nodes.Registry implements it.
type Schemas interface {
	Schema(class string) (*Schema, bool)
}

package graph

import (
	"encoding/json"
	"fmt"
	"sort"
)

// SchemaSet is a set of schemas by class name. It implements Schemas.
type SchemaSet map[string]*Schema

// Schema implements Schemas.
func (s SchemaSet) Schema(class string) (*Schema, bool) {
	sc, ok := s[class]
	return sc, ok
}

// Names returns the class names, sorted.
func (s SchemaSet) Names() []string {
	out := make([]string, 0, len(s))
	for k := range s {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// objectInfoKeys are the keys of an /object_info entry that Schema models; every other
// key goes to Schema.Extra verbatim.
var objectInfoKeys = map[string]bool{
	"input": true, "input_order": true, "output": true, "output_is_list": true,
	"output_name": true, "name": true, "display_name": true, "description": true,
	"python_module": true, "category": true, "output_node": true,
}

// SchemasFromObjectInfo builds schemas from a ComfyUI /object_info JSON document (an
// object of class name → entry). Inputs keep ComfyUI's order (input_order where
// present, else document order); options fill Input's typed fields and keep their JSON
// numbers exact (a max of 0xffffffffffffffff stays 2^64-1), other keys go to Extra. Combos are read in both forms ComfyUI
// serves: [[choices...], {opts}] and ["COMBO", {"options": [choices...], ...}].
func SchemasFromObjectInfo(data []byte) (SchemaSet, error) {
	members, err := objectMembers("object_info", data)
	if err != nil {
		return nil, err
	}
	out := SchemaSet{}
	for _, m := range members {
		s, err := schemaFromEntry(m.Key, m.Value)
		if err != nil {
			return nil, fmt.Errorf("graph: object_info: class %q (byte %d): %w", m.Key, m.Offset, err)
		}
		out[m.Key] = s
	}
	return out, nil
}

// SchemaFromObjectInfo builds one schema from an /object_info entry.
func SchemaFromObjectInfo(class string, entry []byte) (*Schema, error) {
	s, err := schemaFromEntry(class, entry)
	if err != nil {
		return nil, fmt.Errorf("graph: object_info: class %q: %w", class, err)
	}
	return s, nil
}

func schemaFromEntry(class string, data []byte) (*Schema, error) {
	if jsonKind(data) != "an object" {
		return nil, fmt.Errorf("entry is %s, want an object", jsonKind(data))
	}
	var e struct {
		Input        json.RawMessage     `json:"input"`
		InputOrder   map[string][]string `json:"input_order"`
		Output       []any               `json:"output"`
		OutputIsList []bool              `json:"output_is_list"`
		OutputName   []string            `json:"output_name"`
		Name         string              `json:"name"`
		DisplayName  string              `json:"display_name"`
		Description  string              `json:"description"`
		PythonModule string              `json:"python_module"`
		Category     string              `json:"category"`
		OutputNode   bool                `json:"output_node"`
	}
	if err := decodeNumbers(data, &e); err != nil {
		return nil, err
	}
	s := &Schema{
		Name: e.Name, DisplayName: e.DisplayName, Description: e.Description,
		PythonModule: e.PythonModule, Category: e.Category, OutputNode: e.OutputNode,
	}
	if s.Name == "" {
		s.Name = class
	}
	var all map[string]any
	if err := decodeNumbers(data, &all); err != nil {
		return nil, err
	}
	for k, v := range all {
		// A modelled key that ComfyUI sends as null (V3 nodes' display_name) is kept in
		// Extra, which ObjectInfo writes over the computed value.
		if !objectInfoKeys[k] || v == nil {
			if s.Extra == nil {
				s.Extra = map[string]any{}
			}
			s.Extra[k] = v
		}
	}
	if len(e.Input) > 0 && jsonKind(e.Input) == "an object" {
		sections, err := objectMembers("input", e.Input)
		if err != nil {
			return nil, err
		}
		for _, secName := range []string{"required", "optional", "hidden"} {
			sec := sectionOf(secName)
			for _, sm := range sections {
				if sm.Key != secName {
					continue
				}
				if jsonKind(sm.Value) != "an object" {
					return nil, fmt.Errorf("input.%s is %s, want an object", secName, jsonKind(sm.Value))
				}
				specs, err := objectMembers("input."+secName, sm.Value)
				if err != nil {
					return nil, err
				}
				for _, name := range orderNames(specs, e.InputOrder[secName]) {
					in, err := inputFromSpec(name, sec, specByName(specs, name))
					if err != nil {
						return nil, err
					}
					s.Inputs = append(s.Inputs, in)
				}
			}
		}
	}
	for i, o := range e.Output {
		out := Output{}
		switch t := o.(type) {
		case string:
			out.Type = t
		case []any:
			out.Type = TypeCombo
		default:
			return nil, fmt.Errorf("output[%d] is not a type name", i)
		}
		if i < len(e.OutputName) {
			out.Name = e.OutputName[i]
		}
		if i < len(e.OutputIsList) {
			out.IsList = e.OutputIsList[i]
		}
		s.Outputs = append(s.Outputs, out)
	}
	return s, nil
}

func sectionOf(name string) Section {
	switch name {
	case "optional":
		return Optional
	case "hidden":
		return Hidden
	}
	return Required
}

// orderNames returns the input names in input_order when it lists exactly the inputs
// present, else in document order.
func orderNames(specs []rawMember, order []string) []string {
	doc := make([]string, len(specs))
	have := map[string]bool{}
	for i, m := range specs {
		doc[i] = m.Key
		have[m.Key] = true
	}
	if len(order) != len(doc) {
		return doc
	}
	for _, n := range order {
		if !have[n] {
			return doc
		}
	}
	return order
}

func specByName(specs []rawMember, name string) json.RawMessage {
	for _, m := range specs {
		if m.Key == name {
			return m.Value
		}
	}
	return nil
}

// inputFromSpec reads one input spec: [type], [type, opts], [[choices]], [[choices],
// opts] or ["COMBO", {"options": [...]}].
func inputFromSpec(name string, sec Section, raw json.RawMessage) (Input, error) {
	in := Input{Name: name, Section: sec}
	if jsonKind(raw) == "a string" {
		in.Plain = true
		err := json.Unmarshal(raw, &in.Type)
		return in, err
	}
	var spec []any
	if err := decodeNumbers(raw, &spec); err != nil || len(spec) == 0 {
		return in, fmt.Errorf("input %q: spec is %s, want [type, options]", name, jsonKind(raw))
	}
	var opts map[string]any
	if len(spec) == 1 {
		in.Bare = true
	} else {
		var ok bool
		opts, ok = spec[1].(map[string]any)
		if !ok && spec[1] != nil {
			return in, fmt.Errorf("input %q: options are not an object", name)
		}
	}
	list, listed := opts["options"]
	var choices []string
	switch t := spec[0].(type) {
	case string:
		in.Type = t
		if t == TypeCombo {
			in.ComboV3 = true
			if l, ok := list.([]any); ok {
				choices = choiceStrings(l)
			}
		}
	case []any:
		in.Type = TypeCombo
		choices = choiceStrings(t)
	default:
		return in, fmt.Errorf("input %q: type is not a name or a list", name)
	}
	if in.Type == TypeCombo {
		delete(opts, "options")
	}
	setOptions(&in, opts)
	if in.Type == TypeCombo {
		if in.ComboV3 && !listed {
			// A remote combo: the front end fetches its list; there are no choices.
			return in, nil
		}
		if choices == nil {
			choices = []string{}
		}
		in.Choices = func() []string { return append([]string(nil), choices...) }
	}
	return in, nil
}

// setOptions fills in's option fields from an option dict; a key without a field, or a
// value its field cannot hold, goes to Extra verbatim.
func setOptions(in *Input, opts map[string]any) {
	extra := func(k string, v any) {
		if in.Extra == nil {
			in.Extra = map[string]any{}
		}
		in.Extra[k] = v
	}
	for k, v := range opts {
		num, isNum := v.(json.Number)
		str, isStr := v.(string)
		b, isBool := v.(bool)
		switch {
		case k == "default":
			in.Default = v
		case k == "min" && isNum:
			in.Min = Number{num.String()}
		case k == "max" && isNum:
			in.Max = Number{num.String()}
		case k == "step" && isNum:
			in.Step = Number{num.String()}
		case k == "round" && isNum:
			in.Round = Number{num.String()}
		case k == "round" && v == false:
			in.NoRound = true
		case k == "display" && isStr:
			in.Display = str
		case k == "tooltip" && isStr:
			in.Tooltip = str
		case k == "multiline" && isBool:
			in.Multiline = flagOf(b)
		case k == "multiselect" && isBool:
			in.Multiselect = flagOf(b)
		case k == "dynamicPrompts" && v == true:
			in.DynamicPrompts = true
		case k == "control_after_generate" && v == true:
			in.ControlAfterGenerate = true
		case k == "image_upload" && v == true:
			in.ImageUpload = true
		case k == "forceInput" && v == true:
			in.ForceInput = true
		case k == "advanced" && v == true:
			in.Advanced = true
		default:
			extra(k, v)
		}
	}
}

func flagOf(b bool) Flag {
	if b {
		return On
	}
	return Off
}

// choiceStrings returns combo choices as text (numbers keep their JSON form).
func choiceStrings(list []any) []string {
	out := make([]string, 0, len(list))
	for _, v := range list {
		switch x := v.(type) {
		case string:
			out = append(out, x)
		case json.Number:
			out = append(out, x.String())
		default:
			b, _ := json.Marshal(x)
			out = append(out, string(b))
		}
	}
	return out
}

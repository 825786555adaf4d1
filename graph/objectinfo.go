package graph

// ObjectInfo returns the schema as ComfyUI's /object_info entry for the class: a value
// that encoding/json writes with the same keys and shapes ComfyUI serves.
func (s *Schema) ObjectInfo() map[string]any {
	input := map[string]any{}
	order := map[string]any{}
	for _, sec := range []Section{Required, Optional, Hidden} {
		specs := map[string]any{}
		var names []string
		for i := range s.Inputs {
			in := &s.Inputs[i]
			if in.Section != sec {
				continue
			}
			specs[in.Name] = in.spec()
			names = append(names, in.Name)
		}
		if len(names) > 0 {
			input[sec.String()] = specs
			order[sec.String()] = names
		}
	}
	// ComfyUI derives input_order from the same INPUT_TYPES sections as input, so an
	// empty "required" section appears in both.
	if _, ok := input["required"]; !ok {
		input["required"] = map[string]any{}
		order["required"] = []string{}
	}
	outTypes := make([]string, len(s.Outputs))
	outNames := make([]string, len(s.Outputs))
	outList := make([]bool, len(s.Outputs))
	for i, o := range s.Outputs {
		outTypes[i], outNames[i], outList[i] = o.Type, o.Name, o.IsList
	}
	pm := s.PythonModule
	if pm == "" {
		pm = "nodes"
	}
	info := map[string]any{
		"input":          input,
		"input_order":    order,
		"output":         outTypes,
		"output_is_list": outList,
		"output_name":    outNames,
		"name":           s.Name,
		"display_name":   s.DisplayName,
		"description":    s.Description,
		"python_module":  pm,
		"category":       s.Category,
		"output_node":    s.OutputNode,
	}
	for k, v := range s.Extra {
		info[k] = v
	}
	return info
}

// spec returns the input's [type, options] array (or the type alone for Plain).
func (in *Input) spec() any {
	if in.Plain {
		return in.Type
	}
	opts := in.Options()
	if in.Type == TypeCombo {
		choices := []string{}
		if in.Choices != nil {
			choices = append(choices, in.Choices()...)
		}
		if in.ComboV3 {
			// A V3 combo without Choices (a "remote" combo whose list the front end
			// fetches) has no "options" key, as ComfyUI serves it.
			if in.Choices != nil {
				opts["options"] = choices
			}
			return []any{TypeCombo, opts}
		}
		if in.Bare {
			return []any{choices}
		}
		return []any{choices, opts}
	}
	if in.Bare {
		return []any{in.Type}
	}
	return []any{in.Type, opts}
}

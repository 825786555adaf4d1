package graph

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

// Input is one named input of a node.
type Input struct {
	Name    string
	Section Section
	// Type is the socket or widget type: INT, FLOAT, STRING, BOOLEAN, COMBO, IMAGE, MODEL,
	// ..., "*" for any, or a comma-joined list ("IMAGE,MASK") as ComfyUI allows.
	Type string
	// Options is ComfyUI's option dict for this input, verbatim: default, min, max, step,
	// round, tooltip, multiline, image_upload, control_after_generate, forceInput, ...
	// For COMBO inputs it never holds "options": Choices supplies them.
	Options map[string]any
	// Choices returns the values of a COMBO input; nil for other types.
	Choices func() []string
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
	switch in.Type {
	case TypeInt, TypeFloat, TypeString, TypeBoolean, TypeCombo:
		return true
	}
	return false
}

// Schemas finds node schemas by class name. nodes.Registry implements it.
type Schemas interface {
	Schema(class string) (*Schema, bool)
}

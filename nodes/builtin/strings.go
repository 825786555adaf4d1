package builtin

import (
	"context"
	"fmt"
	"strings"
	"unicode"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// The string utilities of comfy_extras/nodes_string.py, with Python's str semantics:
// indices and lengths count code points, strip() removes what str.isspace() calls space.
// The Regex* nodes are not here: Python's re (backreferences, lookaround) is not Go's
// RE2, and a silently different match would be worse than a missing node.

const stringModule = "comfy_extras.nodes_string"

// StringNode is one of the nodes_string classes: a schema and a pure function of its
// inputs.
type StringNode struct {
	schema graph.Schema
	fn     func(in nodes.Inputs) (any, error)
}

// Schema implements nodes.Node.
func (n *StringNode) Schema() *graph.Schema { return &n.schema }

// Run implements nodes.Node.
func (n *StringNode) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	v, err := n.fn(in)
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.Result{Outputs: []any{v}}, nil
}

func newStringNode(class, display string, inputs []graph.Input, out graph.Output, fn func(in nodes.Inputs) (any, error)) *StringNode {
	name := display
	return &StringNode{
		schema: graph.Schema{Name: class, DisplayName: display, Category: "utils/string", PythonModule: stringModule,
			Inputs: inputs, Outputs: []graph.Output{out}, Extra: v3Extra(1, &name)},
		fn: fn,
	}
}

func text(name string) graph.Input {
	return widget(name, graph.TypeString, map[string]any{"multiline": true})
}

func caseSensitive() graph.Input {
	return widget("case_sensitive", graph.TypeBoolean, map[string]any{"default": true})
}

// strs reads several STRING inputs at once.
func strs(in nodes.Inputs, names ...string) ([]string, error) {
	out := make([]string, len(names))
	for i, n := range names {
		v, err := in.String(n)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

func newStringConcatenate() *StringNode {
	return newStringNode("StringConcatenate", "Concatenate",
		[]graph.Input{text("string_a"), text("string_b"),
			widget("delimiter", graph.TypeString, map[string]any{"multiline": false, "default": ""})},
		graph.Output{Type: graph.TypeString, Name: graph.TypeString},
		func(in nodes.Inputs) (any, error) {
			s, err := strs(in, "string_a", "string_b", "delimiter")
			if err != nil {
				return nil, err
			}
			return s[0] + s[2] + s[1], nil
		})
}

// pySliceBounds resolves Python's s[start:end] bounds for a sequence of length n.
func pySliceBounds(start, end int64, n int) (int, int) {
	norm := func(i int64) int {
		if i < 0 {
			i += int64(n)
		}
		return int(max(0, min(i, int64(n))))
	}
	s, e := norm(start), norm(end)
	if e < s {
		e = s
	}
	return s, e
}

func newStringSubstring() *StringNode {
	return newStringNode("StringSubstring", "Substring",
		[]graph.Input{text("string"), widget("start", graph.TypeInt, map[string]any{}), widget("end", graph.TypeInt, map[string]any{})},
		graph.Output{Type: graph.TypeString, Name: graph.TypeString},
		func(in nodes.Inputs) (any, error) {
			s, err := in.String("string")
			if err != nil {
				return nil, err
			}
			start, err := in.Int("start")
			if err != nil {
				return nil, err
			}
			end, err := in.Int("end")
			if err != nil {
				return nil, err
			}
			r := []rune(s)
			i, j := pySliceBounds(start, end, len(r))
			return string(r[i:j]), nil
		})
}

func newStringLength() *StringNode {
	return newStringNode("StringLength", "Length", []graph.Input{text("string")},
		graph.Output{Type: graph.TypeInt, Name: "length"},
		func(in nodes.Inputs) (any, error) {
			s, err := in.String("string")
			if err != nil {
				return nil, err
			}
			return int64(len([]rune(s))), nil
		})
}

// isCased is Python's notion of a cased character (Lu, Ll, Lt).
func isCased(r rune) bool { return unicode.IsUpper(r) || unicode.IsLower(r) || unicode.IsTitle(r) }

// pyCapitalize is str.capitalize (Python 3.8+): the first character in title case, the
// rest lower case.
func pyCapitalize(s string) string {
	r := []rune(s)
	for i := range r {
		if i == 0 {
			r[i] = unicode.ToTitle(r[i])
		} else {
			r[i] = unicode.ToLower(r[i])
		}
	}
	return string(r)
}

// pyTitle is str.title: a cased character following an uncased one is title-cased, any
// other cased character lower-cased ("they're" → "They'Re", as in Python).
func pyTitle(s string) string {
	r := []rune(s)
	prevCased := false
	for i, c := range r {
		if prevCased {
			r[i] = unicode.ToLower(c)
		} else {
			r[i] = unicode.ToTitle(c)
		}
		prevCased = isCased(c)
	}
	return string(r)
}

func newCaseConverter() *StringNode {
	return newStringNode("CaseConverter", "Case Converter",
		[]graph.Input{text("string"), comboV3("mode", "UPPERCASE", "lowercase", "Capitalize", "Title Case")},
		graph.Output{Type: graph.TypeString, Name: graph.TypeString},
		func(in nodes.Inputs) (any, error) {
			s, err := strs(in, "string", "mode")
			if err != nil {
				return nil, err
			}
			switch s[1] {
			case "UPPERCASE":
				return strings.ToUpper(s[0]), nil
			case "lowercase":
				return strings.ToLower(s[0]), nil
			case "Capitalize":
				return pyCapitalize(s[0]), nil
			case "Title Case":
				return pyTitle(s[0]), nil
			}
			return s[0], nil
		})
}

// pyIsSpace is str.isspace for one character: Go's White_Space set plus the ASCII
// information separators U+001C..U+001F, which Python also counts.
func pyIsSpace(r rune) bool { return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f) }

func newStringTrim() *StringNode {
	return newStringNode("StringTrim", "Trim",
		[]graph.Input{text("string"), comboV3("mode", "Both", "Left", "Right")},
		graph.Output{Type: graph.TypeString, Name: graph.TypeString},
		func(in nodes.Inputs) (any, error) {
			s, err := strs(in, "string", "mode")
			if err != nil {
				return nil, err
			}
			switch s[1] {
			case "Both":
				return strings.TrimFunc(s[0], pyIsSpace), nil
			case "Left":
				return strings.TrimLeftFunc(s[0], pyIsSpace), nil
			case "Right":
				return strings.TrimRightFunc(s[0], pyIsSpace), nil
			}
			return s[0], nil
		})
}

func newStringReplace() *StringNode {
	return newStringNode("StringReplace", "Replace",
		[]graph.Input{text("string"), text("find"), text("replace")},
		graph.Output{Type: graph.TypeString, Name: graph.TypeString},
		func(in nodes.Inputs) (any, error) {
			s, err := strs(in, "string", "find", "replace")
			if err != nil {
				return nil, err
			}
			// An empty find inserts between every character and at both ends, in Python
			// and in strings.ReplaceAll alike.
			if n := int64(strings.Count(s[0], s[1])); int64(len(s[0]))+n*int64(len(s[2])-len(s[1])) > MaxValues {
				return nil, fmt.Errorf("builtin: StringReplace: the result would exceed %d bytes", MaxValues)
			}
			return strings.ReplaceAll(s[0], s[1], s[2]), nil
		})
}

func newStringContains() *StringNode {
	return newStringNode("StringContains", "Contains",
		[]graph.Input{text("string"), text("substring"), caseSensitive()},
		graph.Output{Type: graph.TypeBoolean, Name: "contains"},
		func(in nodes.Inputs) (any, error) {
			s, err := strs(in, "string", "substring")
			if err != nil {
				return nil, err
			}
			cs, err := in.Bool("case_sensitive")
			if err != nil {
				return nil, err
			}
			if !cs {
				s[0], s[1] = strings.ToLower(s[0]), strings.ToLower(s[1])
			}
			return strings.Contains(s[0], s[1]), nil
		})
}

func newStringCompare() *StringNode {
	return newStringNode("StringCompare", "Compare",
		[]graph.Input{text("string_a"), text("string_b"), comboV3("mode", "Starts With", "Ends With", "Equal"), caseSensitive()},
		graph.Output{Type: graph.TypeBoolean, Name: graph.TypeBoolean},
		func(in nodes.Inputs) (any, error) {
			s, err := strs(in, "string_a", "string_b", "mode")
			if err != nil {
				return nil, err
			}
			cs, err := in.Bool("case_sensitive")
			if err != nil {
				return nil, err
			}
			if !cs {
				s[0], s[1] = strings.ToLower(s[0]), strings.ToLower(s[1])
			}
			switch s[2] {
			case "Equal":
				return s[0] == s[1], nil
			case "Starts With":
				return strings.HasPrefix(s[0], s[1]), nil
			case "Ends With":
				return strings.HasSuffix(s[0], s[1]), nil
			}
			return nil, fmt.Errorf("builtin: StringCompare: unknown mode %q", s[2])
		})
}

// Interface guard.
var _ nodes.Node = (*StringNode)(nil)

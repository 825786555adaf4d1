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
// RegexMatch, RegexExtract and RegexReplace are in regex.go (Python's re translated to
// RE2, what RE2 cannot run refused by name).

const stringModule = "comfy_extras.nodes_string"

// stringSchema is the schema of a nodes_string class with one output.
func stringSchema(class, display string, out graph.Output, inputs ...graph.Input) graph.Schema {
	return graph.Schema{Name: class, DisplayName: display, Category: "utils/string", PythonModule: stringModule,
		Inputs: inputs, Outputs: []graph.Output{out}, Extra: v3Extra(1, &display)}
}

var stringOutput = graph.Output{Type: graph.TypeString, Name: graph.TypeString}

func text(name string) graph.Input {
	return graph.Input{Name: name, Type: graph.TypeString, Multiline: graph.On}
}

func caseSensitive() graph.Input {
	return graph.Input{Name: "case_sensitive", Type: graph.TypeBoolean, Default: true}
}

// StringConcatenate is ComfyUI's StringConcatenate ("Concatenate").
type StringConcatenate struct {
	StringA   string `input:"string_a"`
	StringB   string `input:"string_b"`
	Delimiter string `input:"delimiter"`
}

// Schema implements nodes.Typed.
func (*StringConcatenate) Schema() graph.Schema {
	return stringSchema("StringConcatenate", "Concatenate", stringOutput, text("string_a"), text("string_b"),
		graph.Input{Name: "delimiter", Type: graph.TypeString, Multiline: graph.Off, Default: ""})
}

// Run implements nodes.Typed: string_a + delimiter + string_b.
func (n *StringConcatenate) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(n.StringA+n.Delimiter+n.StringB, nil)
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

// StringSubstring is ComfyUI's StringSubstring ("Substring").
type StringSubstring struct {
	String string `input:"string"`
	Start  int64  `input:"start"`
	End    int64  `input:"end"`
}

// Schema implements nodes.Typed.
func (*StringSubstring) Schema() graph.Schema {
	return stringSchema("StringSubstring", "Substring", stringOutput, text("string"),
		graph.Input{Name: "start", Type: graph.TypeInt}, graph.Input{Name: "end", Type: graph.TypeInt})
}

// Run implements nodes.Typed: string[start:end] over code points.
func (n *StringSubstring) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	r := []rune(n.String)
	i, j := pySliceBounds(n.Start, n.End, len(r))
	return nodes.One(string(r[i:j]), nil)
}

// StringLength is ComfyUI's StringLength ("Length"): the number of code points.
type StringLength struct {
	String string `input:"string"`
}

// Schema implements nodes.Typed.
func (*StringLength) Schema() graph.Schema {
	return stringSchema("StringLength", "Length", graph.Output{Type: graph.TypeInt, Name: "length"}, text("string"))
}

// Run implements nodes.Typed.
func (n *StringLength) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(int64(len([]rune(n.String))), nil)
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

// CaseConverter is ComfyUI's CaseConverter ("Case Converter").
type CaseConverter struct {
	String string `input:"string"`
	Mode   string `input:"mode"`
}

// Schema implements nodes.Typed.
func (*CaseConverter) Schema() graph.Schema {
	return stringSchema("CaseConverter", "Case Converter", stringOutput,
		text("string"), comboV3("mode", "UPPERCASE", "lowercase", "Capitalize", "Title Case"))
}

// Run implements nodes.Typed; an unlisted mode returns the string unchanged, as in
// ComfyUI.
func (n *CaseConverter) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	switch n.Mode {
	case "UPPERCASE":
		return nodes.One(strings.ToUpper(n.String), nil)
	case "lowercase":
		return nodes.One(strings.ToLower(n.String), nil)
	case "Capitalize":
		return nodes.One(pyCapitalize(n.String), nil)
	case "Title Case":
		return nodes.One(pyTitle(n.String), nil)
	}
	return nodes.One(n.String, nil)
}

// pyIsSpace is str.isspace for one character: Go's White_Space set plus the ASCII
// information separators U+001C..U+001F, which Python also counts.
func pyIsSpace(r rune) bool { return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f) }

// StringTrim is ComfyUI's StringTrim ("Trim"): str.strip, lstrip or rstrip.
type StringTrim struct {
	String string `input:"string"`
	Mode   string `input:"mode"`
}

// Schema implements nodes.Typed.
func (*StringTrim) Schema() graph.Schema {
	return stringSchema("StringTrim", "Trim", stringOutput, text("string"), comboV3("mode", "Both", "Left", "Right"))
}

// Run implements nodes.Typed; an unlisted mode returns the string unchanged, as in
// ComfyUI.
func (n *StringTrim) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	switch n.Mode {
	case "Both":
		return nodes.One(strings.TrimFunc(n.String, pyIsSpace), nil)
	case "Left":
		return nodes.One(strings.TrimLeftFunc(n.String, pyIsSpace), nil)
	case "Right":
		return nodes.One(strings.TrimRightFunc(n.String, pyIsSpace), nil)
	}
	return nodes.One(n.String, nil)
}

// StringReplace is ComfyUI's StringReplace ("Replace"): every occurrence of find.
type StringReplace struct {
	String  string `input:"string"`
	Find    string `input:"find"`
	Replace string `input:"replace"`
}

// Schema implements nodes.Typed.
func (*StringReplace) Schema() graph.Schema {
	return stringSchema("StringReplace", "Replace", stringOutput, text("string"), text("find"), text("replace"))
}

// Run implements nodes.Typed. An empty find inserts between every character and at
// both ends, in Python and in strings.ReplaceAll alike.
func (n *StringReplace) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if c := int64(strings.Count(n.String, n.Find)); int64(len(n.String))+c*int64(len(n.Replace)-len(n.Find)) > MaxValues {
		return nodes.Result{}, fmt.Errorf("builtin: StringReplace: the result would exceed %d bytes", MaxValues)
	}
	return nodes.One(strings.ReplaceAll(n.String, n.Find, n.Replace), nil)
}

// StringContains is ComfyUI's StringContains ("Contains").
type StringContains struct {
	String        string `input:"string"`
	Substring     string `input:"substring"`
	CaseSensitive bool   `input:"case_sensitive"`
}

// Schema implements nodes.Typed.
func (*StringContains) Schema() graph.Schema {
	return stringSchema("StringContains", "Contains", graph.Output{Type: graph.TypeBoolean, Name: "contains"},
		text("string"), text("substring"), caseSensitive())
}

// Run implements nodes.Typed.
func (n *StringContains) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	s, sub := n.String, n.Substring
	if !n.CaseSensitive {
		s, sub = strings.ToLower(s), strings.ToLower(sub)
	}
	return nodes.One(strings.Contains(s, sub), nil)
}

// StringCompare is ComfyUI's StringCompare ("Compare").
type StringCompare struct {
	StringA       string `input:"string_a"`
	StringB       string `input:"string_b"`
	Mode          string `input:"mode"`
	CaseSensitive bool   `input:"case_sensitive"`
}

// Schema implements nodes.Typed.
func (*StringCompare) Schema() graph.Schema {
	return stringSchema("StringCompare", "Compare", graph.Output{Type: graph.TypeBoolean, Name: graph.TypeBoolean},
		text("string_a"), text("string_b"), comboV3("mode", "Starts With", "Ends With", "Equal"), caseSensitive())
}

// Run implements nodes.Typed.
func (n *StringCompare) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	a, b := n.StringA, n.StringB
	if !n.CaseSensitive {
		a, b = strings.ToLower(a), strings.ToLower(b)
	}
	switch n.Mode {
	case "Equal":
		return nodes.One(a == b, nil)
	case "Starts With":
		return nodes.One(strings.HasPrefix(a, b), nil)
	case "Ends With":
		return nodes.One(strings.HasSuffix(a, b), nil)
	}
	return nodes.Result{}, fmt.Errorf("builtin: StringCompare: unknown mode %q", n.Mode)
}

// Interface guards.
var (
	_ nodes.Typed = (*StringConcatenate)(nil)
	_ nodes.Typed = (*StringSubstring)(nil)
	_ nodes.Typed = (*StringLength)(nil)
	_ nodes.Typed = (*CaseConverter)(nil)
	_ nodes.Typed = (*StringTrim)(nil)
	_ nodes.Typed = (*StringReplace)(nil)
	_ nodes.Typed = (*StringContains)(nil)
	_ nodes.Typed = (*StringCompare)(nil)
)

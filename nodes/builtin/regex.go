package builtin

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// RegexMatch and RegexExtract (comfy_extras/nodes_string.py) with Python's re semantics
// as far as Go's RE2 engine can give them. A pattern is translated before it is compiled:
// \d, \w, \s (and their negations) get Python's Unicode meaning, \Z becomes \z, {,n}
// becomes {0,n}, (?#…) comments are dropped. Constructs Python accepts and RE2 cannot run
// (lookaround, backreferences, conditionals, atomic groups, possessive quantifiers, the
// x/a/L flags) are refused with an UnsupportedRegexError naming them, rather than silently
// matching something else. A pattern that is invalid for Python too makes RegexMatch
// answer false and RegexExtract "", as ComfyUI does on re.error.

// UnsupportedRegexError reports a Python regular-expression construct that Go's regexp
// (RE2) does not implement.
//
// Known differences that remain: \b and case folding follow RE2 (ASCII word boundary,
// simple folding); Python's $ before a final newline is honoured only where that is the
// subject's one line break; re.findall keeps an empty match right after a non-empty one
// ("a*" on "baaa" gives "", "aaa", "") where RE2 drops it ("", "aaa").
type UnsupportedRegexError struct {
	Pattern   string
	Construct string
}

func (e *UnsupportedRegexError) Error() string {
	return fmt.Sprintf("builtin: regex %q uses %s, which Python's re supports but forgeflow's RE2 engine does not (lookaround, backreferences, conditionals, atomic groups, possessive quantifiers and the x/a/L flags are refused)", e.Pattern, e.Construct)
}

// Python's Unicode classes for str patterns: \d is str.isdecimal (Nd), \w is
// str.isalnum or "_", \s is str.isspace.
const (
	pyDigit = `\p{Nd}`
	pyWord  = `\p{L}\p{N}_`
	pySpace = `\t\n\v\f\r\x1c-\x1f \x85\p{Z}`
)

// translatePyRegex rewrites a Python pattern into RE2 syntax. finalNewline says that the
// subject's only line break is its last character: there Python's $ (which also matches
// just before a final newline) is RE2's multi-line $.
func translatePyRegex(pat string, finalNewline bool) (string, error) {
	unsupported := func(what string) error { return &UnsupportedRegexError{Pattern: pat, Construct: what} }
	var b strings.Builder
	inClass := false
	rs := []rune(pat)
	for i := 0; i < len(rs); i++ {
		c := rs[i]
		switch {
		case c == '\\' && i+1 < len(rs):
			i++
			e := rs[i]
			switch {
			case e >= '1' && e <= '9':
				return "", unsupported(`a backreference (\` + string(e) + `)`)
			case e == 'Z' && !inClass:
				b.WriteString(`\z`)
			case e == 'd':
				b.WriteString(wrapClass(pyDigit, inClass))
			case e == 'w':
				b.WriteString(wrapClass(pyWord, inClass))
			case e == 's':
				b.WriteString(wrapClass(pySpace, inClass))
			case e == 'D':
				b.WriteString(`\P{Nd}`)
			case e == 'W' || e == 'S':
				if inClass {
					return "", unsupported(`\` + string(e) + ` inside a character class`)
				}
				set := pyWord
				if e == 'S' {
					set = pySpace
				}
				b.WriteString("[^" + set + "]")
			default:
				b.WriteRune('\\')
				b.WriteRune(e)
			}
		case inClass:
			if c == ']' {
				inClass = false
			}
			b.WriteRune(c)
		case c == '[':
			inClass = true
			b.WriteRune(c)
			// A ']' right after '[' or '[^' is a literal in both syntaxes.
			if i+1 < len(rs) && rs[i+1] == '^' {
				i++
				b.WriteRune('^')
			}
			if i+1 < len(rs) && rs[i+1] == ']' {
				i++
				b.WriteString(`\]`)
			}
		case c == '(' && i+1 < len(rs) && rs[i+1] == '?':
			rest := string(rs[i+2:])
			switch {
			case strings.HasPrefix(rest, "="), strings.HasPrefix(rest, "!"):
				return "", unsupported("a lookahead assertion (?" + rest[:1] + "…)")
			case strings.HasPrefix(rest, "<="), strings.HasPrefix(rest, "<!"):
				return "", unsupported("a lookbehind assertion (?" + rest[:2] + "…)")
			case strings.HasPrefix(rest, "P="):
				return "", unsupported("a named backreference (?P=…)")
			case strings.HasPrefix(rest, "("):
				return "", unsupported("a conditional group (?(…)…)")
			case strings.HasPrefix(rest, ">"):
				return "", unsupported("an atomic group (?>…)")
			case strings.HasPrefix(rest, "#"):
				end := strings.IndexRune(rest, ')')
				if end < 0 {
					return "", errors.New("missing ), unterminated comment")
				}
				i += 2 + len([]rune(rest[:end]))
				continue
			}
			if j := strings.IndexAny(rest, ":)"); j > 0 && strings.Trim(rest[:j], "-aiLmsux") == "" {
				flags := rest[:j]
				if strings.ContainsAny(flags, "aLx") {
					return "", unsupported("the inline flag (?" + flags + ")")
				}
				i += 2 + len(flags)                     // rs[i] is now the ':' or ')'
				f := strings.ReplaceAll(flags, "u", "") // Unicode matching is the default
				switch {
				case (f == "" || f == "-") && rest[j] == ')':
				case f == "" || f == "-":
					b.WriteString("(?:")
				default:
					b.WriteString("(?" + f + rest[j:j+1])
				}
				continue
			}
			b.WriteRune(c)
		case c == '$' && finalNewline:
			b.WriteString("(?m:$)")
		case c == '{' && i+1 < len(rs) && rs[i+1] == ',':
			// Python reads {,n} as {0,n}; RE2 would take it literally.
			j := i + 2
			for j < len(rs) && rs[j] >= '0' && rs[j] <= '9' {
				j++
			}
			if j > i+2 && j < len(rs) && rs[j] == '}' {
				b.WriteString("{0,")
				i++
				continue
			}
			b.WriteRune(c)
		case (c == '+') && i > 0 && strings.ContainsRune("*+?}", rs[i-1]) && !(i > 1 && rs[i-2] == '\\'):
			return "", unsupported("a possessive quantifier (" + string(rs[i-1]) + "+)")
		default:
			b.WriteRune(c)
		}
	}
	return b.String(), nil
}

func wrapClass(set string, inClass bool) string {
	if inClass {
		return set
	}
	return "[" + set + "]"
}

// compilePyRegex compiles pattern with RegexMatch/RegexExtract's flags. errPyRegex wraps
// a pattern the engine rejects (ComfyUI's re.error path); an UnsupportedRegexError is
// returned as it is.
func compilePyRegex(pattern, subject string, ignoreCase, multiline, dotall bool) (*regexp.Regexp, error) {
	finalNewline := strings.HasSuffix(subject, "\n") && strings.IndexByte(subject, '\n') == len(subject)-1
	t, err := translatePyRegex(pattern, finalNewline && !multiline)
	if err != nil {
		var u *UnsupportedRegexError
		if errors.As(err, &u) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", errPyRegex, err)
	}
	flags := ""
	if ignoreCase {
		flags += "i"
	}
	if multiline {
		flags += "m"
	}
	if dotall {
		flags += "s"
	}
	if flags != "" {
		t = "(?" + flags + ")" + t
	}
	re, err := regexp.Compile(t)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errPyRegex, err)
	}
	return re, nil
}

var errPyRegex = errors.New("invalid regular expression")

func regexFlags() []graph.Input {
	return []graph.Input{
		{Name: "case_insensitive", Type: graph.TypeBoolean, Default: true},
		{Name: "multiline", Type: graph.TypeBoolean, Default: false},
		{Name: "dotall", Type: graph.TypeBoolean, Default: false},
	}
}

// RegexMatch is nodes_string.py RegexMatch ("Regex Match"): whether re.search finds the
// pattern.
type RegexMatch struct {
	String          string `input:"string"`
	RegexPattern    string `input:"regex_pattern"`
	CaseInsensitive bool   `input:"case_insensitive"`
	Multiline       bool   `input:"multiline"`
	Dotall          bool   `input:"dotall"`
}

// Schema implements nodes.Typed.
func (*RegexMatch) Schema() graph.Schema {
	return stringSchema("RegexMatch", "Regex Match", graph.Output{Type: graph.TypeBoolean, Name: "matches"},
		append([]graph.Input{text("string"), text("regex_pattern")}, regexFlags()...)...)
}

// Run implements nodes.Typed.
func (n *RegexMatch) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	re, err := compilePyRegex(n.RegexPattern, n.String, n.CaseInsensitive, n.Multiline, n.Dotall)
	if errors.Is(err, errPyRegex) {
		return nodes.One(false, nil)
	}
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.One(re.MatchString(n.String), nil)
}

var regexModes = []string{"First Match", "All Matches", "First Group", "All Groups"}

// RegexExtract is nodes_string.py RegexExtract ("Regex Extract").
type RegexExtract struct {
	String          string `input:"string"`
	RegexPattern    string `input:"regex_pattern"`
	Mode            string `input:"mode"`
	CaseInsensitive bool   `input:"case_insensitive"`
	Multiline       bool   `input:"multiline"`
	Dotall          bool   `input:"dotall"`
	GroupIndex      int    `input:"group_index"`
}

// Schema implements nodes.Typed.
func (*RegexExtract) Schema() graph.Schema {
	in := append([]graph.Input{text("string"), text("regex_pattern"), comboV3("mode", regexModes...)}, regexFlags()...)
	in = append(in, graph.Input{Name: "group_index", Type: graph.TypeInt, Default: 1, Min: graph.Num(0), Max: graph.Num(100)})
	return stringSchema("RegexExtract", "Regex Extract", stringOutput, in...)
}

// group returns group g of match m in s, and whether it took part in the match.
func group(s string, m []int, g int) (string, bool) {
	if m[2*g] < 0 {
		return "", false
	}
	return s[m[2*g]:m[2*g+1]], true
}

// Run implements nodes.Typed (RegexExtract.execute): "First Match" the whole first
// match; "All Matches" re.findall joined by newlines (the whole match without groups,
// else the first group of each); "First Group" group group_index of the first match
// ("" where the pattern has fewer groups); "All Groups" that group of every match. A
// group that took no part is "" in findall's results; ComfyUI's "First Group" then
// returns None (forgeflow ""), and its "All Groups" fails, as here.
func (n *RegexExtract) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	re, err := compilePyRegex(n.RegexPattern, n.String, n.CaseInsensitive, n.Multiline, n.Dotall)
	if errors.Is(err, errPyRegex) {
		return nodes.One("", nil)
	}
	if err != nil {
		return nodes.Result{}, err
	}
	s, groups := n.String, re.NumSubexp()
	switch n.Mode {
	case "First Match":
		m := re.FindStringIndex(s)
		if m == nil {
			return nodes.One("", nil)
		}
		return nodes.One(s[m[0]:m[1]], nil)
	case "All Matches":
		var out []string
		for _, m := range re.FindAllStringSubmatchIndex(s, -1) {
			g, _ := group(s, m, min(groups, 1))
			out = append(out, g)
		}
		return nodes.One(strings.Join(out, "\n"), nil)
	case "First Group":
		m := re.FindStringSubmatchIndex(s)
		if m == nil || groups < n.GroupIndex {
			return nodes.One("", nil)
		}
		g, _ := group(s, m, n.GroupIndex)
		return nodes.One(g, nil)
	case "All Groups":
		var out []string
		for _, m := range re.FindAllStringSubmatchIndex(s, -1) {
			if groups == 0 || groups < n.GroupIndex {
				continue
			}
			g, ok := group(s, m, n.GroupIndex)
			if !ok {
				return nodes.Result{}, fmt.Errorf("builtin: RegexExtract: group %d of the match at %d took no part in it (ComfyUI fails joining None)", n.GroupIndex, m[0])
			}
			out = append(out, g)
		}
		return nodes.One(strings.Join(out, "\n"), nil)
	}
	return nodes.One("", nil)
}

// RegexReplace is nodes_string.py RegexReplace ("Regex Replace"): re.sub with Python's
// replacement syntax (\1 … \99, \g<n>, \g<name>, \n-style escapes; a group that took no
// part gives ""). Unlike the other two nodes ComfyUI does not catch re.error here, so an
// invalid pattern or replacement is an error.
type RegexReplace struct {
	String          string `input:"string"`
	RegexPattern    string `input:"regex_pattern"`
	Replace         string `input:"replace"`
	CaseInsensitive *bool  `input:"case_insensitive"`
	Multiline       bool   `input:"multiline"`
	Dotall          bool   `input:"dotall"`
	Count           int    `input:"count"`
}

// Schema implements nodes.Typed.
func (*RegexReplace) Schema() graph.Schema {
	flags := regexFlags()
	for i := range flags {
		flags[i].Section = graph.Optional
	}
	flags[2].Tooltip = "When enabled, the dot (.) character will match any character including newline characters. When disabled, dots won't match newlines."
	in := append([]graph.Input{text("string"), text("regex_pattern"), text("replace")}, flags...)
	in = append(in, graph.Input{Name: "count", Type: graph.TypeInt, Default: 0, Min: graph.Num(0), Max: graph.Num(100), Section: graph.Optional,
		Tooltip: "Maximum number of replacements to make. Set to 0 to replace all occurrences (default). Set to 1 to replace only the first match, 2 for the first two matches, etc."})
	s := stringSchema("RegexReplace", "Regex Replace", stringOutput, in...)
	s.Description = "Find and replace text using regex patterns."
	return s
}

// maxRegexOutput bounds RegexReplace's result: every match may add the whole replacement,
// so a short request could otherwise ask for a result quadratic in its size.
const maxRegexOutput = 64 << 20

// replPart is one piece of a parsed replacement: literal text, or a group (group >= 0).
type replPart struct {
	text  string
	group int
}

// parsePyReplacement parses a re.sub template for re (Python's parse_template).
func parsePyReplacement(repl string, re *regexp.Regexp) ([]replPart, error) {
	escapes := map[byte]string{'a': "\a", 'b': "\b", 'f': "\f", 'n': "\n", 'r': "\r", 't': "\t", 'v': "\v", '\\': `\`}
	var parts []replPart
	var lit strings.Builder
	group := func(g int) {
		parts = append(parts, replPart{text: lit.String(), group: -1}, replPart{group: g})
		lit.Reset()
	}
	for i := 0; i < len(repl); i++ {
		c := repl[i]
		if c != '\\' || i+1 == len(repl) {
			if c == '\\' {
				return nil, errors.New("bad escape (end of pattern)")
			}
			lit.WriteByte(c)
			continue
		}
		i++
		e := repl[i]
		switch {
		case e == 'g':
			end := strings.IndexByte(repl[i:], '>')
			if i+1 >= len(repl) || repl[i+1] != '<' || end < 0 {
				return nil, errors.New(`missing group name in \g<…>`)
			}
			name := repl[i+2 : i+end]
			g, err := strconv.Atoi(name)
			if err != nil {
				if g = re.SubexpIndex(name); g < 0 {
					return nil, fmt.Errorf("unknown group name %q", name)
				}
			}
			if g < 0 || g > re.NumSubexp() {
				return nil, fmt.Errorf("invalid group reference %d", g)
			}
			group(g)
			i += end
		case e == '0':
			// Octal escape: \0 followed by up to two octal digits.
			v, j := 0, i+1
			for ; j < len(repl) && j < i+3 && repl[j] >= '0' && repl[j] <= '7'; j++ {
				v = v*8 + int(repl[j]-'0')
			}
			lit.WriteRune(rune(v))
			i = j - 1
		case e >= '1' && e <= '9':
			j := i + 1
			if j < len(repl) && repl[j] >= '0' && repl[j] <= '9' {
				j++
			}
			if j-i == 2 && j < len(repl) && e <= '3' && repl[i+1] <= '7' && repl[j] >= '0' && repl[j] <= '7' {
				lit.WriteRune(rune((int(e-'0')*8+int(repl[i+1]-'0'))*8 + int(repl[j]-'0'))) // \ooo octal
				i = j
				continue
			}
			g, _ := strconv.Atoi(repl[i:j])
			if g > re.NumSubexp() {
				return nil, fmt.Errorf("invalid group reference %d", g)
			}
			group(g)
			i = j - 1
		case escapes[e] != "":
			lit.WriteString(escapes[e])
		case e < 0x80 && (e|0x20 >= 'a' && e|0x20 <= 'z'):
			return nil, fmt.Errorf(`bad escape \%c`, e)
		default:
			lit.WriteByte('\\')
			lit.WriteByte(e)
		}
	}
	return append(parts, replPart{text: lit.String(), group: -1}), nil
}

// Run implements nodes.Typed.
func (n *RegexReplace) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	ci := n.CaseInsensitive == nil || *n.CaseInsensitive
	re, err := compilePyRegex(n.RegexPattern, n.String, ci, n.Multiline, n.Dotall)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: RegexReplace: %w", err)
	}
	parts, err := parsePyReplacement(n.Replace, re)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: RegexReplace: replacement %q: %w", n.Replace, err)
	}
	limit := n.Count
	if limit == 0 {
		limit = -1
	}
	s := n.String
	var b strings.Builder
	last := 0
	for _, m := range re.FindAllStringSubmatchIndex(s, limit) {
		b.WriteString(s[last:m[0]])
		for _, p := range parts {
			if p.group < 0 {
				b.WriteString(p.text)
			} else if g, ok := group(s, m, p.group); ok {
				b.WriteString(g)
			}
		}
		last = m[1]
		if b.Len() > maxRegexOutput {
			return nodes.Result{}, fmt.Errorf("builtin: RegexReplace: the result grows past %d bytes", maxRegexOutput)
		}
	}
	b.WriteString(s[last:])
	return nodes.One(b.String(), nil)
}

// Interface guards.
var (
	_ nodes.Typed = (*RegexMatch)(nil)
	_ nodes.Typed = (*RegexExtract)(nil)
	_ nodes.Typed = (*RegexReplace)(nil)
)

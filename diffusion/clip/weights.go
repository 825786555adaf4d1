package clip

import (
	"math"
	"strconv"
	"strings"
)

// Segment is a run of prompt text with one weight.
type Segment struct {
	Text   string
	Weight float64
}

// Escaped parentheses are swapped for these placeholders before the weight syntax is
// parsed and swapped back after, as ComfyUI's escape_important does.
const (
	escClose = "\x00\x01"
	escOpen  = "\x00\x02"
)

func escapeImportant(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, `\)`, escClose), `\(`, escOpen)
}

func unescapeImportant(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, escClose, ")"), escOpen, "(")
}

// ParseWeights splits an (already escaped) prompt into weighted segments with ComfyUI's
// syntax: "(text)" multiplies the weight by 1.1 (nesting multiplies again), "(text:w)"
// sets it to w; square brackets are plain text.
func ParseWeights(s string, weight float64) []Segment {
	var out []Segment
	for _, x := range splitParentheses(s) {
		if len(x) >= 2 && x[0] == '(' && x[len(x)-1] == ')' {
			inner := x[1 : len(x)-1]
			w := weight * 1.1
			if i := strings.LastIndexByte(inner, ':'); i > 0 {
				if v, ok := pythonFloat(inner[i+1:]); ok {
					w = v
					inner = inner[:i]
				}
			}
			out = append(out, ParseWeights(inner, w)...)
			continue
		}
		out = append(out, Segment{Text: x, Weight: weight})
	}
	return out
}

// splitParentheses cuts the string into top-level parenthesised groups and the text
// between them (ComfyUI's parse_parentheses). An unmatched ")" drives the depth
// negative, exactly as upstream, which keeps the rest of the text together.
func splitParentheses(s string) []string {
	var out []string
	var cur strings.Builder
	depth := 0
	for _, r := range s {
		switch r {
		case '(':
			if depth == 0 {
				if cur.Len() > 0 {
					out = append(out, cur.String())
				}
				cur.Reset()
			}
			cur.WriteRune(r)
			depth++
		case ')':
			depth--
			cur.WriteRune(r)
			if depth == 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// pythonFloat parses s as Python's float() does: surrounding whitespace allowed,
// underscores between digits, "inf"/"infinity"/"nan" in any case.
func pythonFloat(s string) (float64, bool) {
	s = strings.TrimSpace(s)
	switch strings.ToLower(strings.TrimLeft(s, "+-")) {
	case "inf", "infinity":
		if strings.HasPrefix(s, "-") {
			return math.Inf(-1), true
		}
		return math.Inf(1), true
	case "nan":
		return math.NaN(), true
	}
	if strings.Contains(s, "_") {
		// An underscore must sit between two digits.
		for i := 0; i < len(s); i++ {
			if s[i] == '_' && (i == 0 || i == len(s)-1 || !isDigit(s[i-1]) || !isDigit(s[i+1])) {
				return 0, false
			}
		}
		s = strings.ReplaceAll(s, "_", "")
	}
	if s == "" || strings.ContainsAny(s, "xXpP") { // no hex floats in Python's float()
		return 0, false
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, false
	}
	return v, true
}

func isDigit(b byte) bool { return b >= '0' && b <= '9' }

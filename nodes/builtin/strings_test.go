package builtin

import (
	"testing"

	"github.com/forgeflow/forgeflow/nodes"
)

func TestStringNodes(t *testing.T) {
	tests := []struct {
		name  string
		class string
		in    nodes.Inputs
		want  any
	}{
		{"concatenate", "StringConcatenate", nodes.Inputs{"string_a": "a", "string_b": "b", "delimiter": ", "}, "a, b"},
		{"substring", "StringSubstring", nodes.Inputs{"string": "héllo", "start": int64(1), "end": int64(3)}, "él"},
		{"substring negative", "StringSubstring", nodes.Inputs{"string": "héllo", "start": int64(-3), "end": int64(-1)}, "ll"},
		{"substring past the end", "StringSubstring", nodes.Inputs{"string": "abc", "start": int64(2), "end": int64(99)}, "c"},
		{"substring reversed is empty", "StringSubstring", nodes.Inputs{"string": "abc", "start": int64(2), "end": int64(1)}, ""},
		{"length counts characters", "StringLength", nodes.Inputs{"string": "héllo ✓"}, int64(7)},
		{"upper", "CaseConverter", nodes.Inputs{"string": "abc Déf", "mode": "UPPERCASE"}, "ABC DÉF"},
		{"lower", "CaseConverter", nodes.Inputs{"string": "ABC Déf", "mode": "lowercase"}, "abc déf"},
		{"capitalize", "CaseConverter", nodes.Inputs{"string": "hELLO wORLD", "mode": "Capitalize"}, "Hello world"},
		{"title", "CaseConverter", nodes.Inputs{"string": "they're bill's friends", "mode": "Title Case"}, "They'Re Bill'S Friends"},
		{"trim both", "StringTrim", nodes.Inputs{"string": " \t\x1fx y\u3000\n", "mode": "Both"}, "x y"},
		{"trim left", "StringTrim", nodes.Inputs{"string": "  x  ", "mode": "Left"}, "x  "},
		{"trim right", "StringTrim", nodes.Inputs{"string": "  x  ", "mode": "Right"}, "  x"},
		{"replace", "StringReplace", nodes.Inputs{"string": "a-b-c", "find": "-", "replace": "+"}, "a+b+c"},
		{"replace empty find", "StringReplace", nodes.Inputs{"string": "ab", "find": "", "replace": "-"}, "-a-b-"},
		{"contains", "StringContains", nodes.Inputs{"string": "Hello", "substring": "ell", "case_sensitive": true}, true},
		{"contains case", "StringContains", nodes.Inputs{"string": "Hello", "substring": "ELL", "case_sensitive": true}, false},
		{"contains insensitive", "StringContains", nodes.Inputs{"string": "Hello", "substring": "ELL", "case_sensitive": false}, true},
		{"starts with", "StringCompare", nodes.Inputs{"string_a": "Hello", "string_b": "he", "mode": "Starts With", "case_sensitive": false}, true},
		{"ends with", "StringCompare", nodes.Inputs{"string_a": "Hello", "string_b": "LO", "mode": "Ends With", "case_sensitive": true}, false},
		{"equal", "StringCompare", nodes.Inputs{"string_a": "a", "string_b": "a", "mode": "Equal", "case_sensitive": true}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := mustRun(t, tc.class, tc.in)
			if res.Outputs[0] != tc.want {
				t.Fatalf("got %#v, want %#v", res.Outputs[0], tc.want)
			}
		})
	}
	t.Run("missing input", func(t *testing.T) {
		_, err := run(t, Options{}, nil, "StringConcatenate", nodes.Inputs{"string_a": "a"})
		wantErr(t, err, "missing")
	})
}

package graph

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

// Literal coercion, as ComfyUI's validate_inputs (execution.py) converts a literal input
// before a node sees it: int(v) for INT, float(v) for FLOAT, str(v) for STRING and
// bool(v) for BOOLEAN, with Python's rules (int("12") works, int("1.5") does not,
// int(2.7) truncates, bool("false") is true). A list literal arrives wrapped as
// {"__value__": [...]} (so that it is not read as a link) and is unwrapped first.
//
// Representation of the results:
//   - INT: int64, or uint64 for a value in (2^63-1, 2^64-1]: ComfyUI's seeds go up to
//     2^64-1 (torch.manual_seed takes a uint64). Values below -2^63 or above 2^64-1 are
//     refused.
//   - FLOAT: float64; NaN and ±Inf are refused (ComfyUI lets them through; no node can
//     use them, and "nan" as a string would otherwise pass every min/max check).
//   - STRING: string, numbers written as Python's str() writes them ("1.0", "1e-05").
//   - BOOLEAN: bool, by Python truthiness.
//   - COMBO: the string itself; membership in the choices is Validate's job. A combo
//     with the "multiselect" option takes a list of strings ([]string).
//   - any other type: the value unchanged (after unwrapping __value__).

// CoerceError reports a literal that cannot be converted to its input's type. Msg is
// Python's exception message for the same conversion, which ComfyUI shows users.
type CoerceError struct {
	Input string
	Type  string
	Value any
	Msg   string
}

func (e *CoerceError) Error() string {
	return fmt.Sprintf("graph: input %q: cannot convert %s to %s: %s", e.Input, pyStr(e.Value), e.Type, e.Msg)
}

// Coerce converts literal v for input in, as the executor passes it to a node.
func Coerce(in *Input, v any) (any, error) {
	v = unwrapValue(v)
	switch in.Type {
	case TypeInt:
		n, err := pyInt(v)
		if err != nil {
			return nil, &CoerceError{in.Name, in.Type, v, err.Error()}
		}
		return intValue(in, n, v)
	case TypeFloat:
		f, err := pyFloat(v)
		if err != nil {
			return nil, &CoerceError{in.Name, in.Type, v, err.Error()}
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, &CoerceError{in.Name, in.Type, v, "value is not a finite number"}
		}
		return f, nil
	case TypeString:
		return pyStr(v), nil
	case TypeBoolean:
		return pyBool(v), nil
	case TypeCombo:
		if s, ok := v.(string); ok {
			return s, nil
		}
		if list, ok := comboMulti(in, v); ok {
			return list, nil
		}
		return nil, &CoerceError{in.Name, in.Type, v, "a combo value must be a string"}
	}
	return v, nil
}

var (
	minInt64  = big.NewInt(math.MinInt64)
	maxUint64 = new(big.Int).SetUint64(math.MaxUint64)
)

// intValue returns n as an int64, or as a uint64 above 2^63-1 (a seed).
func intValue(in *Input, n *big.Int, v any) (any, error) {
	if n.Cmp(minInt64) < 0 || n.Cmp(maxUint64) > 0 {
		return nil, &CoerceError{in.Name, in.Type, v, "value is outside the 64-bit range [-2^63, 2^64-1]"}
	}
	if n.IsInt64() {
		return n.Int64(), nil
	}
	return n.Uint64(), nil
}

// unwrapValue returns the list inside {"__value__": [...]}, or v.
func unwrapValue(v any) any {
	if m, ok := v.(map[string]any); ok {
		if inner, ok := m["__value__"]; ok {
			return inner
		}
	}
	return v
}

// pyTypeName is Python's type name of a decoded JSON value, for error messages.
func pyTypeName(v any) string {
	switch x := v.(type) {
	case nil:
		return "NoneType"
	case bool:
		return "bool"
	case string:
		return "str"
	case []any:
		return "list"
	case map[string]any:
		return "dict"
	case float32, float64:
		return "float"
	case json.Number:
		if isIntLiteral(string(x)) {
			return "int"
		}
		return "float"
	}
	return "int"
}

func isIntLiteral(s string) bool { return !strings.ContainsAny(s, ".eE") }

// pyInt is Python's int(v) for a decoded JSON value.
func pyInt(v any) (*big.Int, error) {
	switch x := v.(type) {
	case bool:
		if x {
			return big.NewInt(1), nil
		}
		return big.NewInt(0), nil
	case json.Number:
		if isIntLiteral(x.String()) {
			n, ok := new(big.Int).SetString(x.String(), 10)
			if !ok {
				return nil, fmt.Errorf("invalid literal for int() with base 10: %s", pyRepr(x.String()))
			}
			return n, nil
		}
		f, err := strconv.ParseFloat(x.String(), 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return nil, fmt.Errorf("could not convert string to float: %s", pyRepr(x.String()))
		}
		return floatToInt(f)
	case float64:
		return floatToInt(x)
	case float32:
		return floatToInt(float64(x))
	case int:
		return big.NewInt(int64(x)), nil
	case int64:
		return big.NewInt(x), nil
	case uint64:
		return new(big.Int).SetUint64(x), nil
	case string:
		s, ok := pyNumericText(x, false)
		if ok {
			if n, ok := new(big.Int).SetString(s, 10); ok {
				return n, nil
			}
		}
		return nil, fmt.Errorf("invalid literal for int() with base 10: %s", pyRepr(x))
	}
	return nil, fmt.Errorf("int() argument must be a string, a bytes-like object or a real number, not '%s'", pyTypeName(v))
}

func floatToInt(f float64) (*big.Int, error) {
	switch {
	case math.IsNaN(f):
		return nil, errors.New("cannot convert float NaN to integer")
	case math.IsInf(f, 0):
		return nil, errors.New("cannot convert float infinity to integer")
	}
	n, _ := big.NewFloat(math.Trunc(f)).Int(nil)
	return n, nil
}

// pyNumericText checks s as Python's int() (float=false) or float() (float=true) read
// a string: surrounding white space allowed, an optional sign, single underscores only
// between digits. It returns the text without white space and underscores.
func pyNumericText(s string, float bool) (string, bool) {
	s = strings.TrimFunc(s, unicode.IsSpace)
	if s == "" {
		return "", false
	}
	body := strings.TrimLeft(s, "+-")
	if len(s)-len(body) > 1 {
		return "", false
	}
	if float {
		switch strings.ToLower(body) {
		case "inf", "infinity", "nan":
			return s, true
		}
	}
	var b strings.Builder
	prevDigit := false
	for i, r := range body {
		switch {
		case r >= '0' && r <= '9':
			prevDigit = true
		case r == '_':
			if !prevDigit || i+1 >= len(body) || body[i+1] < '0' || body[i+1] > '9' {
				return "", false
			}
			prevDigit = false
			continue
		case float && (r == '.' || r == 'e' || r == 'E' || r == '+' || r == '-'):
			prevDigit = false
		default:
			return "", false
		}
		b.WriteRune(r)
	}
	out := b.String()
	if !strings.ContainsAny(out, "0123456789") {
		return "", false
	}
	if s[0] == '-' {
		out = "-" + out
	}
	return out, true
}

// pyFloat is Python's float(v) for a decoded JSON value.
func pyFloat(v any) (float64, error) {
	switch x := v.(type) {
	case bool:
		if x {
			return 1, nil
		}
		return 0, nil
	case json.Number:
		f, err := strconv.ParseFloat(x.String(), 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return 0, fmt.Errorf("could not convert string to float: %s", pyRepr(x.String()))
		}
		return f, nil
	case float64:
		return x, nil
	case float32:
		return float64(x), nil
	case int:
		return float64(x), nil
	case int64:
		return float64(x), nil
	case uint64:
		return float64(x), nil
	case string:
		if s, ok := pyNumericText(x, true); ok {
			f, err := strconv.ParseFloat(s, 64)
			if err == nil || errors.Is(err, strconv.ErrRange) {
				return f, nil
			}
		}
		return 0, fmt.Errorf("could not convert string to float: %s", pyRepr(x))
	}
	return 0, fmt.Errorf("float() argument must be a string or a real number, not '%s'", pyTypeName(v))
}

// pyBool is Python's bool(v).
func pyBool(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case string:
		return x != ""
	case json.Number:
		f, err := strconv.ParseFloat(x.String(), 64)
		return err != nil || f != 0
	case float64:
		return x != 0
	case int:
		return x != 0
	case int64:
		return x != 0
	case uint64:
		return x != 0
	case []any:
		return len(x) > 0
	case map[string]any:
		return len(x) > 0
	}
	return true
}

// pyFloatRepr writes f as Python's repr(float) does: the shortest text that reads back
// exactly, with ".0" on integral values and exponent notation below 1e-4 or from 1e16.
func pyFloatRepr(f float64) string {
	switch {
	case math.IsNaN(f):
		return "nan"
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	}
	if f == 0 {
		if math.Signbit(f) {
			return "-0.0"
		}
		return "0.0"
	}
	abs := math.Abs(f)
	if abs >= 1e16 || abs < 1e-4 {
		s := strconv.FormatFloat(f, 'e', -1, 64) // 1e+16, 1.5e-05
		mant, exp, _ := strings.Cut(s, "e")
		sign := exp[0]
		digits := strings.TrimLeft(exp[1:], "0")
		if len(digits) < 2 {
			digits = strings.Repeat("0", 2-len(digits)) + digits
		}
		return mant + "e" + string(sign) + digits
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return s
}

// pyNumberText writes a JSON number as Python prints the value json.loads gives.
func pyNumberText(n json.Number) string {
	if isIntLiteral(n.String()) {
		if b, ok := new(big.Int).SetString(n.String(), 10); ok {
			return b.String()
		}
		return n.String()
	}
	f, _ := strconv.ParseFloat(n.String(), 64)
	return pyFloatRepr(f)
}

// pyStr is Python's str(v) for a decoded JSON value.
func pyStr(v any) string {
	switch x := v.(type) {
	case string:
		return x
	default:
		return pyRepr(x)
	}
}

// pyRepr is Python's repr(v) for a decoded JSON value.
func pyRepr(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case bool:
		if x {
			return "True"
		}
		return "False"
	case string:
		return pyStrRepr(x)
	case json.Number:
		return pyNumberText(x)
	case float64:
		return pyFloatRepr(x)
	case float32:
		return pyFloatRepr(float64(x))
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case uint64:
		return strconv.FormatUint(x, 10)
	case *big.Int:
		return x.String()
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = pyRepr(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case []string:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = pyStrRepr(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = pyStrRepr(k) + ": " + pyRepr(x[k])
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	return fmt.Sprint(v)
}

// pyStrRepr quotes s as Python's repr(str): single quotes unless s holds a single
// quote and no double quote; backslash escapes for the quote, \\, \n, \r, \t and other
// control characters.
func pyStrRepr(s string) string {
	q := byte('\'')
	if strings.Contains(s, "'") && !strings.Contains(s, `"`) {
		q = '"'
	}
	var b strings.Builder
	b.WriteByte(q)
	for _, r := range s {
		switch {
		case r == rune(q) || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte(q)
	return b.String()
}

// comboMulti returns the strings of a list value for a multiselect combo.
func comboMulti(in *Input, v any) ([]string, bool) {
	list, ok := v.([]any)
	if !ok || in.Multiselect != On {
		return nil, false
	}
	out := make([]string, len(list))
	for i, e := range list {
		s, ok := e.(string)
		if !ok {
			return nil, false
		}
		out[i] = s
	}
	return out, true
}

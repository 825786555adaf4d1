package nodes

import (
	"fmt"
)

// Inputs are a node's resolved input values by input name.
type Inputs map[string]any

// Has reports whether the input is present.
func (in Inputs) Has(name string) bool {
	_, ok := in[name]
	return ok
}

// Int returns an INT input.
func (in Inputs) Int(name string) (int64, error) {
	switch v := in[name].(type) {
	case int64:
		return v, nil
	case int:
		return int64(v), nil
	case float64:
		if v == float64(int64(v)) {
			return int64(v), nil
		}
	}
	return 0, in.typeErr(name, "INT")
}

// Uint returns an unsigned INT input (a seed, which may exceed 2^63-1).
func (in Inputs) Uint(name string) (uint64, error) {
	switch v := in[name].(type) {
	case uint64:
		return v, nil
	case int64:
		if v >= 0 {
			return uint64(v), nil
		}
	case int:
		if v >= 0 {
			return uint64(v), nil
		}
	}
	return 0, in.typeErr(name, "unsigned INT")
}

// Float returns a FLOAT input (an INT value is accepted, as ComfyUI does).
func (in Inputs) Float(name string) (float64, error) {
	switch v := in[name].(type) {
	case float64:
		return v, nil
	case int64:
		return float64(v), nil
	case int:
		return float64(v), nil
	}
	return 0, in.typeErr(name, "FLOAT")
}

// String returns a STRING or COMBO input.
func (in Inputs) String(name string) (string, error) {
	if v, ok := in[name].(string); ok {
		return v, nil
	}
	return "", in.typeErr(name, "STRING")
}

// Bool returns a BOOLEAN input.
func (in Inputs) Bool(name string) (bool, error) {
	if v, ok := in[name].(bool); ok {
		return v, nil
	}
	return false, in.typeErr(name, "BOOLEAN")
}

func (in Inputs) typeErr(name, want string) error {
	v, ok := in[name]
	if !ok {
		return fmt.Errorf("nodes: input %q: missing", name)
	}
	return fmt.Errorf("nodes: input %q: want %s, got %T", name, want, v)
}

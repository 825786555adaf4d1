package graph

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
)

// The UI workflow format is open-ended: the front end and its extensions add keys to
// nodes, slots, links and the workflow itself. The workflow types decode the keys the
// converter needs into typed fields and keep every other key verbatim, so that
// decoding and encoding a workflow loses nothing. rawFields is that verbatim part.

// rawFields holds the members of a JSON object that have no typed field.
type rawFields map[string]json.RawMessage

// field binds a JSON key to a pointer to the typed field that holds it.
type field struct {
	key string
	ptr any
}

// decodeObject decodes a JSON object: known keys into their fields, the rest into
// *extra. present records which known keys appeared, so that encoding writes back
// exactly the keys that were there (plus any set to a non-zero value since).
func decodeObject(data []byte, what string, extra *rawFields, present *[]string, fields ...field) error {
	if jsonKind(data) != "an object" {
		return fmt.Errorf("%s is %s, want an object", what, jsonKind(data))
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(data, &all); err != nil {
		return err
	}
	*present = (*present)[:0]
	for _, f := range fields {
		raw, ok := all[f.key]
		if !ok {
			continue
		}
		delete(all, f.key)
		*present = append(*present, f.key)
		if err := decodeNumbers(raw, f.ptr); err != nil {
			return fmt.Errorf("%s: key %q: %s", what, f.key, shortJSONError(raw, err))
		}
	}
	if len(all) == 0 {
		all = nil
	}
	*extra = all
	return nil
}

// shortJSONError rewords a decoder error about a field value.
func shortJSONError(raw []byte, err error) string {
	if _, ok := err.(*json.UnmarshalTypeError); ok {
		return "unexpected " + jsonKind(raw)
	}
	return err.Error()
}

// encodeObject writes extra plus the known fields that were present when decoded or
// that now hold a non-zero value. Keys come out sorted (encoding/json's map order).
func encodeObject(extra rawFields, present []string, fields ...field) ([]byte, error) {
	out := make(map[string]json.RawMessage, len(extra)+len(fields))
	for k, v := range extra {
		out[k] = v
	}
	was := map[string]bool{}
	for _, k := range present {
		was[k] = true
	}
	for _, f := range fields {
		v := reflect.ValueOf(f.ptr).Elem()
		if !was[f.key] && v.IsZero() {
			continue
		}
		b, err := json.Marshal(v.Interface())
		if err != nil {
			return nil, err
		}
		out[f.key] = b
	}
	return json.Marshal(out)
}

// ID is a node or link id of the UI format. litegraph writes numbers; the version-1
// schema and extensions also allow strings. The text form is kept, and an id that was
// a number is written back as a number.
type ID struct {
	s   string
	str bool // written as a JSON string
}

// NumID returns the numeric id n.
func NumID(n int64) ID { return ID{s: strconv.FormatInt(n, 10)} }

// StrID returns an id written as a JSON string.
func StrID(s string) ID { return ID{s: s, str: true} }

// String returns the id's text, as used for prompt node ids.
func (id ID) String() string { return id.s }

// IsZero reports whether the id is unset.
func (id ID) IsZero() bool { return id.s == "" && !id.str }

// Int returns the id as an integer, if it is one.
func (id ID) Int() (int64, bool) {
	n, err := strconv.ParseInt(id.s, 10, 64)
	return n, err == nil
}

// MarshalJSON writes the id as it was read.
func (id ID) MarshalJSON() ([]byte, error) {
	if id.str || id.s == "" {
		return json.Marshal(id.s)
	}
	return []byte(id.s), nil
}

// UnmarshalJSON accepts a number (kept verbatim) or a string.
func (id *ID) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) > 0 && b[0] == '"':
		id.str = true
		return json.Unmarshal(b, &id.s)
	case bytes.Equal(b, []byte("null")):
		*id = ID{}
		return nil
	default:
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("id is %s, want a number or a string", jsonKind(b))
		}
		id.s, id.str = n.String(), false
		return nil
	}
}

package graph

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ParseError reports a malformed prompt or workflow: bad JSON syntax, or a value of the
// wrong shape. Offset is the byte offset in the input where the problem was found (-1
// when unknown); NodeID names the node when the problem is inside one.
type ParseError struct {
	What   string // "prompt" or "workflow"
	Offset int64
	NodeID string
	Msg    string
	Err    error // the underlying decoder error, if any
}

func (e *ParseError) Error() string {
	var b strings.Builder
	b.WriteString("graph: ")
	b.WriteString(e.What)
	if e.NodeID != "" {
		fmt.Fprintf(&b, ": node %q", e.NodeID)
	}
	if e.Offset >= 0 {
		fmt.Fprintf(&b, ": at byte %d", e.Offset)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

func (e *ParseError) Unwrap() error { return e.Err }

// jsonError turns a decoder error into a ParseError. Offsets are 0-based indices of
// the offending byte (encoding/json counts the bytes read, one more); base is added to
// offsets that are relative to a sub-document. A syntax error is located again on the
// whole of data, since the decoder's streaming offsets are not always exact.
func jsonError(what string, data []byte, base int64, err error) *ParseError {
	pe := &ParseError{What: what, Offset: -1, Err: err}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	if errors.As(err, &syn) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		var v any
		if e := json.Unmarshal(data, &v); e != nil && errors.As(e, &syn) {
			err = syn
		}
	}
	switch {
	case errors.As(err, &syn):
		off := syn.Offset - 1
		msg := syn.Error()
		if strings.HasPrefix(msg, "unexpected end of JSON input") {
			off, msg = int64(len(data)), "unexpected end of input"
		}
		off = max(0, off)
		pe.Offset = base + off
		pe.Msg = "invalid JSON: " + msg
		// Python's json module (and so ComfyUI) accepts NaN and Infinity; JSON does not.
		// Say so, rather than "invalid character 'N'".
	nan:
		for _, start := range []int64{off - 1, off} {
			if start < 0 || start >= int64(len(data)) {
				continue
			}
			for _, tok := range []string{"NaN", "Infinity", "-Infinity"} {
				if bytes.HasPrefix(data[start:], []byte(tok)) {
					pe.Offset = base + start
					pe.Msg = fmt.Sprintf("invalid JSON: %s is not a JSON number (write it as a string)", tok)
					break nan
				}
			}
		}
	case errors.As(err, &typ):
		pe.Offset = base + min(max(typ.Offset, 0), int64(len(data)))
		pe.Msg = fmt.Sprintf("invalid JSON: %s value where %s was expected", typ.Value, typ.Type)
		if typ.Field != "" {
			pe.Msg += " (field " + typ.Field + ")"
		}
	default:
		pe.Msg = "invalid JSON: " + err.Error()
	}
	return pe
}

// decodeNumbers decodes data into v with numbers kept as json.Number and nothing after
// the value but white space.
func decodeNumbers(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return &json.SyntaxError{Offset: dec.InputOffset()}
	}
	return nil
}

// jsonKind names the kind of a raw JSON value for error messages.
func jsonKind(raw []byte) string {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

// rawMember is one member of a JSON object with the byte offset of its value.
type rawMember struct {
	Key    string
	Value  json.RawMessage
	Offset int64
}

// objectMembers splits a JSON object into its members in document order, keeping each
// value's offset (relative to data) for error messages.
func objectMembers(what string, data []byte) ([]rawMember, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, jsonError(what, data, 0, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, &ParseError{What: what, Offset: 0, Msg: fmt.Sprintf("top level is %s, want an object", jsonKind(data))}
	}
	var out []rawMember
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, jsonError(what, data, 0, err)
		}
		key, _ := tok.(string)
		off := dec.InputOffset()
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, jsonError(what, data, 0, err)
		}
		// InputOffset is after the key; skip the colon and blanks to point at the value.
		for off < int64(len(data)) && (data[off] == ':' || data[off] == ' ' || data[off] == '\t' || data[off] == '\n' || data[off] == '\r') {
			off++
		}
		out = append(out, rawMember{Key: key, Value: v, Offset: off})
	}
	if _, err := dec.Token(); err != nil {
		return nil, jsonError(what, data, 0, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, jsonError(what, data, 0, &json.SyntaxError{})
	}
	return out, nil
}

// ParsePrompt decodes an API prompt ({"id": {"class_type", "inputs", "_meta"}}).
//
// Numbers are kept as json.Number, so a 64-bit seed keeps every digit. Malformed JSON
// gives a *ParseError with the byte offset; a node of the wrong shape (not an object,
// class_type missing or not a string, inputs not an object) gives a *ParseError naming
// the node id and the offset of the node. Keys other than class_type, inputs and _meta
// (the front end's "is_changed", for one) are ignored, as ComfyUI's executor ignores
// them. An empty object parses to an empty prompt; Validate reports it.
func ParsePrompt(data []byte) (Prompt, error) {
	members, err := objectMembers("prompt", data)
	if err != nil {
		return nil, err
	}
	p := make(Prompt, len(members))
	for _, m := range members {
		if _, dup := p[m.Key]; dup {
			return nil, &ParseError{What: "prompt", NodeID: m.Key, Offset: m.Offset, Msg: "duplicate node id"}
		}
		n, err := parsePromptNode(m)
		if err != nil {
			return nil, err
		}
		p[m.Key] = n
	}
	return p, nil
}

func parsePromptNode(m rawMember) (*Node, error) {
	fail := func(format string, args ...any) error {
		return &ParseError{What: "prompt", NodeID: m.Key, Offset: m.Offset, Msg: fmt.Sprintf(format, args...)}
	}
	if jsonKind(m.Value) != "an object" {
		return nil, fail("node is %s, want an object", jsonKind(m.Value))
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(m.Value, &fields); err != nil {
		return nil, jsonError("prompt", m.Value, m.Offset, err)
	}
	n := &Node{Inputs: map[string]any{}}
	ct, ok := fields["class_type"]
	if !ok {
		return nil, fail("missing class_type")
	}
	if err := json.Unmarshal(ct, &n.ClassType); err != nil {
		return nil, fail("class_type is %s, want a string", jsonKind(ct))
	}
	if n.ClassType == "" {
		return nil, fail("class_type is empty")
	}
	if in, ok := fields["inputs"]; ok && jsonKind(in) != "null" {
		if jsonKind(in) != "an object" {
			return nil, fail("inputs is %s, want an object", jsonKind(in))
		}
		if err := decodeNumbers(in, &n.Inputs); err != nil {
			return nil, fail("inputs: %v", err)
		}
	}
	if meta, ok := fields["_meta"]; ok && jsonKind(meta) != "null" {
		if jsonKind(meta) != "an object" {
			return nil, fail("_meta is %s, want an object", jsonKind(meta))
		}
		var mm map[string]any
		if err := json.Unmarshal(meta, &mm); err != nil {
			return nil, fail("_meta: %v", err)
		}
		n.Meta = &Meta{}
		if t, ok := mm["title"].(string); ok {
			n.Meta.Title = t
		}
	}
	return n, nil
}

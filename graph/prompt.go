package graph

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// Prompt is ComfyUI's API prompt: node id → node.
type Prompt map[string]*Node

// Node is one entry of an API prompt.
//
// Inputs hold either literal values or links. Literals are decoded as ComfyUI's JSON
// carries them: json.Number for numbers (so a 64-bit seed keeps every digit), string,
// bool, nil, or []any / map[string]any for structured literals. A link is a two-element
// []any{string node id, json.Number output slot}; use AsLink to tell them apart.
type Node struct {
	ClassType string         `json:"class_type"`
	Inputs    map[string]any `json:"inputs"`
	Meta      *Meta          `json:"_meta,omitempty"`
}

// Meta is the optional "_meta" object of a prompt node.
type Meta struct {
	Title string `json:"title,omitempty"`
}

// Link is a reference from an input to output Slot of node NodeID.
type Link struct {
	NodeID string
	Slot   int
}

// MarshalJSON writes the link as ComfyUI does: ["id", slot].
func (l Link) MarshalJSON() ([]byte, error) {
	return json.Marshal([]any{l.NodeID, l.Slot})
}

// AsLink reports whether v is a link (["id", slot], or a Link value) and returns it.
// It accepts the node id as a string or a number, and the slot as any integral number,
// as ComfyUI's executor does.
func AsLink(v any) (Link, bool) {
	if l, ok := v.(Link); ok {
		return l, true
	}
	arr, ok := v.([]any)
	if !ok || len(arr) != 2 {
		return Link{}, false
	}
	var id string
	switch x := arr[0].(type) {
	case string:
		id = x
	case json.Number:
		id = x.String()
	case float64:
		id = strconv.FormatFloat(x, 'f', -1, 64)
	case int:
		id = strconv.Itoa(x)
	default:
		return Link{}, false
	}
	var slot int
	switch x := arr[1].(type) {
	case json.Number:
		n, err := x.Int64()
		if err != nil {
			return Link{}, false
		}
		slot = int(n)
	case float64:
		if x != float64(int(x)) {
			return Link{}, false
		}
		slot = int(x)
	case int:
		slot = x
	default:
		return Link{}, false
	}
	return Link{NodeID: id, Slot: slot}, true
}

// NewLink returns the prompt form of a link, ready to store in Node.Inputs.
func NewLink(nodeID string, slot int) []any {
	return []any{nodeID, json.Number(strconv.Itoa(slot))}
}

// String formats the link for error messages.
func (l Link) String() string { return fmt.Sprintf("[%q, %d]", l.NodeID, l.Slot) }

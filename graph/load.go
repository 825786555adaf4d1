package graph

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Format says what kind of document Load found.
type Format int

// The documents Load accepts.
const (
	FormatAPI Format = iota + 1 // an API prompt
	FormatUI                    // a UI workflow
	FormatPNG                   // a PNG carrying "prompt" and/or "workflow" text chunks
)

func (f Format) String() string {
	switch f {
	case FormatAPI:
		return "api"
	case FormatUI:
		return "ui"
	case FormatPNG:
		return "png"
	}
	return "unknown"
}

// Document is what Load read. Prompt, Workflow or both are set: an API file gives a
// Prompt, a UI file a Workflow, a PNG whatever chunks it carries.
type Document struct {
	Format   Format
	Prompt   Prompt
	Workflow *Workflow
}

// ToPrompt returns the prompt to run: the document's own prompt when it has one (for a
// PNG, exactly what ComfyUI ran), else the workflow converted with s.
func (d *Document) ToPrompt(s Schemas) (Prompt, error) {
	if d.Prompt != nil {
		return d.Prompt, nil
	}
	if d.Workflow == nil {
		return nil, fmt.Errorf("graph: document has neither a prompt nor a workflow")
	}
	return Convert(d.Workflow, s)
}

// Load reads an API prompt JSON, a UI workflow JSON, or a PNG whose "prompt" or
// "workflow" text chunks hold them, telling them apart by content: the PNG signature,
// else a top-level "nodes" array (UI), else an object of nodes (API). An API prompt
// wrapped as a /prompt request body ({"prompt": {...}}) is accepted too.
func Load(data []byte) (*Document, error) {
	if IsPNG(data) {
		return loadPNG(data)
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // a UTF-8 BOM some editors add
	members, err := objectMembers("document", data)
	if err != nil {
		return nil, err
	}
	for _, m := range members {
		if m.Key == "nodes" && jsonKind(m.Value) == "an array" {
			w, err := ParseWorkflow(data)
			if err != nil {
				return nil, err
			}
			return &Document{Format: FormatUI, Workflow: w}, nil
		}
	}
	if isPromptRequest(members) {
		for _, m := range members {
			if m.Key == "prompt" {
				p, err := ParsePrompt(m.Value)
				if err != nil {
					shiftOffset(err, m.Offset)
					return nil, err
				}
				return &Document{Format: FormatAPI, Prompt: p}, nil
			}
		}
	}
	p, err := ParsePrompt(data)
	if err != nil {
		return nil, err
	}
	return &Document{Format: FormatAPI, Prompt: p}, nil
}

// isPromptRequest reports whether the members look like a /prompt request body: a
// "prompt" object beside keys such as client_id or extra_data, and no node objects.
func isPromptRequest(members []rawMember) bool {
	hasPrompt := false
	for _, m := range members {
		switch m.Key {
		case "prompt":
			// A node whose id is "prompt" has a class_type; a wrapped prompt does not.
			var probe map[string]json.RawMessage
			if jsonKind(m.Value) != "an object" || json.Unmarshal(m.Value, &probe) != nil {
				return false
			}
			if _, isNode := probe["class_type"]; isNode {
				return false
			}
			hasPrompt = true
		case "client_id", "extra_data", "prompt_id", "number", "front", "partial_execution_targets":
		default:
			return false
		}
	}
	return hasPrompt
}

func shiftOffset(err error, by int64) {
	if pe, ok := err.(*ParseError); ok && pe.Offset >= 0 {
		pe.Offset += by
	}
}

func loadPNG(data []byte) (*Document, error) {
	chunks, err := ReadPNGText(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	doc := &Document{Format: FormatPNG}
	if s, ok := PNGText(chunks, "prompt"); ok {
		p, err := ParsePrompt([]byte(s))
		if err != nil {
			return nil, fmt.Errorf("graph: png \"prompt\" chunk: %w", err)
		}
		doc.Prompt = p
	}
	if s, ok := PNGText(chunks, "workflow"); ok {
		w, err := ParseWorkflow([]byte(s))
		if err != nil {
			return nil, fmt.Errorf("graph: png \"workflow\" chunk: %w", err)
		}
		doc.Workflow = w
	}
	if doc.Prompt == nil && doc.Workflow == nil {
		return nil, fmt.Errorf("graph: png has no \"prompt\" or \"workflow\" text chunk")
	}
	return doc, nil
}

// EncodePrompt writes a prompt as JSON with node ids in numeric order where they are
// numbers (encoding/json sorts map keys as strings: "10" before "9").
func EncodePrompt(p Prompt) ([]byte, error) {
	ids := SortedIDs(p)
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, id := range ids {
		if i > 0 {
			buf.WriteByte(',')
		}
		k, _ := json.Marshal(id)
		buf.Write(k)
		buf.WriteByte(':')
		v, err := json.Marshal(p[id])
		if err != nil {
			return nil, fmt.Errorf("graph: encode node %q: %w", id, err)
		}
		buf.Write(v)
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

package graph

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParsePrompt(t *testing.T) {
	data := []byte(`{
  "3": {"class_type": "KSampler", "inputs": {"seed": 18446744073709551615, "cfg": 7.5,
        "model": ["4", 0], "sampler_name": "euler", "flag": true, "none": null},
        "_meta": {"title": "My sampler"}, "is_changed": ["x"]},
  "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
  "5": {"class_type": "SaveImage"}
}`)
	p, err := ParsePrompt(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 3 {
		t.Fatalf("len = %d", len(p))
	}
	n := p["3"]
	if n.ClassType != "KSampler" || n.Meta == nil || n.Meta.Title != "My sampler" {
		t.Errorf("node 3 = %+v", n)
	}
	if got := n.Inputs["seed"]; got != json.Number("18446744073709551615") {
		t.Errorf("seed = %#v, want the exact json.Number", got)
	}
	if l, ok := AsLink(n.Inputs["model"]); !ok || l != (Link{"4", 0}) {
		t.Errorf("model link = %v %v", l, ok)
	}
	if _, ok := AsLink(n.Inputs["sampler_name"]); ok {
		t.Errorf("a string is not a link")
	}
	if p["5"].Inputs == nil || len(p["5"].Inputs) != 0 {
		t.Errorf("missing inputs should decode as an empty map, got %#v", p["5"].Inputs)
	}
	if p["4"].Meta != nil {
		t.Errorf("no _meta should leave Meta nil")
	}
}

func TestParsePromptErrors(t *testing.T) {
	tests := []struct {
		name   string
		data   string
		want   string
		offset int64
		node   string
	}{
		{"empty input", ``, "unexpected end", 0, ""},
		{"syntax", `{"1": {"class_type": "A",, }}`, "invalid JSON", 25, ""},
		{"truncated", `{"1": {"class_type": "A"`, "unexpected end", 24, ""},
		{"nan literal", `{"1": {"class_type": "A", "inputs": {"x": NaN}}}`, "NaN is not a JSON number", 42, ""},
		{"infinity literal", `{"1": {"class_type": "A", "inputs": {"x": -Infinity}}}`, "-Infinity is not a JSON number", 42, ""},
		{"top-level array", `[1, 2]`, "top level is an array", 0, ""},
		{"trailing data", `{} {}`, "after top-level value", 3, ""},
		{"node not object", `{"7": [1, 2]}`, "node is an array", 6, "7"},
		{"missing class_type", `{"1": {"inputs": {}}}`, "missing class_type", 6, "1"},
		{"class_type number", `{"1": {"class_type": 5}}`, "class_type is a number", 6, "1"},
		{"class_type empty", `{"1": {"class_type": ""}}`, "class_type is empty", 6, "1"},
		{"inputs array", ` {"12": {"class_type": "A", "inputs": []}}`, "inputs is an array", 8, "12"},
		{"meta string", `{"1": {"class_type": "A", "_meta": "x"}}`, "_meta is a string", 6, "1"},
		{"duplicate id", `{"1": {"class_type": "A"}, "1": {"class_type": "B"}}`, "duplicate node id", 32, "1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePrompt([]byte(tc.data))
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v (%T), want *ParseError", err, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %q, want substring %q", err, tc.want)
			}
			if pe.Offset != tc.offset {
				t.Errorf("offset = %d, want %d (%v)", pe.Offset, tc.offset, err)
			}
			if pe.NodeID != tc.node {
				t.Errorf("node = %q, want %q", pe.NodeID, tc.node)
			}
			if !strings.HasPrefix(err.Error(), "graph: prompt") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

// sameJSON compares two JSON documents as values (numbers by their text).
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := decodeNumbers(a, &va); err != nil {
		t.Fatalf("decode a: %v", err)
	}
	if err := decodeNumbers(b, &vb); err != nil {
		t.Fatalf("decode b: %v", err)
	}
	return reflect.DeepEqual(va, vb)
}

const workflowV04 = `{"last_node_id": 9, "last_link_id": 9, "future_key": {"x": [1, 2.50]},
 "nodes": [
  {"id": 3, "type": "KSampler", "pos": [10, 20], "size": {"0": 315, "1": 262}, "flags": {}, "order": 1,
   "mode": 0, "inputs": [{"name": "model", "type": "MODEL", "link": 1, "shape": 7},
     {"name": "seed", "type": "INT", "link": null, "widget": {"name": "seed", "extra": 1}}],
   "outputs": [{"name": "LATENT", "type": "LATENT", "links": [9], "slot_index": 0}],
   "properties": {"Node name for S&R": "KSampler"},
   "widgets_values": [156680208700286, "randomize", 20, 8.0, "euler", "normal", 1]},
  {"id": "str-id", "type": "Note", "widgets_values": {"text": "hi"}, "color": "#432"},
  {"id": 4, "type": "Loader", "inputs": null, "outputs": [{"name": "MODEL", "type": ["a", "b"], "links": null}]}
 ],
 "links": [[1, 4, 0, 3, 0, "MODEL"], [9, 3, 0, 5, 0, "LATENT", "extra-element"]],
 "groups": [{"title": "G", "bounding": [0, 0, 10, 10], "color": "#fff"}],
 "config": {}, "extra": {"ds": {"scale": 1.1}}, "version": 0.4}`

const workflowV1 = `{"id": "0c5e", "revision": 0, "last_node_id": 2, "last_link_id": 1, "version": 1,
 "state": {"lastNodeId": 2, "lastLinkId": 1},
 "nodes": [{"id": 1, "type": "A", "mode": 4, "outputs": [{"name": "X", "type": "X", "links": [1]}]},
           {"id": 2, "type": "B", "inputs": [{"name": "x", "type": "X", "link": 1}]}],
 "links": [{"id": 1, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0, "type": "X", "parentId": 7}],
 "definitions": {"subgraphs": [{"id": "uuid-1", "name": "Sub", "version": 1,
   "inputs": [{"id": "i1", "name": "x", "type": "X", "linkIds": [5], "pos": [0, 0]}],
   "outputs": [], "widgets": [], "nodes": [], "links": [],
   "inputNode": {"id": -10, "bounding": [0, 0, 1, 1]}}], "other": true}}`

func TestWorkflowRoundTrip(t *testing.T) {
	for _, src := range []string{workflowV04, workflowV1} {
		w, err := ParseWorkflow([]byte(src))
		if err != nil {
			t.Fatal(err)
		}
		out, err := json.Marshal(w)
		if err != nil {
			t.Fatal(err)
		}
		if !sameJSON(t, []byte(src), out) {
			t.Errorf("round trip changed the workflow:\n in: %s\nout: %s", src, out)
		}
	}
}

func TestParseWorkflowFields(t *testing.T) {
	w, err := ParseWorkflow([]byte(workflowV04))
	if err != nil {
		t.Fatal(err)
	}
	if w.Version.String() != "0.4" || len(w.Nodes) != 3 || len(w.Links) != 2 || len(w.Groups) != 1 {
		t.Fatalf("workflow = %+v", w)
	}
	n := w.Nodes[0]
	if n.ID.String() != "3" || n.Type != "KSampler" || n.Inputs[1].Widget.Name != "seed" || *n.Inputs[0].Link != 1 {
		t.Errorf("node = %+v", n)
	}
	list, named, err := n.Widgets()
	if err != nil || named != nil || len(list) != 7 || list[0] != json.Number("156680208700286") {
		t.Errorf("widgets = %v %v %v", list, named, err)
	}
	if _, named, _ := w.Nodes[1].Widgets(); named["text"] != "hi" {
		t.Errorf("named widgets = %v", named)
	}
	if w.Nodes[1].ID.String() != "str-id" {
		t.Errorf("string id = %q", w.Nodes[1].ID)
	}
	if w.Nodes[2].Outputs[0].Type.Name != TypeCombo {
		t.Errorf("list type = %q", w.Nodes[2].Outputs[0].Type.Name)
	}
	l := w.Links[0]
	if l.ID != 1 || l.OriginID.String() != "4" || l.TargetID.String() != "3" || l.Type.Name != "MODEL" {
		t.Errorf("link = %+v", l)
	}
	v1, err := ParseWorkflow([]byte(workflowV1))
	if err != nil {
		t.Fatal(err)
	}
	if v1.Links[0].OriginID.String() != "1" || v1.Definitions == nil || v1.Definitions.Subgraphs[0].Inputs[0].LinkIDs[0] != 5 {
		t.Errorf("v1 = %+v", v1)
	}
	if raw, ok := v1.Unknown("state"); !ok || !bytes.Contains(raw, []byte("lastNodeId")) {
		t.Errorf("unknown key state = %s %v", raw, ok)
	}
}

func TestParseWorkflowErrors(t *testing.T) {
	tests := []struct{ name, data, want string }{
		{"syntax", `{"nodes": [}`, "at byte 11"},
		{"not object", `[]`, "top level is an array"},
		{"no nodes", `{"links": []}`, `no "nodes"`},
		{"nodes not array", `{"nodes": {}}`, `"nodes" is not an array`},
		{"node not object", `{"nodes": [5]}`, "nodes[0]: node is a number"},
		{"bad mode", `{"nodes": [{"id": 7, "mode": "x"}]}`, `node "7": nodes[0]: node: key "mode"`},
		{"bad input link", `{"nodes": [{"id": 1, "inputs": [{"name": "a", "link": "x"}]}]}`, `key "link"`},
		{"short link", `{"nodes": [], "links": [[1, 2]]}`, "link has 2 elements"},
		{"link string", `{"nodes": [], "links": ["a"]}`, "link is a string"},
		{"bad widgets", `{"nodes": [{"id": 1, "widgets_values": [1,]}]}`, "invalid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseWorkflow([]byte(tc.data))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want substring %q", err, tc.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	api := []byte(`{"1": {"class_type": "SaveImage", "inputs": {}}}`)
	wrapped := []byte(`{"prompt": {"1": {"class_type": "SaveImage", "inputs": {}}}, "client_id": "c"}`)
	nodeNamedPrompt := []byte(`{"prompt": {"class_type": "SaveImage", "inputs": {}}}`)
	ui := []byte(workflowV04)
	png, err := InsertPNGText(tinyPNG(t), []TextChunk{{"prompt", string(api)}, {"workflow", workflowV1}})
	if err != nil {
		t.Fatal(err)
	}
	onlyWorkflow, _ := InsertPNGText(tinyPNG(t), []TextChunk{{"workflow", workflowV04}})
	tests := []struct {
		name        string
		data        []byte
		format      Format
		hasPrompt   bool
		hasWorkflow bool
	}{
		{"api", api, FormatAPI, true, false},
		{"api with BOM", append([]byte("\xef\xbb\xbf"), api...), FormatAPI, true, false},
		{"request body", wrapped, FormatAPI, true, false},
		{"node named prompt", nodeNamedPrompt, FormatAPI, true, false},
		{"ui", ui, FormatUI, false, true},
		{"png both", png, FormatPNG, true, true},
		{"png workflow", onlyWorkflow, FormatPNG, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Load(tc.data)
			if err != nil {
				t.Fatal(err)
			}
			if d.Format != tc.format || (d.Prompt != nil) != tc.hasPrompt || (d.Workflow != nil) != tc.hasWorkflow {
				t.Errorf("doc = %v prompt=%v workflow=%v", d.Format, d.Prompt != nil, d.Workflow != nil)
			}
		})
	}
	if d, _ := Load(nodeNamedPrompt); d.Prompt["prompt"] == nil {
		t.Errorf("a node with id \"prompt\" must stay a node")
	}
	bad := []struct{ name, data, want string }{
		{"garbage", "hello", "invalid JSON"},
		{"png without chunks", string(tinyPNG(t)), `no "prompt" or "workflow"`},
		{"wrapped bad node", `{"prompt": {"1": {"inputs": {}}}, "client_id": "c"}`, `node "1": at byte 17: missing class_type`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load([]byte(tc.data))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want substring %q", err, tc.want)
			}
		})
	}
}

func FuzzParsePrompt(f *testing.F) {
	f.Add([]byte(`{"1": {"class_type": "A", "inputs": {"x": ["2", 0], "s": 18446744073709551615}}}`))
	f.Add([]byte(`{"1": {"class_type": "A", "_meta": {"title": "t"}}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[`))
	f.Add([]byte(goodPrompt))
	f.Add([]byte(`{"9": {"class_type": "Save", "inputs": {"images": ["9", 0], "filename_prefix": 1}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePrompt(data)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *ParseError", err)
			}
			if pe.Offset > int64(len(data)) {
				t.Fatalf("offset %d past the input (%d bytes)", pe.Offset, len(data))
			}
			return
		}
		// A parsed prompt encodes and parses back to the same prompt.
		b, err := EncodePrompt(p)
		if err != nil {
			t.Fatal(err)
		}
		q, err := ParsePrompt(b)
		if err != nil {
			t.Fatalf("re-parse %s: %v", b, err)
		}
		if len(p) != len(q) {
			t.Fatalf("re-parse: %d nodes, want %d", len(q), len(p))
		}
		// Validation, ordering and coercion never panic, and their results agree.
		schemas := testSchemas(t)
		res := Validate(p, schemas)
		if _, err := json.Marshal(res.Body()); err != nil {
			t.Fatalf("error body does not encode: %v", err)
		}
		if res.OK() {
			order, err := Order(p, res.Outputs)
			if err != nil {
				t.Fatalf("validated prompt does not order: %v", err)
			}
			for _, id := range order {
				sc, _ := schemas.Schema(p[id].ClassType)
				for i := range sc.Inputs {
					in := &sc.Inputs[i]
					v, ok := p[id].Inputs[in.Name]
					if _, isLink := AsLink(v); !ok || isLink || in.Section == Hidden || !in.IsWidget() {
						continue
					}
					if _, err := Coerce(in, v); err != nil && !res.hasNodeError(id) {
						t.Fatalf("node %s input %s validated but does not coerce: %v", id, in.Name, err)
					}
				}
			}
		}
	})
}

func FuzzParseWorkflow(f *testing.F) {
	f.Add([]byte(workflowV04))
	f.Add([]byte(workflowV1))
	f.Add([]byte(`{"nodes": []}`))
	f.Add([]byte(subgraphWorkflow))
	f.Add([]byte(`{"nodes": [` + baseNodes + `], "links": [` + baseLinks + `], "version": 0.4}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := ParseWorkflow(data)
		if err != nil {
			return
		}
		b, err := json.Marshal(w)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		if _, err := ParseWorkflow(b); err != nil {
			t.Fatalf("re-parse %s: %v", b, err)
		}
		for _, s := range []Schemas{testSchemas(t)} {
			_, _ = ConvertWith(w, s, ConvertOptions{ChooseDynamic: func(int) int { return 0 }})
		}
	})
}

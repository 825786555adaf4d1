package graph

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// convertJSON parses a workflow and converts it with testSchemas, always choosing the
// last dynamic-prompt alternative.
func convertJSON(t *testing.T, src string) (Prompt, error) {
	t.Helper()
	w, err := ParseWorkflow([]byte(src))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return ConvertWith(w, testSchemas(t), ConvertOptions{ChooseDynamic: func(n int) int { return n - 1 }})
}

// promptJSON renders a prompt's class types and inputs (no _meta) as canonical JSON.
func promptJSON(t *testing.T, p Prompt) string {
	t.Helper()
	m := map[string]any{}
	for id, n := range p {
		m[id] = map[string]any{"class_type": n.ClassType, "inputs": n.Inputs}
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func wantPrompt(t *testing.T, got Prompt, want string) {
	t.Helper()
	var w map[string]any
	if err := decodeNumbers([]byte(want), &w); err != nil {
		t.Fatalf("bad want: %v", err)
	}
	b, _ := json.Marshal(w)
	if g := promptJSON(t, got); g != string(b) {
		t.Errorf("prompt\n got %s\nwant %s", g, b)
	}
}

// base nodes: 1 Loader, 2 Noise, 3 Sampler, 4 Decode, 9 Save. Links: 1 model, 2 latent,
// 3 samples, 4 vae, 5 images.
const baseNodes = `
  {"id": 1, "type": "Loader", "mode": 0, "outputs": [{"name": "MODEL", "type": "MODEL", "links": [1]}, {"name": "CLIP", "type": "CLIP", "links": []}, {"name": "VAE", "type": "VAE", "links": [4]}],
   "widgets_values": ["b.safetensors"]},
  {"id": 2, "type": "Noise", "mode": 0, "title": "My noise", "outputs": [{"name": "LATENT", "type": "LATENT", "links": [2]}],
   "widgets_values": [7, "randomize", "a {red|blue} cat /* hidden */ // note", false]},
  {"id": 3, "type": "Sampler", "mode": 0,
   "inputs": [{"name": "model", "type": "MODEL", "link": 1}, {"name": "latent", "type": "LATENT", "link": 2}],
   "outputs": [{"name": "LATENT", "type": "LATENT", "links": [3]}],
   "widgets_values": [18446744073709551615, "fixed", 30, 6.5, "heun"]},
  {"id": 4, "type": "Decode", "mode": 0, "inputs": [{"name": "samples", "type": "LATENT", "link": 3}, {"name": "vae", "type": "VAE", "link": 4}],
   "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [5]}]},
  {"id": 9, "type": "Save", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 5}], "widgets_values": ["out"]}`

const baseLinks = `[1, 1, 0, 3, 0, "MODEL"], [2, 2, 0, 3, 1, "LATENT"], [3, 3, 0, 4, 0, "LATENT"], [4, 1, 2, 4, 1, "VAE"], [5, 4, 0, 9, 0, "IMAGE"]`

const baseWant = `{
 "1": {"class_type": "Loader", "inputs": {"ckpt_name": "b.safetensors"}},
 "2": {"class_type": "Noise", "inputs": {"noise_seed": 7, "text": "a blue cat  ", "flag": false}},
 "3": {"class_type": "Sampler", "inputs": {"model": ["1", 0], "latent": ["2", 0], "seed": 18446744073709551615, "steps": 30, "cfg": 6.5, "sampler_name": "heun", "denoise": 1.0}},
 "4": {"class_type": "Decode", "inputs": {"samples": ["3", 0], "vae": ["1", 2]}},
 "9": {"class_type": "Save", "inputs": {"images": ["4", 0], "filename_prefix": "out"}}}`

func TestConvertBasic(t *testing.T) {
	p, err := convertJSON(t, `{"nodes": [`+baseNodes+`], "links": [`+baseLinks+`], "version": 0.4}`)
	if err != nil {
		t.Fatal(err)
	}
	wantPrompt(t, p, baseWant)
	if p["1"].Meta.Title != "Load Checkpoint" || p["2"].Meta.Title != "My noise" {
		t.Errorf("titles = %q, %q", p["1"].Meta.Title, p["2"].Meta.Title)
	}
	// The seed keeps all 64 bits.
	if p["3"].Inputs["seed"] != json.Number("18446744073709551615") {
		t.Errorf("seed = %#v", p["3"].Inputs["seed"])
	}
	// The same graph with version-1 links as objects converts the same way.
	v1Links := `{"id": 1, "origin_id": 1, "origin_slot": 0, "target_id": 3, "target_slot": 0, "type": "MODEL"},
	 {"id": 2, "origin_id": 2, "origin_slot": 0, "target_id": 3, "target_slot": 1, "type": "LATENT"},
	 {"id": 3, "origin_id": 3, "origin_slot": 0, "target_id": 4, "target_slot": 0, "type": "LATENT"},
	 {"id": 4, "origin_id": 1, "origin_slot": 2, "target_id": 4, "target_slot": 1, "type": "VAE"},
	 {"id": 5, "origin_id": 4, "origin_slot": 0, "target_id": 9, "target_slot": 0, "type": "IMAGE"}`
	p, err = convertJSON(t, `{"nodes": [`+baseNodes+`], "links": [`+v1Links+`], "version": 1}`)
	if err != nil {
		t.Fatal(err)
	}
	wantPrompt(t, p, baseWant)
}

// TestConvertGraphFeatures covers each front-end rule on a small graph.
func TestConvertGraphFeatures(t *testing.T) {
	tests := []struct {
		name  string
		nodes string
		links string
		want  string
	}{
		{
			name: "reroutes and notes",
			nodes: `{"id": 1, "type": "Loader", "outputs": [{"name": "MODEL", "type": "MODEL", "links": [1]}, {"name": "CLIP", "type": "CLIP"}, {"name": "VAE", "type": "VAE", "links": [4]}], "widgets_values": ["a.safetensors"]},
			 {"id": 5, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 1}], "outputs": [{"name": "", "type": "MODEL", "links": [6]}]},
			 {"id": 6, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 6}], "outputs": [{"name": "", "type": "MODEL", "links": [7]}]},
			 {"id": 7, "type": "Note", "widgets_values": ["remember"]},
			 {"id": 8, "type": "MarkdownNote", "widgets_values": ["# hi"]},
			 {"id": 3, "type": "Sampler", "inputs": [{"name": "model", "type": "MODEL", "link": 7}], "widgets_values": [1, "fixed", 2, 3, "euler", 0.5]}`,
			links: `[1, 1, 0, 5, 0, "MODEL"], [6, 5, 0, 6, 0, "MODEL"], [7, 6, 0, 3, 0, "MODEL"], [4, 1, 2, 9, 0, "VAE"]`,
			want: `{"1": {"class_type": "Loader", "inputs": {"ckpt_name": "a.safetensors"}},
			 "3": {"class_type": "Sampler", "inputs": {"model": ["1", 0], "seed": 1, "steps": 2, "cfg": 3, "sampler_name": "euler", "denoise": 0.5}}}`,
		},
		{
			name: "bypass passes the matching input, same slot first",
			nodes: `{"id": 1, "type": "LoadImg", "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}, {"name": "MASK", "type": "MASK", "links": [2]}], "widgets_values": ["y.png", "image"]},
			 {"id": 2, "type": "Blur", "mode": 4, "inputs": [{"name": "image", "type": "IMAGE", "link": 1}], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [3]}], "widgets_values": [5]},
			 {"id": 3, "type": "Composite", "mode": 4, "inputs": [{"name": "mask", "type": "MASK", "link": 2}, {"name": "image", "type": "IMAGE", "link": 3}], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [4]}]},
			 {"id": 9, "type": "Save", "inputs": [{"name": "images", "type": "IMAGE", "link": 4}], "widgets_values": ["x"]}`,
			links: `[1, 1, 0, 2, 0, "IMAGE"], [2, 1, 1, 3, 0, "MASK"], [3, 2, 0, 3, 1, "IMAGE"], [4, 3, 0, 9, 0, "IMAGE"]`,
			want: `{"1": {"class_type": "LoadImg", "inputs": {"image": "y.png"}},
			 "9": {"class_type": "Save", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}`,
		},
		{
			name: "bypass without a matching input drops the link",
			nodes: `{"id": 1, "type": "Noise", "outputs": [{"name": "LATENT", "type": "LATENT", "links": [1]}], "widgets_values": [1, "fixed", "t", true]},
			 {"id": 4, "type": "Decode", "mode": 4, "inputs": [{"name": "samples", "type": "LATENT", "link": 1}, {"name": "vae", "type": "VAE", "link": null}], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}]},
			 {"id": 9, "type": "Save", "inputs": [{"name": "images", "type": "IMAGE", "link": 2}], "widgets_values": ["x"]}`,
			links: `[1, 1, 0, 4, 0, "LATENT"], [2, 4, 0, 9, 0, "IMAGE"]`,
			want: `{"1": {"class_type": "Noise", "inputs": {"noise_seed": 1, "text": "t", "flag": true}},
			 "9": {"class_type": "Save", "inputs": {"filename_prefix": "x"}}}`,
		},
		{
			name: "muted node and the inputs linked to it are dropped",
			nodes: `{"id": 1, "type": "LoadImg", "mode": 2, "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}], "widgets_values": ["y.png", "image"]},
			 {"id": 9, "type": "Save", "inputs": [{"name": "images", "type": "IMAGE", "link": 1}], "widgets_values": ["x"]}`,
			links: `[1, 1, 0, 9, 0, "IMAGE"]`,
			want:  `{"9": {"class_type": "Save", "inputs": {"filename_prefix": "x"}}}`,
		},
		{
			name: "primitive node value copied to its targets",
			nodes: `{"id": 5, "type": "PrimitiveNode", "outputs": [{"name": "INT", "type": "INT", "links": [1, 2], "widget": {"name": "steps"}}], "widgets_values": [42, "fixed"]},
			 {"id": 3, "type": "Sampler", "inputs": [{"name": "steps", "type": "INT", "link": 1, "widget": {"name": "steps"}}], "widgets_values": [1, "fixed", 2, 3, "euler", 1]},
			 {"id": 4, "type": "Sampler", "inputs": [{"name": "steps", "type": "INT", "link": 2, "widget": {"name": "steps"}}], "widgets_values": [1, "fixed", 2, 3, "euler", 1]}`,
			links: `[1, 5, 0, 3, 0, "INT"], [2, 5, 0, 4, 0, "INT"]`,
			want: `{"3": {"class_type": "Sampler", "inputs": {"seed": 1, "steps": 42, "cfg": 3, "sampler_name": "euler", "denoise": 1}},
			 "4": {"class_type": "Sampler", "inputs": {"seed": 1, "steps": 42, "cfg": 3, "sampler_name": "euler", "denoise": 1}}}`,
		},
		{
			name: "a link into a converted widget wins over its value; control widgets skipped",
			nodes: `{"id": 7, "type": "Int", "outputs": [{"name": "INT", "type": "INT", "links": [1]}], "widgets_values": [5, "increment", 4]},
			 {"id": 3, "type": "Sampler", "inputs": [{"name": "seed", "type": "INT", "link": 1, "widget": {"name": "seed"}}], "widgets_values": [1, "fixed", 2, 3, "euler"]}`,
			links: `[1, 7, 0, 3, 0, "INT"]`,
			want: `{"7": {"class_type": "Int", "inputs": {"value": 5, "other": 4}},
			 "3": {"class_type": "Sampler", "inputs": {"seed": ["7", 0], "steps": 2, "cfg": 3, "sampler_name": "euler", "denoise": 1.0}}}`,
		},
		{
			name:  "widgets_values_named wins over the list",
			nodes: `{"id": 2, "type": "Noise", "widgets_values": [3, "fixed", "a", true], "widgets_values_named": {"text": "named", "flag": false}}`,
			want:  `{"2": {"class_type": "Noise", "inputs": {"noise_seed": 3, "text": "named", "flag": false}}}`,
		},
		{
			name:  "missing widget values take schema defaults; list values are wrapped",
			nodes: `{"id": 2, "type": "Noise", "widgets_values": [3, "fixed", ["a", "b"]]}, {"id": 3, "type": "Sampler", "widgets_values": []}`,
			want: `{"2": {"class_type": "Noise", "inputs": {"noise_seed": 3, "text": {"__value__": ["a", "b"]}, "flag": true}},
			 "3": {"class_type": "Sampler", "inputs": {"seed": 0, "steps": 20, "cfg": 8.0, "sampler_name": "euler", "denoise": 1.0}}}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			links := tc.links
			p, err := convertJSON(t, `{"nodes": [`+tc.nodes+`], "links": [`+links+`], "version": 0.4}`)
			if err != nil {
				t.Fatal(err)
			}
			wantPrompt(t, p, tc.want)
		})
	}
}

const subgraphWorkflow = `{"version": 1, "nodes": [
  {"id": 1, "type": "Loader", "outputs": [{"name": "MODEL", "type": "MODEL", "links": [1]}, {"name": "CLIP", "type": "CLIP"}, {"name": "VAE", "type": "VAE", "links": [4]}], "widgets_values": ["a.safetensors"]},
  {"id": 10, "type": "5f0e-sub", "inputs": [{"name": "model", "type": "MODEL", "link": 1}, {"name": "steps", "type": "INT", "link": null, "widget": {"name": "steps"}}],
   "outputs": [{"name": "LATENT", "type": "LATENT", "links": [3]}], "widgets_values": [33]},
  {"id": 4, "type": "Decode", "inputs": [{"name": "samples", "type": "LATENT", "link": 3}, {"name": "vae", "type": "VAE", "link": 4}], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [5]}]},
  {"id": 9, "type": "Save", "inputs": [{"name": "images", "type": "IMAGE", "link": 5}], "widgets_values": ["x"]}],
 "links": [{"id": 1, "origin_id": 1, "origin_slot": 0, "target_id": 10, "target_slot": 0, "type": "MODEL"},
  {"id": 3, "origin_id": 10, "origin_slot": 0, "target_id": 4, "target_slot": 0, "type": "LATENT"},
  {"id": 4, "origin_id": 1, "origin_slot": 2, "target_id": 4, "target_slot": 1, "type": "VAE"},
  {"id": 5, "origin_id": 4, "origin_slot": 0, "target_id": 9, "target_slot": 0, "type": "IMAGE"}],
 "definitions": {"subgraphs": [{"id": "5f0e-sub", "name": "Sub",
  "inputs": [{"id": "a", "name": "model", "type": "MODEL", "linkIds": [11]}, {"id": "b", "name": "steps", "type": "INT", "linkIds": [12]}],
  "outputs": [{"id": "c", "name": "LATENT", "type": "LATENT", "linkIds": [14]}],
  "nodes": [{"id": 1, "type": "Noise", "outputs": [{"name": "LATENT", "type": "LATENT", "links": [13]}], "widgets_values": [9, "fixed", "t", true]},
    {"id": 2, "type": "Sampler", "title": "Inner sampler", "inputs": [{"name": "model", "type": "MODEL", "link": 11}, {"name": "latent", "type": "LATENT", "link": 13},
      {"name": "steps", "type": "INT", "link": 12, "widget": {"name": "steps"}}],
     "outputs": [{"name": "LATENT", "type": "LATENT", "links": [14]}], "widgets_values": [1, "fixed", 2, 3, "euler", 1]}],
  "links": [{"id": 11, "origin_id": -10, "origin_slot": 0, "target_id": 2, "target_slot": 0, "type": "MODEL"},
   {"id": 12, "origin_id": -10, "origin_slot": 1, "target_id": 2, "target_slot": 2, "type": "INT"},
   {"id": 13, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 1, "type": "LATENT"},
   {"id": 14, "origin_id": 2, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "LATENT"}]}]}}`

func TestConvertSubgraph(t *testing.T) {
	p, err := convertJSON(t, subgraphWorkflow)
	if err != nil {
		t.Fatal(err)
	}
	wantPrompt(t, p, `{
	 "1": {"class_type": "Loader", "inputs": {"ckpt_name": "a.safetensors"}},
	 "10:1": {"class_type": "Noise", "inputs": {"noise_seed": 9, "text": "t", "flag": true}},
	 "10:2": {"class_type": "Sampler", "inputs": {"model": ["1", 0], "latent": ["10:1", 0], "seed": 1, "steps": 33, "cfg": 3, "sampler_name": "euler", "denoise": 1}},
	 "4": {"class_type": "Decode", "inputs": {"samples": ["10:2", 0], "vae": ["1", 2]}},
	 "9": {"class_type": "Save", "inputs": {"images": ["4", 0], "filename_prefix": "x"}}}`)
	if p["10:2"].Meta.Title != "Inner sampler" {
		t.Errorf("inner title = %q", p["10:2"].Meta.Title)
	}
	// The converted prompt validates and orders.
	if r := Validate(p, testSchemas(t)); !r.OK() {
		t.Fatalf("validate: %v", r.Err())
	}
	order, err := Order(p, []string{"9"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"1", "10:1", "10:2", "4", "9"}; !reflect.DeepEqual(order, want) {
		t.Errorf("order = %v, want %v", order, want)
	}
}

func TestConvertGroupNode(t *testing.T) {
	src := `{"version": 0.4, "nodes": [
	  {"id": 1, "type": "Loader", "outputs": [{"name": "MODEL", "type": "MODEL", "links": [1]}], "widgets_values": ["a.safetensors"]},
	  {"id": 20, "type": "workflow>G", "inputs": [{"name": "model", "type": "MODEL", "link": 1}],
	   "outputs": [{"name": "MIXED", "type": "IMAGE,MASK", "links": null}, {"name": "LATENT", "type": "LATENT", "links": [2]}],
	   "widgets_values": [11, "randomize", "text", false, 12, "fixed", 13, 1.5, "heun", 0.25]},
	  {"id": 4, "type": "Decode", "inputs": [{"name": "samples", "type": "LATENT", "link": 2}, {"name": "vae", "type": "VAE", "link": null}]}],
	 "links": [[1, 1, 0, 20, 0, "MODEL"], [2, 20, 1, 4, 0, "LATENT"]],
	 "extra": {"groupNodes": {"G": {
	   "nodes": [{"type": "Noise", "index": 0, "outputs": [{"name": "LATENT", "type": "LATENT", "links": []}, {"name": "MIXED", "type": "IMAGE,MASK", "links": null}], "widgets_values": [1, "fixed", "x", true]},
	             {"type": "Sampler", "index": 1, "inputs": [{"name": "model", "type": "MODEL", "link": null}, {"name": "latent", "type": "LATENT", "link": null}],
	              "outputs": [{"name": "LATENT", "type": "LATENT", "links": []}], "widgets_values": [1, "fixed", 2, 3, "euler", 1]}],
	   "links": [[null, 0, 1, 0, 1, "MODEL"], [0, 0, 1, 1, 9, "LATENT"]],
	   "external": [[1, 0, "LATENT"]]}}}}`
	p, err := convertJSON(t, src)
	if err != nil {
		t.Fatal(err)
	}
	wantPrompt(t, p, `{
	 "1": {"class_type": "Loader", "inputs": {"ckpt_name": "a.safetensors"}},
	 "20:0": {"class_type": "Noise", "inputs": {"noise_seed": 11, "text": "text", "flag": false}},
	 "20:1": {"class_type": "Sampler", "inputs": {"model": ["1", 0], "latent": ["20:0", 0], "seed": 12, "steps": 13, "cfg": 1.5, "sampler_name": "heun", "denoise": 0.25}},
	 "4": {"class_type": "Decode", "inputs": {"samples": ["20:1", 0]}}}`)
}

func TestConvertErrors(t *testing.T) {
	tests := []struct{ name, src, want string }{
		{"reroute loop", `{"nodes": [
		  {"id": 1, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 2}], "outputs": [{"name": "", "type": "*", "links": [1]}]},
		  {"id": 2, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 1}], "outputs": [{"name": "", "type": "*", "links": [2, 3]}]},
		  {"id": 9, "type": "Save", "inputs": [{"name": "images", "type": "IMAGE", "link": 3}]}],
		  "links": [[1, 1, 0, 2, 0, "*"], [2, 2, 0, 1, 0, "*"], [3, 2, 0, 9, 0, "IMAGE"]]}`, "circular reference"},
		{"dangling link", `{"nodes": [{"id": 9, "type": "Save", "inputs": [{"name": "images", "type": "IMAGE", "link": 77}]}], "links": []}`, `node "9": input "images": link 77 does not exist`},
		{"link from missing node", `{"nodes": [{"id": 9, "type": "Save", "inputs": [{"name": "images", "type": "IMAGE", "link": 1}]}], "links": [[1, 5, 0, 9, 0, "IMAGE"]]}`, "node 5, which does not exist"},
		{"node without type", `{"nodes": [{"id": 3}]}`, `node "3": node has no type`},
		{"duplicate node id", `{"nodes": [{"id": 9, "type": "Save"}, {"id": 9, "type": "Save"}]}`, "duplicate node id"},
		{"bad widgets", `{"nodes": [{"id": 9, "type": "Save", "widgets_values": 5}]}`, "widgets_values is a number"},
		{"self-containing subgraph", `{"nodes": [{"id": 1, "type": "s"}], "definitions": {"subgraphs": [{"id": "s", "name": "S", "nodes": [{"id": 1, "type": "s"}]}]}}`, "contains itself"},
		{"subgraph explosion", explosionWorkflow(), "more than"},
		{"unterminated dynamic prompt", `{"nodes": [{"id": 2, "type": "Noise", "widgets_values": [1, "fixed", "} {", true]}]}`, "does not terminate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := convertJSON(t, tc.src)
			var ce *ConvertError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a *ConvertError with %q", err, tc.want)
			}
		})
	}
}

func TestConvertMissingTypes(t *testing.T) {
	_, err := convertJSON(t, `{"nodes": [{"id": 1, "type": "Foo"}, {"id": 2, "type": "Bar"}, {"id": 3, "type": "Foo"},
	  {"id": 4, "type": "Save"}, {"id": 5, "type": "Note"}, {"id": 6, "type": "Reroute"}]}`)
	var mt *MissingTypesError
	if !errors.As(err, &mt) {
		t.Fatalf("err = %v, want *MissingTypesError", err)
	}
	if !reflect.DeepEqual(mt.Types, []string{"Bar", "Foo"}) || !reflect.DeepEqual(mt.Nodes["Foo"], []string{"1", "3"}) {
		t.Errorf("missing = %v %v", mt.Types, mt.Nodes)
	}
	if err.Error() != "graph: workflow uses node types that are not available: Bar, Foo" {
		t.Errorf("message = %q", err)
	}
}

// lessSchemas hides some classes of a schema source.
type lessSchemas struct {
	Schemas
	hide map[string]bool
}

func (l lessSchemas) Schema(class string) (*Schema, bool) {
	if l.hide[class] {
		return nil, false
	}
	return l.Schemas.Schema(class)
}

// TestConvertReferenceMissingClasses converts a real workflow with a schema source that
// lacks two of its classes: the error must name exactly those.
func TestConvertReferenceMissingClasses(t *testing.T) {
	dir, _ := readManifest(t)
	data, err := readFile(dir, "2_pass_txt2img__hiresfix_latent_workflow.workflow.json")
	if err != nil {
		t.Fatal(err)
	}
	w, err := ParseWorkflow(data)
	if err != nil {
		t.Fatal(err)
	}
	src := lessSchemas{referenceSchemas(t), map[string]bool{"KSampler": true, "LatentUpscale": true, "ImageInvert": true}}
	_, err = Convert(w, src)
	var mt *MissingTypesError
	if !errors.As(err, &mt) {
		t.Fatalf("err = %v", err)
	}
	if !reflect.DeepEqual(mt.Types, []string{"KSampler", "LatentUpscale"}) {
		t.Errorf("missing = %v, want [KSampler LatentUpscale] (ImageInvert is not in the workflow)", mt.Types)
	}
	if len(mt.Nodes["KSampler"]) != 2 {
		t.Errorf("KSampler nodes = %v, want the workflow's two samplers", mt.Nodes["KSampler"])
	}
}

func TestStripComments(t *testing.T) {
	cases := map[string]string{
		"a /* b */ c":         "a  c",
		"a // b\nc":           "a \nc",
		"a /* open":           "a /* open",
		"http://x.y z":        "http:",
		"a/*1*/b/*2*/c":       "abc",
		"line // x\r\nnext":   "line \r\nnext",
		"keep \\{this} {a|b}": "keep \\{this} {a|b}",
	}
	for in, want := range cases {
		if got := stripComments(in); got != want {
			t.Errorf("stripComments(%q) = %q, want %q", in, got, want)
		}
	}
	got, err := resolveDynamicPrompt(`{a|b} and {c|d|e} \{kept\}`, func(n int) int { return 1 })
	if err != nil || got != `b and d \{kept\}` {
		t.Errorf("resolveDynamicPrompt = %q, %v", got, err)
	}
}

// explosionWorkflow nests subgraphs that each hold four instances of the next: 4^12
// nodes once flattened.
func explosionWorkflow() string {
	var defs []string
	for i := 0; i < 12; i++ {
		inner := `{"id": 1, "type": "Save"}`
		if i < 11 {
			inner = ""
			for k := 1; k <= 4; k++ {
				if k > 1 {
					inner += ","
				}
				inner += fmt.Sprintf(`{"id": %d, "type": "s%d"}`, k, i+1)
			}
		}
		defs = append(defs, fmt.Sprintf(`{"id": "s%d", "name": "S%d", "nodes": [%s]}`, i, i, inner))
	}
	return `{"nodes": [{"id": 1, "type": "s0"}], "definitions": {"subgraphs": [` + strings.Join(defs, ",") + `]}}`
}

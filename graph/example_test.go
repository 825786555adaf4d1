package graph_test

import (
	"fmt"

	"github.com/forgeflow/forgeflow/graph"
)

const objectInfo = `{
 "Seed": {"input": {"required": {"seed": ["INT", {"default": 0, "min": 0, "max": 18446744073709551615}]}},
   "output": ["INT"], "output_name": ["INT"], "output_is_list": [false], "name": "Seed",
   "display_name": "Seed", "category": "utils", "output_node": false},
 "Show": {"input": {"required": {"value": ["INT", {"forceInput": true}], "label": [["a", "b"], {}]}},
   "output": [], "name": "Show", "display_name": "Show", "category": "utils", "output_node": true}
}`

// A UI workflow, converted, validated and ordered.
func Example() {
	schemas, err := graph.SchemasFromObjectInfo([]byte(objectInfo))
	if err != nil {
		panic(err)
	}
	doc, err := graph.Load([]byte(`{"version": 0.4,
	 "nodes": [
	  {"id": 1, "type": "Seed", "outputs": [{"name": "INT", "type": "INT", "links": [1]}],
	   "widgets_values": [18446744073709551615, "randomize"]},
	  {"id": 2, "type": "Show", "title": "Shown", "inputs": [{"name": "value", "type": "INT", "link": 1}],
	   "widgets_values": ["b"]},
	  {"id": 3, "type": "Note", "widgets_values": ["not queued"]}],
	 "links": [[1, 1, 0, 2, 0, "INT"]]}`))
	if err != nil {
		panic(err)
	}
	p, err := doc.ToPrompt(schemas)
	if err != nil {
		panic(err)
	}
	out, _ := graph.EncodePrompt(p)
	fmt.Println(string(out))

	res := graph.Validate(p, schemas)
	fmt.Println("valid:", res.OK(), "outputs:", res.Outputs)
	order, _ := graph.Order(p, res.Outputs)
	fmt.Println("order:", order)

	seed, _ := schemas["Seed"].Input("seed")
	v, _ := graph.Coerce(seed, p["1"].Inputs["seed"])
	fmt.Printf("seed: %d (%T)\n", v, v)
	// Output:
	// {"1":{"class_type":"Seed","inputs":{"seed":18446744073709551615},"_meta":{"title":"Seed"}},"2":{"class_type":"Show","inputs":{"label":"b","value":["1",0]},"_meta":{"title":"Shown"}}}
	// valid: true outputs: [2]
	// order: [1 2]
	// seed: 18446744073709551615 (uint64)
}

// Validation failures come back in the shape of ComfyUI's /prompt 400 reply.
func ExampleValidate() {
	schemas, _ := graph.SchemasFromObjectInfo([]byte(objectInfo))
	p, _ := graph.ParsePrompt([]byte(`{"2": {"class_type": "Show", "inputs": {"value": ["1", 0], "label": "c"}},
	  "1": {"class_type": "Seed", "inputs": {"seed": -5}}}`))
	res := graph.Validate(p, schemas)
	fmt.Println(res.Error.Type)
	for _, id := range []string{"1", "2"} {
		e := res.NodeErrors[id].Errors[0]
		fmt.Printf("%s: %s: %s (%s)\n", id, e.Type, e.Message, e.Details)
	}
	// Output:
	// prompt_outputs_failed_validation
	// 1: value_smaller_than_min: Value -5 smaller than min of 0 (seed)
	// 2: value_not_in_list: Value not in list (label: 'c' not in ['a', 'b'])
}

package graph

import (
	"maps"
	"testing"
)

// A combo's hint (where model files go, how to get one) follows ComfyUI's details of a
// "Value not in list" error, which keeps its type, message and first words.
func TestValidateChoicesHint(t *testing.T) {
	schemas := maps.Clone(testSchemas(t))
	loader := *schemas["Loader"]
	loader.Inputs = append([]Input(nil), loader.Inputs...)
	for i := range loader.Inputs {
		if loader.Inputs[i].Name == "ckpt_name" {
			loader.Inputs[i].ChoicesHint = func() string { return "checkpoints go in /m/checkpoints" }
		}
	}
	schemas["Loader"] = &loader
	r := Validate(edit(t, "1", "ckpt_name", ""), schemas)
	ne := r.NodeErrors["1"]
	if ne == nil || len(ne.Errors) != 1 {
		t.Fatalf("node_errors = %+v", r.NodeErrors)
	}
	e := ne.Errors[0]
	want := "ckpt_name: '' not in ['a.safetensors', 'b.safetensors'] (checkpoints go in /m/checkpoints)"
	if e.Type != ErrValueNotInList || e.Message != "Value not in list" || e.Details != want {
		t.Fatalf("got %q %q %q, want details %q", e.Type, e.Message, e.Details, want)
	}
	// A value in the list needs no hint.
	if r := Validate(mustPrompt(t, goodPrompt), schemas); !r.OK() {
		t.Fatalf("good prompt: %v", r.Err())
	}
}

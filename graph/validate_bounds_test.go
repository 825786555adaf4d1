package graph

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// blurCycle is n Blur nodes, each linking to the one before and the first to the last,
// with a Save reading the last: one cycle through n nodes.
func blurCycle(n int) Prompt {
	p := Prompt{}
	for i := 0; i < n; i++ {
		p[fmt.Sprint(i)] = &Node{ClassType: "Blur", Inputs: map[string]any{"image": NewLink(fmt.Sprint((i+n-1)%n), 0), "radius": json.Number("1")}}
	}
	p["s"] = &Node{ClassType: "Save", Inputs: map[string]any{"images": NewLink(fmt.Sprint(n-1), 0), "filename_prefix": "x"}}
	return p
}

// TestValidateLongCycleBounded: a cycle through 10,000 nodes is reported once, with
// MaxCycleIDs ids and its size, so the refusal stays small (it was 1.2 GB: the whole
// cycle listed twice on every node).
func TestValidateLongCycleBounded(t *testing.T) {
	const n = 10000
	r := Validate(blurCycle(n), testSchemas(t))
	if r.OK() {
		t.Fatal("a cycle validated")
	}
	body, err := json.Marshal(r.Body())
	if err != nil {
		t.Fatal(err)
	}
	if len(body) > 8<<10 {
		t.Errorf("the refusal of a %d-node cycle is %d bytes", n, len(body))
	}
	if len(r.NodeErrors) != 1 {
		t.Fatalf("node_errors on %d nodes, want 1", len(r.NodeErrors))
	}
	ne := r.NodeErrors["0"]
	if ne == nil || ne.Errors[0].Type != ErrDependencyCycle {
		t.Fatalf("node_errors = %+v", r.NodeErrors)
	}
	e := ne.Errors[0]
	if got := e.ExtraInfo["cycle"].([]string); len(got) != MaxCycleIDs || got[0] != "0" || got[1] != "1" {
		t.Errorf("cycle ids = %v", got)
	}
	if e.ExtraInfo["cycle_size"] != n || !strings.Contains(e.Details, fmt.Sprintf("and %d more", n-MaxCycleIDs)) {
		t.Errorf("cycle size %v, details %q", e.ExtraInfo["cycle_size"], e.Details)
	}
	_, err = Order(blurCycle(n), []string{"s"})
	var ce *CycleError
	if !errors.As(err, &ce) || len(ce.Nodes) != MaxCycleIDs || ce.Size != n || len(err.Error()) > 1024 {
		t.Errorf("Order: %v", err)
	}
}

// TestValidateManyFailedOutputsBounded: ComfyUI lists, for each failing node, every
// failed output validated from then on; with thousands of failing outputs that is
// quadratic, so each list is capped at MaxDependentOutputs.
func TestValidateManyFailedOutputsBounded(t *testing.T) {
	const n = 3000
	p := Prompt{
		// radius 0 is below the minimum: the shared upstream node fails.
		"b": {ClassType: "Blur", Inputs: map[string]any{"image": NewLink("l", 0), "radius": json.Number("0")}},
		"l": {ClassType: "Noise", Inputs: map[string]any{"noise_seed": json.Number("1"), "text": "t", "flag": true}},
	}
	for i := 0; i < n; i++ {
		// Each Save misses filename_prefix and reads the failing Blur.
		p[fmt.Sprintf("s%04d", i)] = &Node{ClassType: "Save", Inputs: map[string]any{"images": NewLink("b", 0)}}
	}
	r := Validate(p, testSchemas(t))
	if r.OK() {
		t.Fatal("validated")
	}
	body, err := json.Marshal(r.Body())
	if err != nil {
		t.Fatal(err)
	}
	if len(body) > n*(1<<10) {
		t.Errorf("the refusal of %d failing outputs is %d bytes", n, len(body))
	}
	if len(r.NodeErrors) != n+1 {
		t.Errorf("%d node errors, want %d", len(r.NodeErrors), n+1)
	}
	want := []string{}
	for i := 0; i < MaxDependentOutputs; i++ {
		want = append(want, fmt.Sprintf("s%04d", i))
	}
	if got := r.NodeErrors["b"].DependentOutputs; !reflect.DeepEqual(got, want) {
		t.Errorf("dependent outputs of the shared node: %d %v", len(got), got[:min(3, len(got))])
	}
	// As ComfyUI: the last output's own error lists it alone.
	if got := r.NodeErrors[fmt.Sprintf("s%04d", n-1)].DependentOutputs; !reflect.DeepEqual(got, []string{fmt.Sprintf("s%04d", n-1)}) {
		t.Errorf("dependent outputs of the last output: %v", got)
	}
}

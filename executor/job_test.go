package executor

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/graph"
)

func TestJobJSON(t *testing.T) {
	j := Job{
		Number:    -3,
		ID:        "id1",
		Prompt:    graph.Prompt{"1": {ClassType: "Foo", Inputs: map[string]any{"seed": json.Number("18446744073709551615")}}},
		ExtraData: map[string]any{"client_id": "c"},
		Outputs:   []string{"1"},
		Sensitive: map[string]any{"api_key_comfy_org": "secret"},
		Attempts:  2,
	}
	b, err := json.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	want := `[-3,"id1",{"1":{"class_type":"Foo","inputs":{"seed":18446744073709551615}}},{"client_id":"c"},["1"]]`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	var back Job
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	j.Sensitive, j.Attempts = nil, 0 // not part of the list form
	if !reflect.DeepEqual(back, j) {
		t.Errorf("round trip:\n got %#v\nwant %#v", back, j)
	}
	if back.ClientID() != "c" || (&Job{}).ClientID() != "" || (*Job)(nil).ClientID() != "" {
		t.Error("ClientID")
	}
	// A zero job still writes ComfyUI's shapes: objects and a list, never null.
	b, _ = json.Marshal(Job{})
	if string(b) != `[0,"",{},{},[]]` {
		t.Errorf("zero job = %s", b)
	}
}

func TestJobJSONErrors(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"not a list", `{"a":1}`, "queue item"},
		{"too short", `[1,"a",{},{}]`, "want 5 elements"},
		{"bad number", `["x","a",{},{},[]]`, "number"},
		{"bad id", `[1,2,{},{},[]]`, "prompt_id"},
		{"bad prompt", `[1,"a",[],{},[]]`, "prompt"},
		{"bad extra", `[1,"a",{},[],[]]`, "extra_data"},
		{"bad outputs", `[1,"a",{},{},{}]`, "outputs"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var j Job
			err := json.Unmarshal([]byte(tc.in), &j)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
	// A six-element item (ComfyUI's sensitive slot) is accepted; the sixth is ignored.
	var j Job
	if err := json.Unmarshal([]byte(`[1,"a",{},{},[],{"k":"v"}]`), &j); err != nil || j.Sensitive != nil {
		t.Errorf("six elements: %v %v", err, j.Sensitive)
	}
}

func TestMessageJSON(t *testing.T) {
	m := Message{Event: EventExecutionStart, Data: ExecutionStartData{PromptID: "p", Timestamp: 5}}
	b, _ := json.Marshal(m)
	if string(b) != `["execution_start",{"prompt_id":"p","timestamp":5}]` {
		t.Fatalf("got %s", b)
	}
	var back Message
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Event != EventExecutionStart || back.Data.(map[string]any)["timestamp"] != json.Number("5") {
		t.Errorf("round trip: %#v", back)
	}
	for _, bad := range []string{`{}`, `["a"]`, `[1,{}]`, `["a",{]`} {
		if err := json.Unmarshal([]byte(bad), &back); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

// FuzzJobJSON checks that any queue item that decodes survives a round trip.
func FuzzJobJSON(f *testing.F) {
	f.Add([]byte(`[1,"a",{"1":{"class_type":"X","inputs":{"a":["2",0],"b":1.5}}},{"client_id":"c"},["1"]]`))
	f.Add([]byte(`[-2,"b",{},{},[],{}]`))
	f.Add([]byte(`[1e400,"a",{},{},[]]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var j Job
		if err := json.Unmarshal(data, &j); err != nil {
			return
		}
		b, err := json.Marshal(j)
		if err != nil {
			t.Fatalf("marshal after unmarshal: %v", err)
		}
		var back Job
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("re-decode %s: %v", b, err)
		}
		b2, _ := json.Marshal(back)
		if string(b) != string(b2) {
			t.Fatalf("not stable:\n%s\n%s", b, b2)
		}
	})
}

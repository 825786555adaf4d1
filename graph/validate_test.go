package graph

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

// goodPrompt is a valid prompt over testSchemas: Loader → Sampler → Decode → Save.
const goodPrompt = `{
 "1": {"class_type": "Loader", "inputs": {"ckpt_name": "a.safetensors"}},
 "2": {"class_type": "Noise", "inputs": {"noise_seed": 5, "text": "x", "flag": true}},
 "3": {"class_type": "Sampler", "inputs": {"model": ["1", 0], "seed": 18446744073709551615, "steps": 20,
       "cfg": 7.5, "sampler_name": "heun", "latent": ["2", 0]}},
 "4": {"class_type": "Decode", "inputs": {"samples": ["3", 0], "vae": ["1", 2]}},
 "9": {"class_type": "Save", "inputs": {"images": ["4", 0], "filename_prefix": "out"}}
}`

func mustPrompt(t *testing.T, s string) Prompt {
	t.Helper()
	p, err := ParsePrompt([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// edit returns goodPrompt with one input of one node replaced (nil deletes it).
func edit(t *testing.T, id, input string, v any) Prompt {
	t.Helper()
	p := mustPrompt(t, goodPrompt)
	if v == nil {
		delete(p[id].Inputs, input)
	} else {
		p[id].Inputs[input] = v
	}
	return p
}

func TestValidateOK(t *testing.T) {
	// A prompt built in Go may hold Link values rather than ["id", slot] lists.
	built := mustPrompt(t, goodPrompt)
	built["4"].Inputs["vae"] = Link{NodeID: "1", Slot: 2}
	if r := Validate(built, testSchemas(t)); !r.OK() {
		t.Fatalf("Link value: %v", r.Err())
	}
	r := Validate(mustPrompt(t, goodPrompt), testSchemas(t))
	if !r.OK() || r.Err() != nil {
		t.Fatalf("unexpected failure: %+v", r.Body())
	}
	if !reflect.DeepEqual(r.Outputs, []string{"9"}) || len(r.NodeErrors) != 0 {
		t.Errorf("outputs = %v, node errors = %v", r.Outputs, r.NodeErrors)
	}
}

func TestValidateNodeErrors(t *testing.T) {
	n := func(s string) json.Number { return json.Number(s) }
	tests := []struct {
		name     string
		prompt   Prompt
		node     string
		typ      string
		message  string
		details  string
		received any // extra_info.received_value, when set
	}{
		{"required missing", edit(t, "3", "steps", nil), "3", ErrRequiredInputMissing, "Required input is missing", "steps", nil},
		{"link too long", edit(t, "3", "model", []any{"1", n("0"), n("1")}), "3", ErrBadLinkedInput, "Bad linked input, must be a length-2 list of [node_id, slot_index]", "model", nil},
		{"link slot not int", edit(t, "3", "model", []any{"1", "x"}), "3", ErrBadLinkedInput, "Bad linked input, must be a length-2 list of [node_id, slot_index]", "model", nil},
		{"link to missing node", edit(t, "3", "model", []any{"77", n("0")}), "3", ErrBadLinkedInput, "Bad linked input, the linked node does not exist", "model, node '77' does not exist", nil},
		{"link bad slot", edit(t, "3", "model", []any{"1", n("5")}), "3", ErrBadLinkedInput, "Bad linked input, the linked node has no such output", "model, node '1' (Loader) has 3 outputs, slot 5 requested", nil},
		{"type mismatch", edit(t, "3", "model", []any{"1", n("1")}), "3", ErrReturnTypeMismatch, "Return type mismatch between linked nodes", "model, received_type(CLIP) mismatch input_type(MODEL)", nil},
		{"combo mismatch", edit(t, "1", "ckpt_name", "c.safetensors"), "1", ErrValueNotInList, "Value not in list", "ckpt_name: 'c.safetensors' not in ['a.safetensors', 'b.safetensors']", "c.safetensors"},
		{"combo number", edit(t, "1", "ckpt_name", n("1")), "1", ErrValueNotInList, "Value not in list", "ckpt_name: '1' not in ['a.safetensors', 'b.safetensors']", n("1")},
		{"int below min", edit(t, "3", "steps", n("0")), "3", ErrValueSmallerThanMin, "Value 0 smaller than min of 1", "steps", n("0")},
		{"int above max", edit(t, "3", "steps", n("10001")), "3", ErrValueBiggerThanMax, "Value 10001 bigger than max of 10000", "steps", n("10001")},
		{"int from float truncates", edit(t, "3", "steps", n("0.9")), "3", ErrValueSmallerThanMin, "Value 0 smaller than min of 1", "steps", n("0")},
		{"seed above 2^64-1", edit(t, "3", "seed", n("18446744073709551616")), "3", ErrValueBiggerThanMax, "Value 18446744073709551616 bigger than max of 18446744073709551615", "seed", nil},
		{"float above max", edit(t, "3", "cfg", n("100.5")), "3", ErrValueBiggerThanMax, "Value 100.5 bigger than max of 100.0", "cfg", n("100.5")},
		{"float below min", edit(t, "3", "cfg", n("-1e-05")), "3", ErrValueSmallerThanMin, "Value -1e-05 smaller than min of 0.0", "cfg", n("-1e-05")},
		{"float nan string", edit(t, "3", "cfg", "nan"), "3", ErrInvalidInputType, "Failed to convert an input value to a FLOAT value", "cfg, nan, value is not a finite number", "nan"},
		{"float inf go value", edit(t, "3", "cfg", math.Inf(1)), "3", ErrInvalidInputType, "Failed to convert an input value to a FLOAT value", "cfg, inf, value is not a finite number", nil},
		{"float from text", edit(t, "3", "cfg", "abc"), "3", ErrInvalidInputType, "Failed to convert an input value to a FLOAT value", "cfg, abc, could not convert string to float: 'abc'", "abc"},
		{"int from text", edit(t, "3", "steps", "1.5"), "3", ErrInvalidInputType, "Failed to convert an input value to a INT value", "steps, 1.5, invalid literal for int() with base 10: '1.5'", "1.5"},
		{"int from null", edit(t, "3", "steps", map[string]any{"a": n("1")}), "3", ErrInvalidInputType, "Failed to convert an input value to a INT value", "steps, {'a': 1}, int() argument must be a string, a bytes-like object or a real number, not 'dict'", nil},
		{"optional checked too", edit(t, "3", "denoise", n("2")), "3", ErrValueBiggerThanMax, "Value 2.0 bigger than max of 1.0", "denoise", n("2.0")},
		{"upstream error", edit(t, "1", "ckpt_name", nil), "1", ErrRequiredInputMissing, "Required input is missing", "ckpt_name", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Validate(tc.prompt, testSchemas(t))
			if r.OK() {
				t.Fatal("validation passed")
			}
			if r.Error.Type != ErrOutputsFailed || r.Error.Message != "Prompt outputs failed validation" {
				t.Errorf("top error = %+v", r.Error)
			}
			if len(r.NodeErrors) != 1 {
				t.Fatalf("node_errors = %+v, want one node", r.NodeErrors)
			}
			ne := r.NodeErrors[tc.node]
			if ne == nil {
				t.Fatalf("no errors for node %s: %+v", tc.node, r.NodeErrors)
			}
			if !reflect.DeepEqual(ne.DependentOutputs, []string{"9"}) || ne.ClassType != tc.prompt[tc.node].ClassType {
				t.Errorf("dependent_outputs = %v, class_type = %q", ne.DependentOutputs, ne.ClassType)
			}
			if len(ne.Errors) != 1 {
				t.Fatalf("errors = %+v", ne.Errors)
			}
			e := ne.Errors[0]
			if e.Type != tc.typ || e.Message != tc.message || e.Details != tc.details {
				t.Errorf("got  %q %q %q\nwant %q %q %q", e.Type, e.Message, e.Details, tc.typ, tc.message, tc.details)
			}
			if e.ExtraInfo["input_name"] == nil {
				t.Errorf("extra_info lacks input_name: %v", e.ExtraInfo)
			}
			if tc.received != nil && !reflect.DeepEqual(e.ExtraInfo["received_value"], tc.received) {
				t.Errorf("received_value = %#v, want %#v", e.ExtraInfo["received_value"], tc.received)
			}
			// ComfyUI's top-level details list only the output node's own errors.
			if r.Error.Details != "" {
				t.Errorf("top details = %q, want empty (the error is upstream of the output)", r.Error.Details)
			}
			if err := r.Err(); err == nil || !strings.Contains(err.Error(), tc.typ) {
				t.Errorf("Err() = %v", err)
			}
			if _, err := json.Marshal(r.Body()); err != nil {
				t.Errorf("body does not encode: %v", err)
			}
		})
	}
}

func TestValidatePromptErrors(t *testing.T) {
	noOut := mustPrompt(t, `{"1": {"class_type": "Loader", "inputs": {"ckpt_name": "a.safetensors"}}}`)
	unknown := mustPrompt(t, goodPrompt)
	unknown["5"] = &Node{ClassType: "Frobnicate", Inputs: map[string]any{}}
	noClass := mustPrompt(t, goodPrompt)
	noClass["6"] = &Node{Inputs: map[string]any{}}
	tests := []struct {
		name    string
		p       Prompt
		typ     string
		message string
		details string
	}{
		{"empty", Prompt{}, ErrPromptNoOutputs, "Prompt has no outputs", ""},
		{"no outputs", noOut, ErrPromptNoOutputs, "Prompt has no outputs", ""},
		{"unknown class", unknown, ErrInvalidPrompt, "Cannot execute because node Frobnicate does not exist.", "Node ID '#5'"},
		{"missing class", noClass, ErrInvalidPrompt, "Cannot execute because a node is missing the class_type property.", "Node ID '#6'"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Validate(tc.p, testSchemas(t))
			if r.OK() || r.Error.Type != tc.typ || r.Error.Message != tc.message || r.Error.Details != tc.details {
				t.Fatalf("error = %+v", r.Error)
			}
			b, _ := json.Marshal(r.Body())
			var body map[string]any
			json.Unmarshal(b, &body)
			e := body["error"].(map[string]any)
			if e["type"] != tc.typ || e["extra_info"] == nil || body["node_errors"] == nil {
				t.Errorf("body = %s", b)
			}
		})
	}
}

func TestValidateTypeMatching(t *testing.T) {
	// "Any" takes "*" and "IMAGE,LATENT": what may feed them.
	base := `{"1": {"class_type": "Loader", "inputs": {"ckpt_name": "a.safetensors"}},
	 "2": {"class_type": "Noise", "inputs": {"noise_seed": 1, "text": "", "flag": false}},
	 "5": {"class_type": "Any", "inputs": {"source": ["1", 0], "pair": ["2", 0]}}}`
	if r := Validate(mustPrompt(t, base), testSchemas(t)); !r.OK() {
		t.Fatalf("'*' and comma-joined types: %v", r.Err())
	}
	p := mustPrompt(t, base)
	p["5"].Inputs["pair"] = NewLink("2", 1) // "IMAGE,MASK" into "IMAGE,LATENT": they share IMAGE
	if r := Validate(p, testSchemas(t)); !r.OK() {
		t.Errorf("overlapping type sets: %v", r.Err())
	}
	p["5"].Inputs["pair"] = NewLink("1", 0) // MODEL into IMAGE,LATENT
	if r := Validate(p, testSchemas(t)); r.OK() || r.NodeErrors["5"].Errors[0].Type != ErrReturnTypeMismatch {
		t.Errorf("MODEL into IMAGE,LATENT must fail: %+v", r.Body())
	}
	cases := []struct {
		recv, want string
		ok         bool
	}{
		{"IMAGE", "IMAGE", true}, {"*", "MODEL", true}, {"MODEL", "*", true},
		{"IMAGE", "IMAGE,MASK", true}, {"INT,FLOAT", "FLOAT", true}, {"INT, FLOAT", "FLOAT", true},
		{"IMAGE", "MASK", false}, {"image", "IMAGE", false},
	}
	for _, c := range cases {
		if got := TypesMatch(c.recv, c.want); got != c.ok {
			t.Errorf("TypesMatch(%q, %q) = %v, want %v", c.recv, c.want, got, c.ok)
		}
	}
}

func TestValidatePartialSuccess(t *testing.T) {
	// Two outputs: one valid, one not. ComfyUI queues the prompt (no top-level error)
	// and still reports the bad one's node errors.
	p := mustPrompt(t, goodPrompt)
	p["10"] = &Node{ClassType: "Save", Inputs: map[string]any{"images": NewLink("4", 0)}} // filename_prefix missing
	r := Validate(p, testSchemas(t))
	if !r.OK() || !reflect.DeepEqual(r.Outputs, []string{"9"}) {
		t.Fatalf("result = %+v", r.Body())
	}
	if ne := r.NodeErrors["10"]; ne == nil || ne.Errors[0].Type != ErrRequiredInputMissing || !reflect.DeepEqual(ne.DependentOutputs, []string{"10"}) {
		t.Errorf("node_errors = %+v", r.NodeErrors)
	}
	// Restricting to the bad output refuses the prompt.
	if r := ValidatePartial(p, testSchemas(t), []string{"10"}); r.OK() || r.Error.Details != "Required input is missing: filename_prefix" {
		t.Errorf("partial validation of the bad output: %+v", r.Error)
	}
	// An upstream error is reported once, with every output that depends on it.
	p = mustPrompt(t, goodPrompt)
	p["10"] = &Node{ClassType: "Save", Inputs: map[string]any{"images": NewLink("4", 0), "filename_prefix": "b"}}
	p["3"].Inputs["steps"] = json.Number("0")
	r = Validate(p, testSchemas(t))
	if r.OK() || len(r.NodeErrors) != 1 || !reflect.DeepEqual(r.NodeErrors["3"].DependentOutputs, []string{"9", "10"}) {
		t.Errorf("result = %+v", r.NodeErrors)
	}
}

func TestValidateCycle(t *testing.T) {
	p := mustPrompt(t, `{
	 "1": {"class_type": "Decode", "inputs": {"samples": ["2", 0], "vae": ["3", 0]}},
	 "2": {"class_type": "Sampler", "inputs": {"model": ["3", 0], "seed": 1, "steps": 1, "cfg": 1, "sampler_name": "euler", "latent": ["4", 0]}},
	 "3": {"class_type": "Loader", "inputs": {"ckpt_name": "a.safetensors"}},
	 "4": {"class_type": "Any", "inputs": {"source": ["1", 0], "pair": ["2", 0]}},
	 "9": {"class_type": "Save", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}`)
	p["3"].Inputs["ckpt_name"] = "a.safetensors"
	r := Validate(p, testSchemas(t))
	if r.OK() {
		t.Fatal("a cycle validated")
	}
	// The cycle is reported once, on its first node; its other nodes fail through it.
	if ne := r.NodeErrors["1"]; ne == nil || ne.Errors[0].Type != ErrDependencyCycle || !strings.Contains(ne.Errors[0].Details, "1, 2, 4") {
		t.Errorf("node 1: %+v", ne)
	}
	if len(r.NodeErrors) != 1 {
		t.Errorf("node_errors = %v, want the cycle once", sortedKeys(r.NodeErrors))
	}
	if _, err := Order(p, []string{"9"}); err == nil {
		t.Error("Order accepted a cycle")
	} else if ce := (*CycleError)(nil); !errors.As(err, &ce) || !reflect.DeepEqual(ce.Nodes, []string{"1", "2", "4"}) {
		t.Errorf("Order error = %v", err)
	}
}

func TestCoerce(t *testing.T) {
	s := testSchemas(t)
	sampler, _ := s.Schema("Sampler")
	noise, _ := s.Schema("Noise")
	in := func(sc *Schema, name string) *Input { i, _ := sc.Input(name); return i }
	seed, steps, cfg, combo := in(sampler, "seed"), in(sampler, "steps"), in(sampler, "cfg"), in(sampler, "sampler_name")
	text, flag := in(noise, "text"), in(noise, "flag")
	multi := &Input{Name: "tags", Type: TypeCombo, ComboV3: true, Multiselect: On,
		Choices: func() []string { return []string{"a", "b"} }}
	n := func(s string) json.Number { return json.Number(s) }
	tests := []struct {
		name string
		in   *Input
		v    any
		want any
		err  string
	}{
		{"int", steps, n("20"), int64(20), ""},
		{"int max uint64 stays unsigned", seed, n("18446744073709551615"), uint64(math.MaxUint64), ""},
		{"int 2^63", seed, n("9223372036854775808"), uint64(1 << 63), ""},
		{"int 2^63-1 is an int64", seed, n("9223372036854775807"), int64(math.MaxInt64), ""},
		{"int too big", seed, n("18446744073709551616"), nil, "outside the 64-bit range"},
		{"int negative", steps, n("-5"), int64(-5), ""},
		{"int from float truncates", steps, n("2.9"), int64(2), ""},
		{"int from negative float", steps, n("-2.9"), int64(-2), ""},
		{"int from exponent", steps, n("1e3"), int64(1000), ""},
		{"int from string", steps, " 1_000 ", int64(1000), ""},
		{"int from bad string", steps, "1.5", nil, "invalid literal for int() with base 10: '1.5'"},
		{"int from bool", steps, true, int64(1), ""},
		{"int from null", steps, nil, nil, "not 'NoneType'"},
		{"int from go float", steps, 7.0, int64(7), ""},
		{"int from go uint64", seed, uint64(math.MaxUint64), uint64(math.MaxUint64), ""},
		{"int from wrapped list", steps, map[string]any{"__value__": []any{n("1")}}, nil, "not 'list'"},
		{"float", cfg, n("7.5"), 7.5, ""},
		{"float from int", cfg, n("7"), 7.0, ""},
		{"float from string", cfg, " 1_0.5 ", 10.5, ""},
		{"float nan", cfg, "NaN", nil, "not a finite number"},
		{"float overflow", cfg, n("1e400"), nil, "not a finite number"},
		{"float hex refused", cfg, "0x10", nil, "could not convert string to float: '0x10'"},
		{"float from null", cfg, nil, nil, "float() argument must be a string or a real number, not 'NoneType'"},
		{"string", text, "hello", "hello", ""},
		{"string from int", text, n("12"), "12", ""},
		{"string from float", text, n("1"), "1", ""},
		{"string from float literal", text, n("1.0"), "1.0", ""},
		{"string from small float", text, n("0.00001"), "1e-05", ""},
		{"string from big float", text, n("1e16"), "1e+16", ""},
		{"string from bool", text, false, "False", ""},
		{"string from null", text, nil, "None", ""},
		{"string from list", text, map[string]any{"__value__": []any{"a", n("1")}}, "['a', 1]", ""},
		{"bool", flag, true, true, ""},
		{"bool from string false", flag, "false", true, ""},
		{"bool from empty string", flag, "", false, ""},
		{"bool from zero", flag, n("0"), false, ""},
		{"bool from 0.0", flag, n("0.0"), false, ""},
		{"combo", combo, "euler", "euler", ""},
		{"combo not string", combo, n("1"), nil, "must be a string"},
		{"combo list without multiselect", combo, map[string]any{"__value__": []any{"euler"}}, nil, "must be a string"},
		{"multiselect combo", multi, map[string]any{"__value__": []any{"a", "b"}}, []string{"a", "b"}, ""},
		{"multiselect combo with a number", multi, map[string]any{"__value__": []any{"a", n("1")}}, nil, "must be a string"},
		{"socket passes through", in(sampler, "model"), "anything", "anything", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Coerce(tc.in, tc.v)
			if tc.err != "" {
				var ce *CoerceError
				if err == nil || !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want substring %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %#v, want %#v", got, tc.want)
			}
		})
	}
}

func TestPyFloatRepr(t *testing.T) {
	cases := map[float64]string{
		1: "1.0", 0.1: "0.1", 1e-4: "0.0001", 1e-5: "1e-05", 1.5e-7: "1.5e-07", 1e15: "1000000000000000.0",
		1e16: "1e+16", 1.2345e20: "1.2345e+20", -2.5: "-2.5", 0: "0.0", 1e100: "1e+100",
		math.Inf(-1): "-inf", 123456789.125: "123456789.125",
	}
	for f, want := range cases {
		if got := pyFloatRepr(f); got != want {
			t.Errorf("pyFloatRepr(%v) = %q, want %q", f, got, want)
		}
	}
	if got := pyStrRepr(`it's`); got != `"it's"` {
		t.Errorf("pyStrRepr = %s", got)
	}
	if got := pyStrRepr("a'b\"c\n"); got != `'a\'b"c\n'` {
		t.Errorf("pyStrRepr = %s", got)
	}
}

// An input the node validates itself (VALIDATE_INPUTS) skips the list and range checks
// but is still converted, as in ComfyUI.
func TestValidateCustomValidationInput(t *testing.T) {
	in := &Input{Name: "image", Type: TypeCombo, Choices: func() []string { return []string{"a.png"} }, CustomValidation: true}
	if e := checkLiteral(in, "sub/x.png [output]"); e != nil {
		t.Fatalf("custom-validated combo refused: %v", e)
	}
	num := &Input{Name: "n", Type: TypeInt, Min: Num(1), CustomValidation: true}
	if e := checkLiteral(num, json.Number("0")); e != nil {
		t.Fatalf("custom-validated int refused by min: %v", e)
	}
	if e := checkLiteral(num, "abc"); e == nil || e.Type != ErrInvalidInputType {
		t.Fatalf("unconvertible value accepted: %v", e)
	}
	plain := &Input{Name: "image", Type: TypeCombo, Choices: func() []string { return []string{"a.png"} }}
	if e := checkLiteral(plain, "x.png"); e == nil || e.Type != ErrValueNotInList {
		t.Fatalf("plain combo accepted an unknown value: %v", e)
	}
}

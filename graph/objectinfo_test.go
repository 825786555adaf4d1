package graph

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
)

// TestObjectInfoRoundTrip reads ComfyUI's reference /object_info into schemas and
// writes each back with Schema.ObjectInfo: the result must equal ComfyUI's entry.
func TestObjectInfoRoundTrip(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(testenv.ReferenceDir(t), "comfyui-0.3.64-object_info.json"))
	if err != nil {
		t.Fatal(err)
	}
	schemas, err := SchemasFromObjectInfo(data)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	if len(schemas) != len(raw) || len(raw) < 300 {
		t.Fatalf("%d schemas from %d entries", len(schemas), len(raw))
	}
	bad := 0
	for _, name := range schemas.Names() {
		got, err := json.Marshal(schemas[name].ObjectInfo())
		if err != nil {
			t.Fatal(err)
		}
		if !sameJSON(t, raw[name], got) {
			bad++
			if bad <= 5 {
				t.Errorf("%s: object_info differs\n got %s\nwant %s", name, got, raw[name])
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d classes differ", bad, len(schemas))
	}
}

func TestSchemasFromObjectInfo(t *testing.T) {
	s := testSchemas(t)
	sampler := s["Sampler"]
	var names []string
	for _, in := range sampler.Inputs {
		names = append(names, in.Section.String()+":"+in.Name)
	}
	want := []string{"required:model", "required:seed", "required:steps", "required:cfg", "required:sampler_name",
		"required:latent", "optional:denoise", "optional:mask", "hidden:unique_id"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("inputs = %v, want %v", names, want)
	}
	seed, _ := sampler.Input("seed")
	if seed.Max.String() != "18446744073709551615" || seed.Min != Num(0) || seed.Default != json.Number("0") {
		t.Errorf("seed min, max, default = %v, %v, %#v, want the exact numbers", seed.Min, seed.Max, seed.Default)
	}
	combo, _ := sampler.Input("sampler_name")
	if combo.Type != TypeCombo || !combo.ComboV3 || !reflect.DeepEqual(combo.Choices(), []string{"euler", "heun"}) || combo.Options()["options"] != nil {
		t.Errorf("v3 combo = %+v", combo)
	}
	ckpt, _ := s["Loader"].Input("ckpt_name")
	if ckpt.Type != TypeCombo || ckpt.ComboV3 || len(ckpt.Choices()) != 2 {
		t.Errorf("list combo = %+v", ckpt)
	}
	mask, _ := sampler.Input("mask")
	hidden, _ := sampler.Input("unique_id")
	if !mask.Bare || !hidden.Plain || hidden.Type != "UNIQUE_ID" {
		t.Errorf("bare %+v, plain %+v", mask, hidden)
	}
	if s["Save"].Extra["experimental"] != true || !s["Save"].OutputNode {
		t.Errorf("extra keys = %v", s["Save"].Extra)
	}
	bad := []struct{ name, data, want string }{
		{"not object", `[]`, "top level is an array"},
		{"entry not object", `{"A": 1}`, `class "A"`},
		{"spec not list", `{"A": {"input": {"required": {"x": 5}}}}`, `input "x": spec is a number`},
		{"empty spec", `{"A": {"input": {"required": {"x": []}}}}`, `input "x"`},
		{"bad options", `{"A": {"input": {"required": {"x": ["INT", 5]}}}}`, "options are not an object"},
		{"bad output", `{"A": {"output": [5]}}`, "output[0]"},
		{"section not object", `{"A": {"input": {"required": []}}}`, "input.required is an array"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := SchemasFromObjectInfo([]byte(tc.data))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestInputOptions checks the option dict typed fields write, as ComfyUI would.
func TestInputOptions(t *testing.T) {
	tests := []struct {
		name string
		in   Input
		want string
	}{
		{"seed", Input{Type: TypeInt, Default: 0, Min: Num(0), Max: Num(uint64(1<<64 - 1)), ControlAfterGenerate: true},
			`["INT", {"default": 0, "min": 0, "max": 18446744073709551615, "control_after_generate": true}]`},
		{"float as Python writes it", Input{Type: TypeFloat, Default: 1.0, Min: Num(0.0), Max: Num(1.0), Step: Num(0.01), Round: Num(1e-05)},
			`["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "round": 1e-05}]`},
		{"no rounding", Input{Type: TypeFloat, Min: Num(-5), Max: Num(5), NoRound: true}, `["FLOAT", {"min": -5, "max": 5, "round": false}]`},
		{"flags both ways", Input{Type: TypeString, Multiline: Off, DynamicPrompts: true, Tooltip: "t"},
			`["STRING", {"multiline": false, "dynamicPrompts": true, "tooltip": "t"}]`},
		{"v3 combo", Input{Type: TypeCombo, ComboV3: true, Multiselect: Off, Default: "b", Choices: func() []string { return []string{"a", "b"} }},
			`["COMBO", {"multiselect": false, "default": "b", "options": ["a", "b"]}]`},
		{"extra keys", Input{Type: TypeCombo, ImageUpload: true, Extra: map[string]any{"image_folder": "output"}},
			`[[], {"image_upload": true, "image_folder": "output"}]`},
		{"bare socket", Input{Type: "IMAGE", Bare: true}, `["IMAGE"]`},
		{"socket with a tooltip", Input{Type: "MODEL", Tooltip: "m"}, `["MODEL", {"tooltip": "m"}]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := json.Marshal(tc.in.spec())
			if err != nil {
				t.Fatal(err)
			}
			if !sameJSON(t, got, []byte(tc.want)) {
				t.Errorf("spec = %s, want %s", got, tc.want)
			}
			if err := tc.in.Check(); err != nil {
				t.Errorf("Check: %v", err)
			}
		})
	}
}

func TestInputCheck(t *testing.T) {
	tests := []struct {
		name string
		in   Input
		want string
	}{
		{"min above max", Input{Type: TypeInt, Min: Num(5), Max: Num(1)}, "min 5 is above max 1"},
		{"NaN bound", Input{Type: TypeFloat, Max: Num(math.NaN())}, `max "nan" is not a finite number`},
		{"round both ways", Input{Type: TypeFloat, Round: Num(0.1), NoRound: true}, "both Round and NoRound"},
		{"default below min", Input{Type: TypeFloat, Default: -1.0, Min: Num(0.0)}, "default -1 is outside [0.0, inf]"},
		{"fractional INT default", Input{Type: TypeInt, Default: 1.5}, "not an integer"},
		{"string default of an INT", Input{Type: TypeInt, Default: "1"}, "is not a number"},
		{"int default of a STRING", Input{Type: TypeString, Default: 1}, "is not a string"},
		{"BOOLEAN default", Input{Type: TypeBoolean, Default: "true"}, "is not a bool"},
		{"typed key in Extra", Input{Type: TypeInt, Extra: map[string]any{"max": 3}}, `option "max" belongs in its field`},
		{"true bool key in Extra", Input{Type: TypeInt, Extra: map[string]any{"forceInput": true}}, `option "forceInput" belongs in its field`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Name = "x"
			if err := tc.in.Check(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check = %v, want %q", err, tc.want)
			}
		})
	}
	// A false that a bool field cannot say may stay in Extra.
	ok := Input{Name: "x", Type: TypeInt, Extra: map[string]any{"control_after_generate": false}}
	if err := ok.Check(); err != nil {
		t.Fatal(err)
	}
}

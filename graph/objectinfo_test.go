package graph

import (
	"encoding/json"
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
	if seed.Options["max"] != json.Number("18446744073709551615") {
		t.Errorf("seed max = %#v, want the exact number", seed.Options["max"])
	}
	combo, _ := sampler.Input("sampler_name")
	if combo.Type != TypeCombo || !combo.ComboV3 || !reflect.DeepEqual(combo.Choices(), []string{"euler", "heun"}) || combo.Options["options"] != nil {
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

package sampling

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
)

// The registries must list exactly ComfyUI 0.3.64's sampler and scheduler names in its
// order: KSampler's combo lists in ComfyUI's own /object_info.
func TestNamesMatchComfyUIObjectInfo(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(testenv.ReferenceDir(t), "comfyui-0.3.64-object_info.json"))
	if err != nil {
		t.Fatal(err)
	}
	var info map[string]struct {
		Input struct {
			Required map[string][]json.RawMessage `json:"required"`
		} `json:"input"`
	}
	if err := json.Unmarshal(data, &info); err != nil {
		t.Fatal(err)
	}
	combo := func(name string) []string {
		spec := info["KSampler"].Input.Required[name]
		if len(spec) == 0 {
			t.Fatalf("KSampler.%s missing from object_info", name)
		}
		var values []string
		if err := json.Unmarshal(spec[0], &values); err != nil {
			t.Fatalf("KSampler.%s: %v", name, err)
		}
		return values
	}
	if want, got := combo("sampler_name"), SamplerNames(); !slices.Equal(got, want) {
		t.Errorf("SamplerNames() =\n%v\nComfyUI has\n%v", got, want)
	}
	if want, got := combo("scheduler"), SchedulerNames(); !slices.Equal(got, want) {
		t.Errorf("SchedulerNames() =\n%v\nComfyUI has\n%v", got, want)
	}
}

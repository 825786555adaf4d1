package nodes

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/internal/testenv"
)

type stubNode struct{ s graph.Schema }

func (n *stubNode) Schema() *graph.Schema { return &n.s }

func (n *stubNode) Run(context.Context, *Env, Inputs) (Result, error) { return Result{}, nil }

func registryOf(t *testing.T, names ...string) *Registry {
	t.Helper()
	r := NewRegistry()
	for _, name := range names {
		if err := r.Register(&stubNode{graph.Schema{Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func TestCheckCoverage(t *testing.T) {
	tests := []struct {
		name                    string
		registered, list        []string
		present, missing, extra []string
		percent                 float64
	}{
		{"empty list", []string{"A"}, nil, []string{}, []string{}, []string{"A"}, 0},
		{"all present", []string{"B", "A"}, []string{"A", "B"}, []string{"A", "B"}, []string{}, []string{}, 100},
		{"some missing", []string{"SaveImage", "Mine"}, []string{"SaveImage", "KSampler", "VAEDecode", "KSampler", ""},
			[]string{"SaveImage"}, []string{"KSampler", "VAEDecode"}, []string{"Mine"}, 100.0 / 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := CheckCoverage(registryOf(t, tc.registered...), tc.list)
			if !reflect.DeepEqual(c.Present, tc.present) || !reflect.DeepEqual(c.Missing, tc.missing) || !reflect.DeepEqual(c.Extra, tc.extra) {
				t.Fatalf("coverage = %+v, want present %v missing %v extra %v", c, tc.present, tc.missing, tc.extra)
			}
			if c.Percent() != tc.percent {
				t.Errorf("percent = %v, want %v", c.Percent(), tc.percent)
			}
		})
	}
}

func TestObjectInfoClasses(t *testing.T) {
	got, err := ObjectInfoClasses([]byte(`{"VAEDecode": {"input": {}}, "KSampler": {}}`))
	if err != nil || !reflect.DeepEqual(got, []string{"KSampler", "VAEDecode"}) {
		t.Fatalf("got %v, %v", got, err)
	}
	if _, err := ObjectInfoClasses([]byte(`[1, 2]`)); err == nil {
		t.Fatal("a JSON array was accepted as object_info")
	}
}

func TestCoverageOfReference(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(testenv.ReferenceDir(t), "comfyui-0.3.64-object_info.json"))
	if err != nil {
		t.Fatal(err)
	}
	classes, err := ObjectInfoClasses(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(classes) < 300 {
		t.Fatalf("reference lists %d classes, expected ComfyUI's several hundred", len(classes))
	}
	c := CheckCoverage(registryOf(t, "SaveImage", "NotAComfyNode"), classes)
	if len(c.Present) != 1 || c.Present[0] != "SaveImage" || len(c.Missing) != len(classes)-1 || !reflect.DeepEqual(c.Extra, []string{"NotAComfyNode"}) {
		t.Fatalf("coverage = %d present %v, %d missing, extra %v", len(c.Present), c.Present, len(c.Missing), c.Extra)
	}
}

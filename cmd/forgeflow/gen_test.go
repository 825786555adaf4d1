package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
)

// TestComfyUINodesUpToDate checks the generated list against the reference object_info
// (run `go generate ./cmd/forgeflow` when it fails).
func TestComfyUINodesUpToDate(t *testing.T) {
	ref := filepath.Join(testenv.ReferenceDir(t), "comfyui-0.3.64-object_info.json")
	data, err := os.ReadFile(ref)
	if err != nil {
		t.Fatal(err)
	}
	var info map[string]json.RawMessage
	if err := json.Unmarshal(data, &info); err != nil {
		t.Fatal(err)
	}
	var names []string
	for k := range info {
		names = append(names, k)
	}
	sort.Strings(names)
	if len(names) != len(comfyUINodes) {
		t.Fatalf("reference has %d nodes, comfyui_nodes.go %d", len(names), len(comfyUINodes))
	}
	for i := range names {
		if names[i] != comfyUINodes[i] {
			t.Fatalf("entry %d: reference %q, generated %q", i, names[i], comfyUINodes[i])
		}
	}
}

// Package testenv finds the test fixtures that live outside the repository: the shared
// folder beside the checkout (../shared) with ComfyUI's golden outputs, node schemas and
// reference workflows.
//
// A test that needs them calls GoldenDir or SharedDir: where the folder is absent (a
// user's fresh clone) the test is skipped with a message naming the variable to set;
// under CI=true an absent folder fails the test instead, so CI cannot pass by skipping.
package testenv

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// RepoRoot returns the directory holding go.mod, found upwards from the working
// directory (go test runs each package in its own folder).
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("testenv: no go.mod above the working directory")
		}
		dir = parent
	}
}

// SharedDir returns the shared fixture folder: $FORGEFLOW_SHARED_DIR, or ../shared beside
// the repository root.
func SharedDir(t testing.TB) string {
	t.Helper()
	return need(t, "FORGEFLOW_SHARED_DIR", filepath.Join(RepoRoot(t), "..", "shared"))
}

// GoldenDir returns the golden fixture root: $FORGEFLOW_GOLDEN_DIR, or ../shared/golden
// beside the repository root.
func GoldenDir(t testing.TB) string {
	t.Helper()
	return need(t, "FORGEFLOW_GOLDEN_DIR", filepath.Join(RepoRoot(t), "..", "shared", "golden"))
}

// ReferenceDir returns ComfyUI's reference data (object_info, workflows): the
// "reference" folder of SharedDir.
func ReferenceDir(t testing.TB) string {
	t.Helper()
	return need(t, "FORGEFLOW_SHARED_DIR", filepath.Join(SharedDir(t), "reference"))
}

// GoldenCases reads the manifest.json of one golden family (a folder of GoldenDir) into
// cases of the caller's type and returns the family's folder with them. A manifest that
// cannot be read or parsed, or that lists no cases, fails the test.
func GoldenCases[C any](t testing.TB, family string) (string, []C) {
	t.Helper()
	dir := filepath.Join(GoldenDir(t), family)
	data, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	var m struct {
		Cases []C `json:"cases"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("testenv: %s/manifest.json: %v", family, err)
	}
	if len(m.Cases) == 0 {
		t.Fatalf("testenv: %s/manifest.json lists no cases", family)
	}
	return dir, m.Cases
}

func need(t testing.TB, env, def string) string {
	t.Helper()
	dir := def
	if v := os.Getenv(env); v != "" {
		dir = v
	}
	if st, err := os.Stat(dir); err == nil && st.IsDir() {
		return dir
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("testenv: fixture folder %s is missing (set %s); under CI=true this is a failure", dir, env)
	}
	t.Skipf("testenv: fixture folder %s is missing; set %s to run this test", dir, env)
	return ""
}

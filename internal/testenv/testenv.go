// Package testenv finds the test fixtures that live outside the repository: the shared
// folder beside the checkout (../shared) with ComfyUI's golden outputs, node schemas and
// reference workflows; and it reads the golden fixtures' manifests for the tests.
//
// A test that needs them calls GoldenDir, GoldenCases or SharedDir: where the folder is
// absent (a user's fresh clone) the test is skipped with a message naming the variable
// to set; under CI=true an absent folder fails the test instead, so CI cannot pass by
// skipping. testenv imports only the standard library, so every package's tests may
// use it.
package testenv

import (
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
	return need(t, "FORGEFLOW_SHARED_DIR", locate(t, "FORGEFLOW_SHARED_DIR", "shared"))
}

// GoldenDir returns the golden fixture root: $FORGEFLOW_GOLDEN_DIR, or ../shared/golden
// beside the repository root.
func GoldenDir(t testing.TB) string {
	t.Helper()
	return need(t, "FORGEFLOW_GOLDEN_DIR", locate(t, "FORGEFLOW_GOLDEN_DIR", filepath.Join("shared", "golden")))
}

// ReferenceDir returns ComfyUI's reference data (object_info, workflows): the
// "reference" folder of the shared folder ($FORGEFLOW_SHARED_DIR/reference, or
// ../shared/reference).
func ReferenceDir(t testing.TB) string {
	t.Helper()
	return need(t, "FORGEFLOW_SHARED_DIR", filepath.Join(locate(t, "FORGEFLOW_SHARED_DIR", "shared"), "reference"))
}

// EndToEnd marks t as an end-to-end test (one that drives the whole program: the CLI,
// the server over a real engine, workflow files, every golden suite): it is skipped
// under -short. Such tests also sit in files behind the integration build tag.
func EndToEnd(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("testenv: end-to-end test skipped under -short")
	}
}

// locate returns $env, or rel beside the repository root.
func locate(t testing.TB, env, rel string) string {
	t.Helper()
	if v := os.Getenv(env); v != "" {
		return v
	}
	return filepath.Join(RepoRoot(t), "..", rel)
}

// need returns dir when it is a folder; otherwise it skips t, or fails it under CI=true,
// with a message naming env.
func need(t testing.TB, env, dir string) string {
	t.Helper()
	if st, err := os.Stat(dir); err == nil && st.IsDir() {
		return dir
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("testenv: fixture folder %s is missing (set %s); under CI=true this is a failure", dir, env)
	}
	t.Skipf("testenv: fixture folder %s is missing; set %s to run this test", dir, env)
	return ""
}

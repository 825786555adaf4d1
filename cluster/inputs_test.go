package cluster

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/graph"
)

// TestInputsTravel: the input files a prompt names go from the pushing front's input
// folder to the input folder of the worker that leases it; annotated, missing and
// outside names are left alone; content already there is not written again.
func TestInputsTravel(t *testing.T) {
	n := startNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	frontDir, workerDir := t.TempDir(), t.TempDir()
	outside := filepath.Join(filepath.Dir(frontDir), "secret.png")
	if err := os.WriteFile(outside, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(outside)
	files := map[string][]byte{
		"photo.png":     bytes.Repeat([]byte("png"), 1000),
		"masks/m.png":   []byte("mask"),
		"same.png":      []byte("already on the worker"),
		"untouched.png": []byte("not named by the prompt"),
	}
	for name, b := range files {
		p := filepath.Join(frontDir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	same := filepath.Join(workerDir, "same.png")
	if err := os.WriteFile(same, files["same.png"], 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(same, old, old); err != nil {
		t.Fatal(err)
	}

	front, err := Open(ctx, n.ClientURL(), Options{Name: "front", Prefix: "in", InputDir: frontDir})
	if err != nil {
		t.Fatal(err)
	}
	defer front.Close()
	worker, err := Open(ctx, n.ClientURL(), Options{Name: "worker", Prefix: "in", InputDir: workerDir})
	if err != nil {
		t.Fatal(err)
	}
	defer worker.Close()

	job := &executor.Job{ID: "p1", Prompt: graph.Prompt{
		"1": {ClassType: "LoadImage", Inputs: map[string]any{"image": "photo.png [input]"}},
		"2": {ClassType: "LoadImageMask", Inputs: map[string]any{"image": "masks/m.png", "channel": "alpha"}},
		"3": {ClassType: "LoadImage", Inputs: map[string]any{"image": "same.png"}},
		"4": {ClassType: "LoadImage", Inputs: map[string]any{"image": "../secret.png"}},
		"5": {ClassType: "LoadImage", Inputs: map[string]any{"image": "photo.png [output]"}},
		"6": {ClassType: "LoadImage", Inputs: map[string]any{"image": "missing.png"}},
	}}
	if _, err := front.Push(ctx, job, executor.PushOptions{}); err != nil {
		t.Fatal(err)
	}
	leased, err := worker.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if leased.ID != "p1" {
		t.Fatalf("leased %q", leased.ID)
	}
	for _, name := range []string{"photo.png", "masks/m.png", "same.png"} {
		got, err := os.ReadFile(filepath.Join(workerDir, filepath.FromSlash(name)))
		if err != nil || !bytes.Equal(got, files[name]) {
			t.Errorf("%s on the worker: %d bytes, %v", name, len(got), err)
		}
	}
	if st, err := os.Stat(same); err != nil || !st.ModTime().Equal(old) {
		t.Errorf("same.png was written again although its content was there")
	}
	for _, name := range []string{"untouched.png", "secret.png", "missing.png"} {
		if _, err := os.Stat(filepath.Join(workerDir, name)); err == nil {
			t.Errorf("%s is on the worker", name)
		}
	}
	rec, _, err := worker.read(ctx, "p1")
	if err != nil {
		t.Fatal(err)
	}
	var shipped []string
	for _, r := range rec.Job.Inputs {
		shipped = append(shipped, r.Name)
	}
	if want := []string{"masks/m.png", "photo.png", "same.png"}; !slices.Equal(shipped, want) {
		t.Errorf("shipped %v, want %v", shipped, want)
	}
	entries, _ := os.ReadDir(workerDir)
	for _, e := range entries {
		if filepath.Ext(e.Name()) != ".png" && e.Name() != "masks" {
			t.Errorf("left behind in the input folder: %s", e.Name())
		}
	}
}

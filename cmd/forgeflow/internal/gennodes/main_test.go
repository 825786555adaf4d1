package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGenerate(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "object_info.json")
	os.WriteFile(in, []byte(`{"SaveImage": {"input": {}}, "KSampler": {}, "CLIPTextEncode": {}}`), 0o644)
	out := filepath.Join(dir, "nodes.go")
	if err := generate(in, out); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	s := string(src)
	if !strings.Contains(s, "DO NOT EDIT") || !strings.Contains(s, "the 3 node class names") {
		t.Fatalf("header: %s", s)
	}
	i, j, k := strings.Index(s, `"CLIPTextEncode"`), strings.Index(s, `"KSampler"`), strings.Index(s, `"SaveImage"`)
	if i < 0 || !(i < j && j < k) {
		t.Fatalf("names missing or unsorted:\n%s", s)
	}
	if err := generate(filepath.Join(dir, "missing.json"), out); err == nil {
		t.Fatal("no error for a missing input")
	}
	os.WriteFile(in, []byte(`[1]`), 0o644)
	if err := generate(in, out); err == nil {
		t.Fatal("no error for a non-object input")
	}
}

package frontend

import (
	"io/fs"
	"strings"
	"testing"
)

// The embedded FS always has an index.html at its root: the editor when it was built,
// else the placeholder, which must say how to build the editor.
func TestFSServesIndex(t *testing.T) {
	b, err := fs.ReadFile(FS(), "index.html")
	if err != nil {
		t.Fatalf("index.html: %v", err)
	}
	page := string(b)
	if Built() {
		if !strings.Contains(page, "graph-canvas") {
			t.Errorf("built editor's index.html has no canvas element:\n%s", page)
		}
		return
	}
	if !strings.Contains(page, "make build") {
		t.Errorf("placeholder does not say how to build the editor:\n%s", page)
	}
}

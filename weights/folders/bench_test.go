package folders

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// makeTree writes files empty model files spread over 100 subfolders of 2 levels
// under base/models/checkpoints.
func makeTree(b *testing.B, base string, files int) {
	b.Helper()
	root := filepath.Join(base, "models", "checkpoints")
	for i := range files {
		dir := filepath.Join(root, fmt.Sprintf("g%02d", i%10), fmt.Sprintf("s%02d", (i/10)%10))
		if i < 100 {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		ext := ".safetensors"
		if i%7 == 0 {
			ext = ".txt" // filtered out
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("model_%05d%s", i, ext)), nil, 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkList measures GET /models/checkpoints on a 10,000-file tree: "warm" is the
// cached listing (every directory's time checked, nothing read), "cold" a full rescan.
func BenchmarkList(b *testing.B) {
	base := b.TempDir()
	makeTree(b, base, 10000)
	p, err := New(Options{BaseDir: base})
	if err != nil {
		b.Fatal(err)
	}
	first, err := p.List("checkpoints")
	if err != nil {
		b.Fatal(err)
	}
	if len(first) != 10000-10000/7-1 {
		b.Fatalf("listed %d files", len(first))
	}
	b.Run("warm/10000", func(b *testing.B) {
		for b.Loop() {
			if _, err := p.List("checkpoints"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cold/10000", func(b *testing.B) {
		for b.Loop() {
			p.AddDir("checkpoints", filepath.Join(base, "models", "checkpoints"), false) // drops the cache
			if _, err := p.List("checkpoints"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

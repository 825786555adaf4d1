package webpmux

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecode: any bytes give frames or an error, never a panic, and never more pixels
// than the bound.
func FuzzDecode(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.webp"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const bound = 1 << 16
		frames, durations, err := Decode(data, bound)
		if err != nil {
			return
		}
		total := 0
		for _, fr := range frames {
			total += fr.Rect.Dx() * fr.Rect.Dy()
		}
		if total > bound || len(durations) != len(frames) {
			t.Fatalf("%d frames, %d pixels, %d durations", len(frames), total, len(durations))
		}
	})
}

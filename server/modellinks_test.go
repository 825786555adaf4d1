package server

import (
	"encoding/json"
	"image/color"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/weights/folders"
)

// A model file that is a symbolic link into another drive (shared model folders,
// Stability Matrix) is listed, as ComfyUI lists it; the input, output and user folders
// stay confined to themselves.
func TestModelLinksFollowedOtherFoldersConfined(t *testing.T) {
	other := t.TempDir() // "another drive"
	writeFile(t, filepath.Join(other, "big.safetensors"), []byte("weights"))
	writeFile(t, filepath.Join(other, "shared", "xl.safetensors"), []byte("weights"))
	writeFile(t, filepath.Join(other, "secret.png"), pngBytes(t, 2, 2, func(x, y int) color.NRGBA { return color.NRGBA{1, 2, 3, 255} }))
	writeFile(t, filepath.Join(other, "secret.json"), []byte(`{"secret": true}`))

	var paths *folders.Paths
	ts := newTestServer(t, func(o *Options) {
		base := filepath.Dir(o.Dirs.Output)
		ck := filepath.Join(base, "models", "checkpoints")
		if err := os.MkdirAll(ck, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(other, "big.safetensors"), filepath.Join(ck, "big.safetensors")); err != nil {
			t.Skip("no symlinks:", err)
		}
		if err := os.Symlink(filepath.Join(other, "shared"), filepath.Join(ck, "shared")); err != nil {
			t.Fatal(err)
		}
		var err error
		if paths, err = folders.New(folders.Options{BaseDir: base}); err != nil {
			t.Fatal(err)
		}
		o.Models = paths
	})
	jsonEqual(t, ts.do(t, "GET", "/models/checkpoints", nil).Body.Bytes(), `["big.safetensors", "shared/xl.safetensors"]`)
	var files []modelFile
	if err := json.Unmarshal(ts.do(t, "GET", "/experiment/models/checkpoints", nil).Body.Bytes(), &files); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, f.Name)
		if f.Size != int64(len("weights")) {
			t.Errorf("%s: size %d, want the linked file's", f.Name, f.Size)
		}
	}
	if !slices.Equal(names, []string{"big.safetensors", "shared/xl.safetensors"}) {
		t.Fatalf("/experiment/models/checkpoints = %v", names)
	}

	// The same kind of link in input/, output/ or user/ leads nowhere.
	for _, d := range []string{ts.dirs.Input, ts.dirs.Output, filepath.Join(ts.dirs.User, "default")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink(filepath.Join(other, "secret.png"), filepath.Join(ts.dirs.Input, "in.png")))
	must(os.Symlink(filepath.Join(other, "secret.png"), filepath.Join(ts.dirs.Output, "out.png")))
	must(os.Symlink(filepath.Join(other, "secret.json"), filepath.Join(ts.dirs.User, "default", "s.json")))
	for _, target := range []string{"/view?filename=in.png&type=input", "/view?filename=out.png", "/userdata/s.json"} {
		rec := ts.do(t, "GET", target, nil)
		if rec.Code == 200 || strings.Contains(rec.Body.String(), "secret") {
			t.Errorf("%s: served a file outside its folder (status %d)", target, rec.Code)
		}
	}
}

package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"image/color"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/weights/folders"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// TestModelPreview: a preview file beside the model (MODEL.ext, then
// MODEL.preview.ext), else the cover image in the safetensors metadata; nothing from
// outside the model directory, whatever the name or a link says.
func TestModelPreview(t *testing.T) {
	base := t.TempDir()
	ckpt := filepath.Join(base, "models", "checkpoints")
	red := pngBytes(t, 2, 2, func(x, y int) color.NRGBA { return color.NRGBA{255, 0, 0, 255} })
	blue := pngBytes(t, 3, 1, func(x, y int) color.NRGBA { return color.NRGBA{0, 0, 255, 255} })
	green := pngBytes(t, 1, 1, func(x, y int) color.NRGBA { return color.NRGBA{0, 255, 0, 255} })

	writeFile(t, filepath.Join(ckpt, "a.safetensors"), []byte("x"))
	writeFile(t, filepath.Join(ckpt, "a.png"), red)
	writeFile(t, filepath.Join(ckpt, "sub", "b.ckpt"), []byte("x"))
	writeFile(t, filepath.Join(ckpt, "sub", "b.preview.jpeg"), blue) // a PNG named .jpeg: served as what it is
	var st bytes.Buffer
	covers, _ := json.Marshal([]string{base64.StdEncoding.EncodeToString([]byte("not an image")), base64.StdEncoding.EncodeToString(green)})
	if err := safetensors.Write(&st, nil, map[string]string{"ssmd_cover_images": string(covers)}); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(ckpt, "c.safetensors"), st.Bytes())
	writeFile(t, filepath.Join(ckpt, "d.safetensors"), []byte("x"))
	writeFile(t, filepath.Join(ckpt, "d.png"), []byte("<html>not an image</html>"))
	outside := filepath.Join(base, "secret.png")
	writeFile(t, outside, red)
	writeFile(t, filepath.Join(ckpt, "e.safetensors"), []byte("x"))
	if err := os.Symlink(outside, filepath.Join(ckpt, "e.png")); err != nil {
		t.Fatal(err)
	}
	paths, err := folders.New(folders.Options{BaseDir: base})
	if err != nil {
		t.Fatal(err)
	}
	ts := newTestServer(t, func(o *Options) { o.Models = paths })

	for _, tc := range []struct {
		target string
		want   []byte
	}{
		{"/experiment/models/preview/checkpoints/0/a.safetensors", red},
		{"/api/experiment/models/preview/checkpoints/0/sub/b.ckpt", blue},
		{"/experiment/models/preview/checkpoints/0/c.safetensors", green},
	} {
		rec := ts.do(t, "GET", tc.target, nil)
		if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), tc.want) {
			t.Errorf("%s: %d, %d bytes", tc.target, rec.Code, rec.Body.Len())
			continue
		}
		if ct := rec.Header().Get("Content-Type"); ct != "image/png" || rec.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: content type %q", tc.target, ct)
		}
	}
	for _, tc := range []struct {
		target string
		status int
	}{
		{"/experiment/models/preview/checkpoints/0/d.safetensors", 404}, // the "preview" is HTML
		{"/experiment/models/preview/checkpoints/0/e.safetensors", 404}, // a link out of the folder
		{"/experiment/models/preview/checkpoints/0/none.safetensors", 404},
		{"/experiment/models/preview/checkpoints/1/a.safetensors", 404}, // no second directory
		{"/experiment/models/preview/checkpoints/-1/a.safetensors", 404},
		{"/experiment/models/preview/checkpoints/x/a.safetensors", 400},
		{"/experiment/models/preview/checkpoints/0/", 400},
		{"/experiment/models/preview/nope/0/a.safetensors", 404},
		{"/experiment/models/preview/checkpoints/0/..%2F..%2Fsecret.png", 403},
		{"/experiment/models/preview/checkpoints/0/sub%5C..%5C..%5Csecret.png", 403},
	} {
		rec := ts.do(t, "GET", tc.target, nil)
		if rec.Code != tc.status {
			t.Errorf("%s: status %d, want %d", tc.target, rec.Code, tc.status)
		}
		if bytes.Equal(rec.Body.Bytes(), red) {
			t.Errorf("%s served the file outside the folder", tc.target)
		}
	}
}

func TestGlobalSubgraphs(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "Upscale twice.json"), []byte(`{"definitions": {"subgraphs": [{"id": "x", "essentials_category": "image"}]}, "nodes": []}`))
	writeFile(t, filepath.Join(dir, "plain.json"), []byte(`{"nodes": []}`))
	writeFile(t, filepath.Join(dir, "broken.json"), []byte(`{"nodes": [`))
	writeFile(t, filepath.Join(dir, "notes.txt"), []byte(`{}`))
	ts := newTestServer(t, func(o *Options) { o.Dirs.Blueprints = dir })

	var list map[string]map[string]any
	if err := json.Unmarshal(ts.do(t, "GET", "/global_subgraphs", nil).Body.Bytes(), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Fatalf("global subgraphs %v", list)
	}
	var upscale string
	for id, e := range list {
		if len(id) != 64 || e["source"] != "templates" || e["info"].(map[string]any)["node_pack"] != "comfyui" || e["data"] != nil {
			t.Errorf("entry %s: %v", id, e)
		}
		if e["name"] == "Upscale twice" {
			upscale = id
			if e["essentials_category"] != "image" {
				t.Errorf("essentials_category: %v", e)
			}
		}
	}
	rec := ts.do(t, "GET", "/api/global_subgraphs/"+upscale, nil)
	var one map[string]any
	json.Unmarshal(rec.Body.Bytes(), &one)
	if d, _ := one["data"].(string); !strings.Contains(d, `"essentials_category": "image"`) || one["name"] != "Upscale twice" {
		t.Errorf("one subgraph: %s", rec.Body)
	}
	jsonEqual(t, ts.do(t, "GET", "/global_subgraphs/nope", nil).Body.Bytes(), `null`)
	// The ids do not change between requests or restarts.
	again := newTestServer(t, func(o *Options) { o.Dirs.Blueprints = dir })
	if rec := again.do(t, "GET", "/global_subgraphs/"+upscale, nil); !strings.Contains(rec.Body.String(), "Upscale twice") {
		t.Errorf("id not stable: %s", rec.Body)
	}
	// Without a blueprints folder: none, as ComfyUI without custom nodes or blueprints.
	plain := newTestServer(t, nil)
	jsonEqual(t, plain.do(t, "GET", "/global_subgraphs", nil).Body.Bytes(), `{}`)
}

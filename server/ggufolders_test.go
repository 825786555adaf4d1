package server

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"

	"github.com/forgeflow/forgeflow/weights/folders"
)

// TestGGUFModelFolders checks ComfyUI-GGUF's unet_gguf and clip_gguf folders as
// ComfyUI with ComfyUI-GGUF serves them: last in /models, their .gguf files in
// /models/{folder}, the shared directory lists in /internal/folder_paths.
func TestGGUFModelFolders(t *testing.T) {
	base := t.TempDir()
	for _, n := range []string{"unet/a-Q4_0.gguf", "unet/b.safetensors", "diffusion_models/sub/c-Q8_0.gguf",
		"clip/t5-Q5_K_M.gguf", "text_encoders/clip_l.safetensors"} {
		writeFile(t, filepath.Join(base, "models", filepath.FromSlash(n)), []byte("x"))
	}
	paths, err := folders.New(folders.Options{BaseDir: base})
	if err != nil {
		t.Fatal(err)
	}
	ts := newTestServer(t, func(o *Options) { o.Models = paths })

	var list []string
	json.Unmarshal(ts.do(t, "GET", "/models", nil).Body.Bytes(), &list)
	if len(list) < 2 || !slices.Equal(list[len(list)-2:], []string{"unet_gguf", "clip_gguf"}) {
		t.Errorf("/models = %q, want unet_gguf and clip_gguf last", list)
	}
	for _, tc := range []struct{ target, want string }{
		{"/models/unet_gguf", `["a-Q4_0.gguf", "sub/c-Q8_0.gguf"]`},
		{"/api/models/clip_gguf", `["t5-Q5_K_M.gguf"]`},
		{"/models/diffusion_models", `["b.safetensors"]`},
		// The model library lists model extensions only, as ComfyUI's model manager.
		{"/experiment/models/unet_gguf", `[]`},
	} {
		t.Run(tc.target, func(t *testing.T) {
			rec := ts.do(t, "GET", tc.target, nil)
			if rec.Code != 200 {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			jsonEqual(t, rec.Body.Bytes(), tc.want)
		})
	}
	var fp map[string][]string
	json.Unmarshal(ts.do(t, "GET", "/internal/folder_paths", nil).Body.Bytes(), &fp)
	for view, shared := range map[string]string{"unet_gguf": "diffusion_models", "clip_gguf": "text_encoders"} {
		if len(fp[view]) == 0 || !slices.Equal(fp[view], fp[shared]) {
			t.Errorf("folder_paths %s = %q, want %s's %q", view, fp[view], shared, fp[shared])
		}
	}
	for _, bad := range []string{"/view_metadata/unet_gguf?filename=..%2F..%2Fx.gguf", "/view_metadata/unet_gguf?filename=%2Fetc%2Fpasswd"} {
		if rec := ts.do(t, "GET", bad, nil); rec.Code != 400 && rec.Code != 404 {
			t.Errorf("%s: %d", bad, rec.Code)
		}
	}
}

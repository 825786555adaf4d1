package server

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
	"github.com/forgeflow/forgeflow/weights/folders"
	"github.com/forgeflow/forgeflow/weights/memory"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

func TestObjectInfo(t *testing.T) {
	schemas := fakeSchemas{
		"Invert": {Name: "Invert", DisplayName: "Invert Image", Category: "image",
			Inputs:  []graph.Input{{Name: "image", Type: "IMAGE", Bare: true}},
			Outputs: []graph.Output{{Type: "IMAGE", Name: "IMAGE"}}},
	}
	ts := newTestServer(t, func(o *Options) { o.Nodes = schemas })
	want := `{"Invert": {"input": {"required": {"image": ["IMAGE"]}}, "input_order": {"required": ["image"]},
		"output": ["IMAGE"], "output_is_list": [false], "output_name": ["IMAGE"], "name": "Invert",
		"display_name": "Invert Image", "description": "", "python_module": "nodes", "category": "image", "output_node": false}}`
	jsonEqual(t, ts.do(t, "GET", "/object_info", nil).Body.Bytes(), want)
	jsonEqual(t, ts.do(t, "GET", "/api/object_info/Invert", nil).Body.Bytes(), want)
	jsonEqual(t, ts.do(t, "GET", "/object_info/Nope", nil).Body.Bytes(), `{}`)
}

func TestModels(t *testing.T) {
	base := t.TempDir()
	writeFile(t, filepath.Join(base, "models", "embeddings", "easy.pt"), []byte("x"))
	writeFile(t, filepath.Join(base, "models", "embeddings", "sub", "neg.safetensors"), []byte("x"))
	var st bytes.Buffer
	if err := safetensors.Write(&st, nil, map[string]string{"modelspec.title": "tiny"}); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(base, "models", "loras", "meta.safetensors"), st.Bytes())
	st.Reset()
	if err := safetensors.Write(&st, nil, nil); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(base, "models", "loras", "plain.safetensors"), st.Bytes())
	writeFile(t, filepath.Join(base, "secret.safetensors"), []byte("x"))
	// A header length of 2 MiB: over ComfyUI's 1 MiB limit, refused before reading it.
	huge := make([]byte, 8)
	huge[2] = 0x20
	writeFile(t, filepath.Join(base, "models", "loras", "huge.safetensors"), huge)
	paths, err := folders.New(folders.Options{BaseDir: base})
	if err != nil {
		t.Fatal(err)
	}
	ts := newTestServer(t, func(o *Options) { o.Models = paths })

	jsonEqual(t, ts.do(t, "GET", "/embeddings", nil).Body.Bytes(), `["easy", "sub/neg"]`)
	jsonEqual(t, ts.do(t, "GET", "/api/models/loras", nil).Body.Bytes(), `["huge.safetensors", "meta.safetensors", "plain.safetensors"]`)
	var folderList []string
	json.Unmarshal(ts.do(t, "GET", "/models", nil).Body.Bytes(), &folderList)
	if len(folderList) < 5 || !strings.Contains(strings.Join(folderList, ","), "checkpoints") {
		t.Fatalf("/models = %v", folderList)
	}
	isJSONError(t, ts.do(t, "GET", "/models/nonsense", nil), 404)
	// Legacy aliases load models but are not folders of their own, as in ComfyUI.
	isJSONError(t, ts.do(t, "GET", "/models/unet", nil), 404)
	jsonEqual(t, ts.do(t, "GET", "/models/diffusion_models", nil).Body.Bytes(), `[]`)

	jsonEqual(t, ts.do(t, "GET", "/view_metadata/loras?filename=meta.safetensors", nil).Body.Bytes(), `{"modelspec.title": "tiny"}`)

	var lib []struct {
		Name    string   `json:"name"`
		Folders []string `json:"folders"`
	}
	json.Unmarshal(ts.do(t, "GET", "/api/experiment/models", nil).Body.Bytes(), &lib)
	if len(lib) < 5 || lib[0].Folders == nil {
		t.Fatalf("/experiment/models = %+v", lib)
	}
	for _, e := range lib {
		if e.Name == "configs" || e.Name == "custom_nodes" {
			t.Fatalf("/experiment/models lists %s", e.Name)
		}
	}
	writeFile(t, filepath.Join(base, "models", "loras", ".hidden.safetensors"), []byte("x"))
	writeFile(t, filepath.Join(base, "models", "loras", "notes.txt"), []byte("x"))
	var files []modelFile
	json.Unmarshal(ts.do(t, "GET", "/experiment/models/loras", nil).Body.Bytes(), &files)
	var names []string
	for _, f := range files {
		names = append(names, f.Name)
		if f.PathIndex != 0 || f.Size <= 0 || f.Modified <= 0 {
			t.Errorf("entry %+v", f)
		}
	}
	if strings.Join(names, ",") != "huge.safetensors,meta.safetensors,plain.safetensors" {
		t.Fatalf("/experiment/models/loras = %v", names)
	}
	isJSONError(t, ts.do(t, "GET", "/experiment/models/nonsense", nil), 404)
	for _, tc := range []struct {
		name, target string
		status       int
	}{
		{"no metadata", "/view_metadata/loras?filename=plain.safetensors", 404},
		{"not safetensors", "/view_metadata/embeddings?filename=easy.pt", 404},
		{"unknown folder", "/view_metadata/nope?filename=a.safetensors", 404},
		{"missing file", "/view_metadata/loras?filename=none.safetensors", 404},
		{"header too large", "/view_metadata/loras?filename=huge.safetensors", 404},
		{"traversal", "/view_metadata/loras?filename=" + url.QueryEscape("../../secret.safetensors"), 400},
	} {
		t.Run(tc.name, func(t *testing.T) { isJSONError(t, ts.do(t, "GET", tc.target, nil), tc.status) })
	}
}

func TestSystemStatsAndFree(t *testing.T) {
	meminfo := filepath.Join(t.TempDir(), "meminfo")
	writeFile(t, meminfo, []byte("MemTotal:       2048 kB\nMemFree:         100 kB\nMemAvailable:    1024 kB\n"))
	mem := memory.New(memory.Options{MeminfoPath: meminfo})
	ts := newTestServer(t, func(o *Options) { o.Memory = mem; o.Argv = []string{"forgeflow", "serve"} })
	var got struct {
		System  map[string]any   `json:"system"`
		Devices []map[string]any `json:"devices"`
	}
	if err := json.Unmarshal(ts.do(t, "GET", "/system_stats", nil).Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"os", "ram_total", "ram_free", "comfyui_version", "required_frontend_version", "installed_templates_version",
		"required_templates_version", "python_version", "pytorch_version", "embedded_python", "argv"} {
		if _, ok := got.System[k]; !ok {
			t.Errorf("system.%s missing", k)
		}
	}
	if got.System["ram_total"] != float64(2048*1024) || got.System["ram_free"] != float64(1024*1024) || got.System["comfyui_version"] != "0.3.64" {
		t.Errorf("system = %v", got.System)
	}
	if d := got.Devices; len(d) != 1 || d[0]["type"] != "cpu" || d[0]["vram_total"] != float64(2048*1024) || d[0]["index"] != nil ||
		d[0]["torch_vram_total"] != float64(2048*1024) || d[0]["torch_vram_free"] != float64(1024*1024) {
		t.Fatalf("devices = %v", got.Devices)
	}
	for _, k := range []string{"name", "type", "index", "vram_total", "vram_free", "torch_vram_total", "torch_vram_free"} {
		if _, ok := got.Devices[0][k]; !ok {
			t.Errorf("devices[0].%s missing", k)
		}
	}

	jsonEqual(t, ts.do(t, "GET", "/features", nil).Body.Bytes(), `{"supports_preview_metadata": true, "max_upload_size": 104857600, "forgeflow_ws_prompt": true}`)

	if rec := ts.do(t, "POST", "/free", strings.NewReader(`{"unload_models": true, "free_memory": true}`)); rec.Code != 200 {
		t.Fatalf("free: %d", rec.Code)
	}
	// The executor's output cache: a prompt run again is served from it until
	// free_memory drops it (unload_models alone keeps it).
	runs := &countNode{}
	eng := newTestEngine(t, t.TempDir(), nil, runs)
	fts := newTestServer(t, func(o *Options) { o.Engine = eng })
	execute := func() {
		t.Helper()
		h := eng.Execute(context.Background(), &executor.Job{Prompt: graph.Prompt{"1": {ClassType: "Count", Inputs: map[string]any{}}}})
		if h.Status.StatusStr != executor.StatusSuccess {
			t.Fatalf("prompt failed: %+v", h.Status)
		}
	}
	execute()
	execute()
	fts.do(t, "POST", "/free", strings.NewReader(`{"unload_models": true}`))
	execute()
	if runs.n.Load() != 1 {
		t.Fatalf("node ran %d times, want 1: unload_models alone freed the output cache", runs.n.Load())
	}
	fts.do(t, "POST", "/free", strings.NewReader(`{"free_memory": true}`))
	execute()
	if runs.n.Load() != 2 {
		t.Fatalf("node ran %d times, want 2: free_memory did not reach the executor cache", runs.n.Load())
	}
	isJSONError(t, ts.do(t, "POST", "/free", strings.NewReader(`{`)), 400)
}

// gpuDevice stands for a CUDA backend's memory report.
type gpuDevice struct{}

func (gpuDevice) DeviceStats() memory.DeviceStats {
	return memory.DeviceStats{Name: "cuda:1 NVIDIA H100 80GB HBM3 : native", Type: "cuda", Index: 1,
		VRAMTotal: 80 << 30, VRAMFree: 70 << 30, TorchVRAMTotal: 6 << 30, TorchVRAMFree: 1 << 30}
}

func TestSystemStatsDevice(t *testing.T) {
	mem := memory.New(memory.Options{RAMBudget: -1})
	mem.AddDevice(gpuDevice{})
	ts := newTestServer(t, func(o *Options) { o.Memory = mem })
	var got struct {
		Devices []map[string]any `json:"devices"`
	}
	if err := json.Unmarshal(ts.do(t, "GET", "/system_stats", nil).Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"name": "cuda:1 NVIDIA H100 80GB HBM3 : native", "type": "cuda", "index": float64(1),
		"vram_total": float64(80 << 30), "vram_free": float64(70 << 30), "torch_vram_total": float64(6 << 30), "torch_vram_free": float64(1 << 30)}
	if len(got.Devices) != 1 || len(got.Devices[0]) != len(want) {
		t.Fatalf("devices = %v", got.Devices)
	}
	for k, v := range want {
		if got.Devices[0][k] != v {
			t.Errorf("%s = %v, want %v", k, got.Devices[0][k], v)
		}
	}
}

func TestSettings(t *testing.T) {
	ts := newTestServer(t, nil)
	jsonEqual(t, ts.do(t, "GET", "/settings", nil).Body.Bytes(), `{}`)
	jsonEqual(t, ts.do(t, "GET", "/settings/Comfy.Theme", nil).Body.Bytes(), `null`)
	if rec := ts.do(t, "POST", "/settings", strings.NewReader(`{"Comfy.Theme": "dark", "Comfy.Seed": 18446744073709551615}`)); rec.Code != 200 {
		t.Fatal(rec.Code, rec.Body)
	}
	if rec := ts.do(t, "POST", "/api/settings/Comfy.Locale", strings.NewReader(`"fr"`)); rec.Code != 200 {
		t.Fatal(rec.Code, rec.Body)
	}
	jsonEqual(t, ts.do(t, "GET", "/api/settings/Comfy.Theme", nil).Body.Bytes(), `"dark"`)
	got := ts.do(t, "GET", "/settings", nil).Body.String()
	jsonEqual(t, []byte(got), `{"Comfy.Theme": "dark", "Comfy.Locale": "fr", "Comfy.Seed": 18446744073709551615}`)
	if !strings.Contains(got, "18446744073709551615") {
		t.Errorf("big integer lost digits: %s", got)
	}
	if _, err := os.Stat(filepath.Join(ts.dirs.User, "default", "comfy.settings.json")); err != nil {
		t.Fatal("settings not stored in user/default:", err)
	}
	isJSONError(t, ts.do(t, "POST", "/settings", strings.NewReader(`[1]`)), 400)
	isJSONError(t, ts.do(t, "POST", "/settings/x", strings.NewReader(`{bad`)), 400)
	// A corrupt file reads as empty rather than failing.
	writeFile(t, filepath.Join(ts.dirs.User, "default", "comfy.settings.json"), []byte("{corrupt"))
	jsonEqual(t, ts.do(t, "GET", "/settings", nil).Body.Bytes(), `{}`)
}

func TestUserdata(t *testing.T) {
	ts := newTestServer(t, nil)
	jsonEqual(t, ts.do(t, "GET", "/users", nil).Body.Bytes(), `{"storage": "server", "migrated": false}`)
	code := func(method, target, body string) (int, string) {
		rec := ts.do(t, method, target, strings.NewReader(body))
		return rec.Code, rec.Body.String()
	}
	steps := []struct {
		name, method, target, body string
		status                     int
		want                       string // JSON; "" to skip
	}{
		{"create", "POST", "/userdata/workflows%2Fa.json", `{"nodes": []}`, 200, `"workflows/a.json"`},
		{"create nested", "POST", "/api/userdata/workflows%2Fdeep%2Fb.json", `{}`, 200, `"workflows/deep/b.json"`},
		{"no overwrite", "POST", "/userdata/workflows%2Fa.json?overwrite=false", `{}`, 409, ""},
		{"overwrite", "POST", "/userdata/workflows%2Fa.json", `{"nodes": [1]}`, 200, `"workflows/a.json"`},
		{"read", "GET", "/userdata/workflows%2Fa.json", "", 200, `{"nodes": [1]}`},
		{"read double-encoded", "GET", "/userdata/workflows%252Fa.json", "", 200, `{"nodes": [1]}`},
		{"list", "GET", "/userdata?dir=workflows", "", 200, `["a.json"]`},
		{"list recursive", "GET", "/userdata?dir=workflows&recurse=true", "", 200, `["a.json", "deep/b.json"]`},
		{"list split", "GET", "/userdata?dir=workflows&recurse=true&split=true", "", 200, `[["a.json", "a.json"], ["deep/b.json", "deep", "b.json"]]`},
		{"list no dir", "GET", "/userdata", "", 400, ""},
		{"list missing dir", "GET", "/userdata?dir=nothing", "", 404, ""},
		{"list traversal", "GET", "/userdata?dir=..%2F..", "", 403, ""},
		{"move", "POST", "/userdata/workflows%2Fa.json/move/workflows%2Fc.json", "", 200, `"workflows/c.json"`},
		{"move missing", "POST", "/userdata/workflows%2Fa.json/move/workflows%2Fd.json", "", 404, ""},
		{"move onto existing without overwrite", "POST", "/userdata/workflows%2Fc.json/move/workflows%2Fdeep%2Fb.json?overwrite=false", "", 409, ""},
		{"move out of the folder", "POST", "/userdata/workflows%2Fc.json/move/..%2F..%2Fescaped.json", "", 403, ""},
		{"read traversal", "GET", "/userdata/..%2F..%2Foutput%2Fx", "", 403, ""},
		{"write traversal", "POST", "/userdata/..%2Fescaped.json", "x", 403, ""},
		{"write absolute", "POST", "/userdata/%2Ftmp%2Fescaped.json", "x", 403, ""},
		{"delete", "DELETE", "/userdata/workflows%2Fc.json", "", 204, ""},
		{"delete missing", "DELETE", "/userdata/workflows%2Fc.json", "", 404, ""},
		{"read missing", "GET", "/userdata/workflows%2Fc.json", "", 404, ""},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			c, body := code(st.method, st.target, st.body)
			if c != st.status {
				t.Fatalf("status %d, want %d: %s", c, st.status, body)
			}
			if st.want != "" {
				jsonEqual(t, []byte(body), st.want)
			}
			if c >= 400 && !strings.Contains(body, `"error"`) {
				t.Fatalf("error answer without JSON error: %s", body)
			}
		})
	}
	var info []fileInfo
	if err := json.Unmarshal(ts.do(t, "GET", "/userdata?dir=workflows&recurse=true&full_info=true", nil).Body.Bytes(), &info); err != nil {
		t.Fatal(err)
	}
	if len(info) != 1 || info[0].Path != "deep/b.json" || info[0].Size != 2 || info[0].Modified <= 0 {
		t.Fatalf("full_info = %+v", info)
	}
	rec := ts.do(t, "POST", "/userdata/x.json?full_info=true", strings.NewReader("abc"))
	var one fileInfo
	if err := json.Unmarshal(rec.Body.Bytes(), &one); err != nil || one.Path != "x.json" || one.Size != 3 {
		t.Fatalf("post full_info = %s", rec.Body)
	}
	for _, name := range []string{"escaped.json"} {
		for _, dir := range []string{ts.base, ts.dirs.User, "/tmp"} {
			if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
				t.Fatalf("a user file escaped to %s", dir)
			}
		}
	}
	jsonEqual(t, ts.do(t, "GET", "/users", nil).Body.Bytes(), `{"storage": "server", "migrated": true}`)
}

func TestUserdataV2(t *testing.T) {
	ts := newTestServer(t, nil)
	writeFile(t, filepath.Join(ts.dirs.User, "default", "workflows", "b.json"), []byte("{}"))
	writeFile(t, filepath.Join(ts.dirs.User, "default", "workflows", "sub", "A.json"), []byte("{1}"))
	writeFile(t, filepath.Join(ts.dirs.User, "default", "z.txt"), []byte("z"))
	var got []map[string]any
	rec := ts.do(t, "GET", "/api/v2/userdata?path=workflows", nil)
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err, rec.Body)
	}
	var names []string
	for _, e := range got {
		names = append(names, e["type"].(string)+":"+e["path"].(string))
	}
	// Folders first, then files by lower-case name: A.json sorts before b.json.
	if strings.Join(names, " ") != "directory:workflows/sub file:workflows/sub/A.json file:workflows/b.json" {
		t.Fatalf("entries %v", names)
	}
	if got[1]["size"] != float64(3) || got[1]["modified"] == nil || got[0]["size"] != nil {
		t.Fatalf("file fields %v", got)
	}
	isJSONError(t, ts.do(t, "GET", "/v2/userdata?path=..", nil), 400)
	isJSONError(t, ts.do(t, "GET", "/v2/userdata?path=none", nil), 404)
	isJSONError(t, ts.do(t, "GET", "/v2/userdata?path=z.txt", nil), 400)
}

func TestUserdataTooLarge(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.MaxUploadSize = 10 })
	isJSONError(t, ts.do(t, "POST", "/userdata/a.json", strings.NewReader(strings.Repeat("x", 11))), 413)
}

func TestStatic(t *testing.T) {
	files := fstest.MapFS{
		"index.html":            {Data: []byte("<html>editor</html>")},
		"assets/app.js":         {Data: []byte("console.log(1)")},
		"extensions/core/a.js":  {Data: []byte("")},
		"extensions/core/b.css": {Data: []byte("")},
	}
	ts := newTestServer(t, func(o *Options) { o.Static = files })
	rec := ts.do(t, "GET", "/", nil)
	if rec.Code != 200 || rec.Body.String() != "<html>editor</html>" || rec.Header().Get("Cache-Control") != "no-cache" {
		t.Fatalf("index: %d %q %v", rec.Code, rec.Body, rec.Header())
	}
	if rec := ts.do(t, "GET", "/assets/app.js", nil); rec.Code != 200 || !strings.Contains(rec.Header().Get("Content-Type"), "javascript") {
		t.Fatalf("asset: %d %v", rec.Code, rec.Header())
	}
	isJSONError(t, ts.do(t, "GET", "/missing.js", nil), 404)
	jsonEqual(t, ts.do(t, "GET", "/extensions", nil).Body.Bytes(), `["/extensions/core/a.js"]`)

	bare := newTestServer(t, nil)
	rec = bare.do(t, "GET", "/", nil)
	isJSONError(t, rec, 404)
	if !strings.Contains(rec.Body.String(), "/api/") {
		t.Errorf("404 without a hint: %s", rec.Body)
	}
	jsonEqual(t, bare.do(t, "GET", "/api/extensions", nil).Body.Bytes(), `[]`)
	jsonEqual(t, bare.do(t, "GET", "/api/workflow_templates", nil).Body.Bytes(), `{}`)
	jsonEqual(t, bare.do(t, "GET", "/i18n", nil).Body.Bytes(), `{}`)
}

func TestOriginAndCORS(t *testing.T) {
	ts := newTestServer(t, nil)
	body := `{"prompt": ` + sinkPrompt + `}`
	for _, tc := range []struct {
		name, host, origin string
		status             int
	}{
		{"same origin", "127.0.0.1:8188", "http://127.0.0.1:8188", 200},
		{"no origin", "127.0.0.1:8188", "", 200},
		{"foreign site on loopback", "127.0.0.1:8188", "http://evil.example", 403},
		{"localhost name", "localhost:8188", "http://evil.example:8188", 403},
		{"origin without port", "localhost:8188", "http://localhost", 200},
		{"non-loopback host is not checked", "192.0.2.1:8188", "http://other.example", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptestRequest("POST", "/prompt", body, tc.host, tc.origin)
			rec := recorder(ts.Server, req)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
		})
	}
	cors := newTestServer(t, func(o *Options) { o.CORSOrigin = "*" })
	rec := recorder(cors.Server, httptestRequest("OPTIONS", "/prompt", "", "127.0.0.1:8188", "http://evil.example"))
	if rec.Code != 200 || rec.Header().Get("Access-Control-Allow-Origin") != "*" || rec.Header().Get("Access-Control-Allow-Methods") == "" {
		t.Fatalf("preflight: %d %v", rec.Code, rec.Header())
	}
	rec = recorder(cors.Server, httptestRequest("POST", "/prompt", body, "127.0.0.1:8188", "http://evil.example"))
	if rec.Code != 200 || rec.Header().Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("cors post: %d %v", rec.Code, rec.Header())
	}
}

func TestRecoverMiddleware(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.mux.HandleFunc("GET /boom", func(http.ResponseWriter, *http.Request) { panic("boom") })
	isJSONError(t, ts.do(t, "GET", "/boom", nil), 500)
	// The server still answers afterwards.
	if rec := ts.do(t, "GET", "/prompt", nil); rec.Code != 200 {
		t.Fatal(rec.Code)
	}
}

func httptestRequest(method, target, body, host, origin string) *http.Request {
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	req.Host = host
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	return req
}

func recorder(h http.Handler, req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestCompressResponses(t *testing.T) {
	schemas := fakeSchemas{"Invert": {Name: "Invert", Category: "image"}}
	ts := newTestServer(t, func(o *Options) { o.CompressResponses = true; o.Nodes = schemas })
	writeFile(t, filepath.Join(ts.dirs.Output, "a.png"), []byte("\x89PNG\r\n\x1a\nrest"))
	rec := ts.do(t, "GET", "/object_info", nil, "Accept-Encoding", "gzip, deflate")
	if rec.Header().Get("Content-Encoding") != "gzip" {
		t.Fatalf("JSON not compressed: %v", rec.Header())
	}
	zr, err := gzip.NewReader(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil || !strings.Contains(string(plain), `"Invert"`) {
		t.Fatalf("gunzipped %q, %v", plain, err)
	}
	if rec := ts.do(t, "GET", "/view?filename=a.png", nil, "Accept-Encoding", "gzip"); rec.Header().Get("Content-Encoding") != "" || rec.Body.String() != "\x89PNG\r\n\x1a\nrest" {
		t.Fatalf("a file was compressed: %v", rec.Header())
	}
	if rec := ts.do(t, "GET", "/object_info", nil); rec.Header().Get("Content-Encoding") != "" {
		t.Fatal("compressed for a client that did not ask")
	}
}

// countNode is an output node that counts its runs.
type countNode struct{ n atomic.Int64 }

func (*countNode) Schema() *graph.Schema { return &graph.Schema{Name: "Count", OutputNode: true} }

func (c *countNode) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	c.n.Add(1)
	return nodes.Result{}, nil
}

package server

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

func TestRelPath(t *testing.T) {
	for _, tc := range []struct {
		parts []string
		want  string // "" for an error
	}{
		{[]string{"", "a.png"}, "a.png"},
		{[]string{"sub/dir", "a.png"}, "sub/dir/a.png"},
		{[]string{"sub/./dir/", "a.png"}, "sub/dir/a.png"},
		{[]string{""}, "."},
		{[]string{"..", "a.png"}, ""},
		{[]string{"a/../..", "x"}, ""},
		{[]string{"a/..", "x"}, ""}, // refused although it stays inside: ".." is never needed
		{[]string{"/etc", "passwd"}, ""},
		{[]string{"", "/etc/passwd"}, ""},
		{[]string{"", "a\x00.png"}, ""},
		{[]string{"..\\..\\x", ""}, ""},
	} {
		got, err := relPath(tc.parts...)
		if tc.want == "" {
			if err == nil {
				t.Errorf("relPath(%q) = %q, want an error", tc.parts, got)
			}
			continue
		}
		if err != nil || got != filepath.FromSlash(tc.want) {
			t.Errorf("relPath(%q) = %q, %v; want %q", tc.parts, got, err, tc.want)
		}
	}
}

// FuzzRelPath checks that whatever relPath accepts is a local path.
func FuzzRelPath(f *testing.F) {
	for _, s := range []string{"a.png", "../x", "sub/../../x", "/abs", "a/./b", "..", ".", "a\\..\\b", "%2e%2e/x"} {
		f.Add("", s)
		f.Add(s, "f.png")
	}
	f.Fuzz(func(t *testing.T, sub, name string) {
		rel, err := relPath(sub, name)
		if err != nil {
			return
		}
		if rel != "." && !filepath.IsLocal(rel) {
			t.Fatalf("relPath(%q, %q) = %q is not local", sub, name, rel)
		}
		for _, c := range strings.Split(filepath.ToSlash(rel), "/") {
			if c == ".." {
				t.Fatalf("relPath(%q, %q) = %q has ..", sub, name, rel)
			}
		}
	})
}

// TestEveryRouteUnderAPI checks that each ComfyUI route answers at its own path and under
// /api/ (a route missing from the mux would fall through to the static 404 or 405).
func TestEveryRouteUnderAPI(t *testing.T) {
	routes := []struct{ method, path string }{
		{"GET", "/ws"}, {"GET", "/prompt"}, {"POST", "/prompt"}, {"GET", "/queue"}, {"POST", "/queue"},
		{"POST", "/interrupt"}, {"GET", "/history"}, {"POST", "/history"}, {"GET", "/history/x"},
		{"GET", "/object_info"}, {"GET", "/object_info/X"}, {"GET", "/view"}, {"GET", "/view_metadata/loras"},
		{"POST", "/upload/image"}, {"POST", "/upload/mask"}, {"GET", "/embeddings"}, {"GET", "/models"},
		{"GET", "/models/checkpoints"}, {"GET", "/extensions"}, {"GET", "/system_stats"}, {"GET", "/features"},
		{"POST", "/free"}, {"GET", "/settings"}, {"POST", "/settings"}, {"GET", "/settings/x"}, {"POST", "/settings/x"},
		{"GET", "/users"}, {"GET", "/userdata"}, {"GET", "/userdata/x"}, {"POST", "/userdata/x"}, {"DELETE", "/userdata/x"},
		{"POST", "/userdata/x/move/y"}, {"GET", "/v2/userdata"}, {"GET", "/workflow_templates"}, {"GET", "/i18n"}, {"GET", "/experiment/models"}, {"GET", "/experiment/models/loras"},
		{"POST", "/users"}, {"GET", "/experiment/models/preview/loras/0/a.safetensors"}, {"GET", "/global_subgraphs"}, {"GET", "/global_subgraphs/x"},
		// ComfyUI declares the jobs routes with /api already (so also /api/api/...).
		{"GET", "/api/jobs"}, {"GET", "/api/jobs/x"}, {"POST", "/api/jobs/x/cancel"}, {"POST", "/api/jobs/cancel"},
	}
	ts := newTestServer(t, nil)
	for _, r := range routes {
		for _, prefix := range []string{"", "/api"} {
			req, _ := http.NewRequest(r.method, prefix+r.path, nil)
			_, pattern := ts.mux.Handler(req)
			if pattern == "" || pattern == "GET /" {
				t.Errorf("%s %s%s is not routed (pattern %q)", r.method, prefix, r.path, pattern)
			}
		}
	}
}

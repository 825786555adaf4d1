package server

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/forgeflow/forgeflow/weights/folders"
)

func TestLogBuffer(t *testing.T) {
	b := NewLogBuffer(3)
	log := slog.New(b.Handler(slog.NewTextHandler(nopWriter{}, &slog.HandlerOptions{Level: slog.LevelInfo}))).With("part", "test")
	log.Debug("not kept: below the next handler's level")
	for i := range 5 {
		log.Info("line", "i", i)
	}
	log.WithGroup("g").Warn("long", "v", strings.Repeat("x", 3*maxLogLine))
	got := b.Entries()
	if len(got) != 3 {
		t.Fatalf("%d entries, want 3", len(got))
	}
	for i, want := range []string{"level=INFO msg=line part=test i=3\n", "level=INFO msg=line part=test i=4\n"} {
		if got[i].M != want {
			t.Errorf("entry %d: %q, want %q", i, got[i].M, want)
		}
		if _, err := time.Parse("2006-01-02T15:04:05.000000", got[i].T); err != nil {
			t.Errorf("entry %d time %q: %v", i, got[i].T, err)
		}
	}
	if m := got[2].M; len(m) > maxLogLine+8 || !strings.HasPrefix(m, "level=WARN msg=long part=test g.v=xxx") || !strings.HasSuffix(m, "…\n") {
		t.Errorf("long line kept as %d bytes: %.80q", len(m), m)
	}
}

// TestLogBufferLevels: the buffer keeps Info and above even when the console is set
// quieter, and the console still gets only what its level takes.
func TestLogBufferLevels(t *testing.T) {
	b := NewLogBuffer(10)
	var console strings.Builder
	log := slog.New(b.Handler(slog.NewTextHandler(&console, &slog.HandlerOptions{Level: slog.LevelWarn})))
	log.Debug("d")
	log.Info("i")
	log.Error("e")
	if got := b.Entries(); len(got) != 2 || !strings.Contains(got[0].M, "msg=i") || !strings.Contains(got[1].M, "msg=e") {
		t.Errorf("kept %v", got)
	}
	if c := console.String(); strings.Contains(c, "msg=i") || !strings.Contains(c, "msg=e") {
		t.Errorf("console got %q", c)
	}
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }

// TestInternalLogs: the server's log lines (here: a refused prompt's warning) are in
// /internal/logs and /internal/logs/raw, and reach a subscribed websocket client as
// "logs" messages until it unsubscribes. The routes are not under /api.
func TestInternalLogs(t *testing.T) {
	ts := newTestServer(t, nil)
	hs := httptest.NewServer(ts)
	defer hs.Close()
	c := dialWS(t, hs.URL, "logclient")
	readWS(t, c) // status

	rec := ts.do(t, "PATCH", "/internal/logs/subscribe", strings.NewReader(`{"clientId": "logclient", "enabled": true}`))
	if rec.Code != http.StatusOK {
		t.Fatalf("subscribe: %d %s", rec.Code, rec.Body)
	}
	ts.do(t, "POST", "/prompt", strings.NewReader(`{"prompt": {"1": {"class_type": "Nope", "inputs": {}}}}`))
	for {
		m := readWS(t, c)
		if m.typ != "logs" {
			continue
		}
		entries, _ := m.data["entries"].([]any)
		if len(entries) != 1 || m.data["size"] != nil {
			t.Fatalf("logs message %s", m.raw)
		}
		if e := entries[0].(map[string]any); strings.Contains(e["m"].(string), "invalid prompt") {
			break
		}
	}

	var text string
	if err := json.Unmarshal(ts.do(t, "GET", "/internal/logs", nil).Body.Bytes(), &text); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6} - level=WARN msg="invalid prompt" prompt_id=`).MatchString(text) {
		t.Errorf("/internal/logs: %q", text)
	}
	var raw struct {
		Entries []LogEntry     `json:"entries"`
		Size    map[string]int `json:"size"`
	}
	json.Unmarshal(ts.do(t, "GET", "/internal/logs/raw", nil).Body.Bytes(), &raw)
	if len(raw.Entries) == 0 || raw.Size["cols"] != 80 || raw.Size["rows"] != 24 {
		t.Errorf("/internal/logs/raw: %+v", raw)
	}

	for _, body := range []string{`{"clientId": "logclient"}`, `{"enabled": true}`, `[]`, `{`} {
		if rec := ts.do(t, "PATCH", "/internal/logs/subscribe", strings.NewReader(body)); rec.Code != http.StatusBadRequest {
			t.Errorf("subscribe %s: %d", body, rec.Code)
		}
	}
	ts.do(t, "PATCH", "/internal/logs/subscribe", strings.NewReader(`{"clientId": "logclient", "enabled": false}`))
	ts.logSubsMu.Lock()
	n := len(ts.logSubs)
	ts.logSubsMu.Unlock()
	if n != 0 {
		t.Errorf("%d subscriptions after unsubscribing", n)
	}
	for _, p := range []string{"/api/internal/logs", "/api/internal/folder_paths"} {
		req, _ := http.NewRequest("GET", p, nil)
		if _, pattern := ts.mux.Handler(req); pattern != "GET /" {
			t.Errorf("%s routed to %q; ComfyUI serves /internal outside /api", p, pattern)
		}
	}
}

func TestInternalFolderPathsAndFiles(t *testing.T) {
	base := t.TempDir()
	paths, err := folders.New(folders.Options{BaseDir: base})
	if err != nil {
		t.Fatal(err)
	}
	ts := newTestServer(t, func(o *Options) { o.Models = paths })
	var fp map[string][]string
	json.Unmarshal(ts.do(t, "GET", "/internal/folder_paths", nil).Body.Bytes(), &fp)
	if d := fp["checkpoints"]; len(d) == 0 || d[0] != filepath.Join(base, "models", "checkpoints") {
		t.Errorf("folder_paths checkpoints = %v", d)
	}
	if _, ok := fp["custom_nodes"]; !ok && len(fp) < 5 {
		t.Errorf("folder_paths = %v", fp)
	}

	now := time.Now()
	for i, name := range []string{"old.png", "new.png", "mid.png"} {
		p := filepath.Join(ts.dirs.Output, name)
		writeFile(t, p, []byte("x"))
		mt := now.Add(-time.Duration([]int{3, 1, 2}[i]) * time.Hour)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(ts.dirs.Output, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	jsonEqual(t, ts.do(t, "GET", "/internal/files/output", nil).Body.Bytes(), `["new.png", "mid.png", "old.png"]`)
	jsonEqual(t, ts.do(t, "GET", "/internal/files/temp", nil).Body.Bytes(), `[]`)
	rec := ts.do(t, "GET", "/internal/files/models", nil)
	if rec.Code != http.StatusBadRequest {
		t.Errorf("files of an unknown type: %d", rec.Code)
	}
	jsonEqual(t, rec.Body.Bytes(), `{"error": "Invalid directory type"}`)
}

func TestPostUsers(t *testing.T) {
	ts := newTestServer(t, nil)
	post := func(body string) (int, string) {
		rec := ts.do(t, "POST", "/api/users", strings.NewReader(body))
		return rec.Code, rec.Body.String()
	}
	code, body := post(`{"username": "Ada Lovelace!"}`)
	var id string
	if code != http.StatusOK || json.Unmarshal([]byte(body), &id) != nil || !regexp.MustCompile(`^Ada-Lovelace-_[0-9a-f-]{36}$`).MatchString(id) {
		t.Fatalf("POST /users: %d %s", code, body)
	}
	var users map[string]string
	b, _ := os.ReadFile(filepath.Join(ts.dirs.User, "users.json"))
	if json.Unmarshal(b, &users) != nil || users[id] != "Ada Lovelace!" || users["default"] != "default" {
		t.Fatalf("users.json: %s", b)
	}
	for _, tc := range []struct{ body, want string }{
		{`{"username": "Ada Lovelace!"}`, `{"error": "Duplicate username."}`},
		{`{"username": "default"}`, `{"error": "Duplicate username."}`},
		{`{"username": "   "}`, `{"error": "username not provided"}`},
		{`{"username": "__system"}`, `{"error": "System User prefix not allowed"}`},
		{`{"username": 5}`, `{"error": "username not provided"}`},
		{`{}`, `{"error": "username not provided"}`},
	} {
		code, body := post(tc.body)
		if code != http.StatusBadRequest {
			t.Errorf("%s: status %d", tc.body, code)
		}
		jsonEqual(t, []byte(body), tc.want)
	}
	// Concurrent adds all land in users.json.
	errs := make(chan error, 8)
	for i := range 8 {
		go func() {
			code, body := post(fmt.Sprintf(`{"username": "u%d"}`, i))
			if code != http.StatusOK {
				errs <- fmt.Errorf("u%d: %d %s", i, code, body)
				return
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	b, _ = os.ReadFile(filepath.Join(ts.dirs.User, "users.json"))
	users = nil
	if json.Unmarshal(b, &users) != nil || len(users) != 10 {
		t.Errorf("users.json after concurrent adds: %s", b)
	}
}

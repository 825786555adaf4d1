package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/forgeflow/forgeflow/weights/folders"
	"github.com/forgeflow/forgeflow/weights/pull/pulltest"
)

// downloadServer is a test server with model folders under its base directory and
// downloads allowed from the local test host.
func downloadServer(t *testing.T, edit func(*Options)) (*testServer, string) {
	t.Helper()
	var base string
	ts := newTestServer(t, func(o *Options) {
		base = filepath.Dir(o.Dirs.Output)
		m, err := folders.New(folders.Options{BaseDir: base})
		if err != nil {
			t.Fatal(err)
		}
		o.Models = m
		o.Listen = []string{"127.0.0.1:8188"}
		o.AllowedHosts = []string{"example.com"} // httptest.NewRequest's Host
		o.Downloads = &DownloadOptions{Hosts: []string{"127.0.0.1"}}
		if edit != nil {
			edit(o)
		}
	})
	return ts, base
}

func postJSON(t *testing.T, ts *testServer, target string, body any, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	return ts.do(t, "POST", target, bytes.NewReader(b), append([]string{"Content-Type", "application/json"}, hdr...)...)
}

// waitDownload polls GET /forgeflow/models/downloads until download id has finished.
func waitDownload(t *testing.T, ts *testServer, id string, hdr ...string) download {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		var list struct{ Downloads []download }
		if err := json.Unmarshal(ts.do(t, "GET", "/forgeflow/models/downloads", nil, hdr...).Body.Bytes(), &list); err != nil {
			t.Fatal(err)
		}
		for _, d := range list.Downloads {
			if d.ID == id && d.Status != dlQueued && d.Status != dlRunning {
				return d
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("download %s did not finish", id)
	return download{}
}

func TestDownloadRoute(t *testing.T) {
	h := pulltest.New(t)
	data := pulltest.Safetensors(t, 600<<10, 3)
	h.Add("sd15.safetensors", pulltest.File{Data: data, Slow: 5 * time.Millisecond})
	ts, base := downloadServer(t, nil)
	srv := httptest.NewServer(ts)
	defer srv.Close()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/ws?clientId=editor", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	readWS(t, ws) // the first status message: the client is registered

	rec := postJSON(t, ts, "/api/forgeflow/models/download", map[string]string{
		"url": h.URL + "/Comfy-Org/sd/resolve/main/sd15.safetensors", "directory": "checkpoints", "name": "sd15.safetensors"})
	if rec.Code != http.StatusAccepted {
		t.Fatalf("POST: %d %s", rec.Code, rec.Body)
	}
	var started download
	json.Unmarshal(rec.Body.Bytes(), &started)
	// The websocket carries the download's progress to the end.
	var statuses []string
	var sawBytes bool
	ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("websocket: %v (statuses %v)", err, statuses)
		}
		var m struct {
			Type string
			Data download
		}
		json.Unmarshal(msg, &m)
		if m.Type != downloadEvent || m.Data.ID != started.ID {
			continue
		}
		if len(statuses) == 0 || statuses[len(statuses)-1] != m.Data.Status {
			statuses = append(statuses, m.Data.Status)
		}
		if m.Data.Status == dlRunning && m.Data.Done > 0 && m.Data.Total == int64(len(data)) {
			sawBytes = true
		}
		if m.Data.Status == dlDone {
			if !m.Data.Checked || m.Data.Done != int64(len(data)) {
				t.Fatalf("done event %+v", m.Data)
			}
			break
		}
		if m.Data.Status == dlFailed {
			t.Fatalf("download failed: %s", m.Data.Error)
		}
	}
	if statuses[0] != dlQueued || !sawBytes {
		t.Fatalf("statuses %v, progress with bytes seen: %v", statuses, sawBytes)
	}
	if b, _ := os.ReadFile(filepath.Join(base, "models", "checkpoints", "sd15.safetensors")); !bytes.Equal(b, data) {
		t.Fatal("the downloaded checkpoint differs")
	}
	jsonEqual(t, ts.do(t, "GET", "/models/checkpoints", nil).Body.Bytes(), `["sd15.safetensors"]`)
	// Once there, it is not fetched again.
	rec = postJSON(t, ts, "/forgeflow/models/download", map[string]string{"url": h.URL + "/files/sd15.safetensors", "folder": "checkpoints"})
	isJSONError(t, rec, http.StatusConflict)
}

func TestDownloadRefusals(t *testing.T) {
	h := pulltest.New(t)
	h.Add("m.safetensors", pulltest.File{Data: pulltest.Safetensors(t, 1<<10, 4)})
	ts, base := downloadServer(t, nil)
	good := h.URL + "/files/m.safetensors"
	for _, tc := range []struct {
		name   string
		body   map[string]string
		status int
		want   string
	}{
		{"host off the list", map[string]string{"url": "https://example.com/m.safetensors", "folder": "checkpoints"}, 403, "not allowed"},
		{"plain http elsewhere", map[string]string{"url": "http://10.0.0.1/m.safetensors", "folder": "checkpoints"}, 400, "https"},
		{"custom_nodes", map[string]string{"url": good, "folder": "custom_nodes"}, 400, "unknown model folder"},
		{"unknown folder", map[string]string{"url": good, "folder": "../.."}, 400, "unknown model folder"},
		{"name climbing out", map[string]string{"url": good, "folder": "loras", "name": "../../evil.safetensors"}, 400, "invalid model name"},
		{"absolute name", map[string]string{"url": good, "folder": "loras", "name": "/etc/x.safetensors"}, 400, "invalid model name"},
		{"pickle", map[string]string{"url": good, "folder": "loras", "name": "x.ckpt"}, 400, "pickle"},
		{"pickle from the URL", map[string]string{"url": h.URL + "/files/m.pth", "folder": "loras"}, 400, "pickle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := postJSON(t, ts, "/forgeflow/models/download", tc.body)
			isJSONError(t, rec, tc.status)
			if !strings.Contains(rec.Body.String(), tc.want) {
				t.Fatalf("%s", rec.Body)
			}
		})
	}
	// A listed host that redirects to the machine under another name: refused when
	// connecting, nothing written.
	port := h.URL[strings.LastIndexByte(h.URL, ':'):]
	h2 := pulltest.New(t)
	h2.Config.Handler = http.RedirectHandler("http://localhost"+port+"/files/m.safetensors", http.StatusFound)
	rec := postJSON(t, ts, "/forgeflow/models/download", map[string]string{"url": h2.URL + "/r.safetensors", "folder": "loras"})
	if rec.Code != http.StatusAccepted {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	var d download
	json.Unmarshal(rec.Body.Bytes(), &d)
	if d = waitDownload(t, ts, d.ID); d.Status != dlFailed || !strings.Contains(d.Error, "not allowed") {
		t.Fatalf("redirect to an unlisted local host: %+v", d)
	}
	if entries, _ := os.ReadDir(filepath.Join(base, "models", "loras")); len(entries) > 0 {
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), ".forgeflow-") {
				t.Fatalf("written: %s", e.Name())
			}
		}
	}

	// Off without DownloadOptions.
	off := newTestServer(t, nil)
	isJSONError(t, postJSON(t, off, "/forgeflow/models/download", map[string]string{"url": good, "folder": "loras"}), 403)
	jsonEqual(t, off.do(t, "GET", "/forgeflow/models/downloads", nil).Body.Bytes(),
		`{"enabled": false, "reason": "downloads through the server are off (forgeflow serve --download-hosts)", "hosts": [], "downloads": [], "starters": []}`)
}

// Listening beyond loopback, downloads need the access token.
func TestDownloadNeedsTokenBeyondLoopback(t *testing.T) {
	h := pulltest.New(t)
	h.Add("m.safetensors", pulltest.File{Data: pulltest.Safetensors(t, 1<<10, 5)})
	body := map[string]string{"url": h.URL + "/files/m.safetensors", "folder": "loras"}
	open, _ := downloadServer(t, func(o *Options) { o.Listen = []string{"0.0.0.0:8188"} })
	rec := postJSON(t, open, "/forgeflow/models/download", body)
	isJSONError(t, rec, http.StatusForbidden)
	if !strings.Contains(rec.Body.String(), "--auth-token") {
		t.Fatalf("%s", rec.Body)
	}
	var st struct {
		Enabled bool
		Reason  string
	}
	json.Unmarshal(open.do(t, "GET", "/forgeflow/models/downloads", nil).Body.Bytes(), &st)
	if st.Enabled || st.Reason == "" {
		t.Fatalf("status %+v", st)
	}

	locked, _ := downloadServer(t, func(o *Options) { o.Listen = []string{"0.0.0.0:8188"}; o.AuthToken = testToken })
	isJSONError(t, postJSON(t, locked, "/forgeflow/models/download", body), http.StatusUnauthorized)
	rec = postJSON(t, locked, "/forgeflow/models/download", body, "Authorization", "Bearer "+testToken)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("with the token: %d %s", rec.Code, rec.Body)
	}
	var d download
	json.Unmarshal(rec.Body.Bytes(), &d)
	if d = waitDownload(t, locked, d.ID, "Authorization", "Bearer "+testToken); d.Status != dlDone {
		t.Fatalf("%+v", d)
	}
}

func TestDownloadCancel(t *testing.T) {
	h := pulltest.New(t)
	h.Add("big.safetensors", pulltest.File{Data: pulltest.Safetensors(t, 4<<20, 6), Slow: 50 * time.Millisecond})
	ts, base := downloadServer(t, nil)
	rec := postJSON(t, ts, "/forgeflow/models/download", map[string]string{"url": h.URL + "/files/big.safetensors", "folder": "vae"})
	var d download
	json.Unmarshal(rec.Body.Bytes(), &d)
	// The same file again while it runs: refused.
	isJSONError(t, postJSON(t, ts, "/forgeflow/models/download", map[string]string{"url": h.URL + "/files/big.safetensors", "folder": "vae"}), http.StatusConflict)
	if rec := ts.do(t, "POST", "/forgeflow/models/download/"+d.ID+"/cancel", nil); rec.Code != http.StatusOK {
		t.Fatalf("cancel: %d %s", rec.Code, rec.Body)
	}
	if d = waitDownload(t, ts, d.ID); d.Status != dlCancelled {
		t.Fatalf("%+v", d)
	}
	if _, err := os.Stat(filepath.Join(base, "models", "vae", "big.safetensors")); err == nil {
		t.Fatal("a cancelled download has its final name")
	}
	isJSONError(t, ts.do(t, "POST", "/forgeflow/models/download/nope/cancel", nil), http.StatusNotFound)
}

// One click in the editor: a starter model's missing files and tokenizers.
func TestDownloadStarter(t *testing.T) {
	h := pulltest.New(t)
	ckpt := pulltest.Safetensors(t, 32<<10, 7)
	h.Add("v1-5-pruned-emaonly-fp16.safetensors", pulltest.File{Data: ckpt})
	h.Add("vocab.json", pulltest.File{Data: []byte(`{"a": 0}`)})
	h.Add("merges.txt", pulltest.File{Data: []byte("#version: 0.2\n")})
	var tokDir string
	ts, base := downloadServer(t, func(o *Options) {
		tokDir = filepath.Join(filepath.Dir(o.Dirs.Output), "models", "tokenizers", "clip")
		o.Downloads.HFEndpoint = h.URL
		o.Downloads.Tokenizers = map[string]TokenizerPlace{"clip": func() (string, bool) {
			_, err := os.Stat(filepath.Join(tokDir, "vocab.json"))
			return tokDir, err == nil
		}}
	})
	var list struct {
		Enabled  bool
		Starters []starter
	}
	json.Unmarshal(ts.do(t, "GET", "/forgeflow/models/downloads", nil).Body.Bytes(), &list)
	var names []string
	for _, s := range list.Starters {
		names = append(names, s.Name)
		if s.Present {
			t.Errorf("%s present before any download", s.Name)
		}
	}
	// The pickle starter (esrgan-4x) is never offered by the server.
	if !list.Enabled || strings.Join(names, ",") != "sd15,sdxl,flux-schnell-gguf" {
		t.Fatalf("starters %v (enabled %v)", names, list.Enabled)
	}
	rec := postJSON(t, ts, "/forgeflow/models/download", map[string]string{"starter": "sd15"})
	if rec.Code != http.StatusAccepted {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	var res struct{ Downloads []download }
	json.Unmarshal(rec.Body.Bytes(), &res)
	if len(res.Downloads) != 3 {
		t.Fatalf("downloads %+v", res.Downloads)
	}
	for _, d := range res.Downloads {
		if d = waitDownload(t, ts, d.ID); d.Status != dlDone {
			t.Fatalf("%+v", d)
		}
	}
	for _, f := range []string{"models/checkpoints/v1-5-pruned-emaonly-fp16.safetensors", "models/tokenizers/clip/vocab.json", "models/tokenizers/clip/merges.txt"} {
		if _, err := os.Stat(filepath.Join(base, f)); err != nil {
			t.Fatal(err)
		}
	}
	json.Unmarshal(ts.do(t, "GET", "/forgeflow/models/downloads", nil).Body.Bytes(), &list)
	if !list.Starters[0].Present {
		t.Fatalf("sd15 not present after its download: %+v", list.Starters[0])
	}
	// Nothing left to fetch: no downloads.
	rec = postJSON(t, ts, "/forgeflow/models/download", map[string]string{"starter": "sd15"})
	json.Unmarshal(rec.Body.Bytes(), &res)
	if rec.Code != http.StatusAccepted || len(res.Downloads) != 0 {
		t.Fatalf("again: %d %s", rec.Code, rec.Body)
	}
	isJSONError(t, postJSON(t, ts, "/forgeflow/models/download", map[string]string{"starter": "nope"}), http.StatusNotFound)
}

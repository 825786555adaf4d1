package server

import (
	"bytes"
	"context"
	"encoding/json"
	"image/color"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/gorilla/websocket"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/graph"
)

// TestCrossSiteRequests: state-changing requests (POST, websocket handshakes) from an
// opaque origin, a file:// page or marked cross-site are refused unless CORS was
// enabled for that origin; reads are not.
func TestCrossSiteRequests(t *testing.T) {
	body := `{"prompt": ` + sinkPrompt + `}`
	type hdr map[string]string
	for _, tc := range []struct {
		name, cors, method, path string
		h                        hdr
		status                   int
	}{
		{"same origin", "", "POST", "/prompt", hdr{"Origin": "http://127.0.0.1:8188", "Sec-Fetch-Site": "same-origin"}, 200},
		{"no browser headers (API client)", "", "POST", "/prompt", nil, 200},
		{"Origin null", "", "POST", "/prompt", hdr{"Origin": "null"}, 403},
		{"Origin file://", "", "POST", "/prompt", hdr{"Origin": "file://"}, 403},
		{"Origin of a browser extension", "", "POST", "/prompt", hdr{"Origin": "chrome-extension://abcdef"}, 403},
		{"cross-site fetch", "", "POST", "/prompt", hdr{"Sec-Fetch-Site": "cross-site"}, 403},
		{"cross-site fetch to a LAN address", "", "POST", "/prompt", hdr{"Sec-Fetch-Site": "cross-site", "Host": "192.0.2.1:8188", "Origin": "http://evil.example"}, 403},
		{"cross-site DELETE", "", "DELETE", "/userdata/x.json", hdr{"Sec-Fetch-Site": "cross-site"}, 403},
		{"cross-site read is left to CORS", "", "GET", "/queue", hdr{"Sec-Fetch-Site": "cross-site"}, 200},
		{"Origin null read", "", "GET", "/queue", hdr{"Origin": "null"}, 200},
		{"CORS * lets Origin null through", "*", "POST", "/prompt", hdr{"Origin": "null", "Sec-Fetch-Site": "cross-site"}, 200},
		{"CORS for the origin", "http://app.example", "POST", "/prompt", hdr{"Origin": "http://app.example", "Sec-Fetch-Site": "cross-site"}, 200},
		{"CORS for another origin", "http://app.example", "POST", "/prompt", hdr{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}, 403},
		{"CORS for another origin, Origin null", "http://app.example", "POST", "/prompt", hdr{"Origin": "null"}, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, func(o *Options) { o.CORSOrigin = tc.cors })
			req := httptestRequest(tc.method, tc.path, body, "127.0.0.1:8188", "")
			for k, v := range tc.h {
				if k == "Host" {
					req.Host = v
					continue
				}
				req.Header.Set(k, v)
			}
			rec := recorder(ts.Server, req)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
		})
	}
	// The websocket handshake is state-changing.
	ts := newTestServer(t, nil)
	hs := httptest.NewServer(ts)
	defer hs.Close()
	u := "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws"
	for _, h := range []http.Header{{"Origin": {"null"}}, {"Origin": {"file://"}}, {"Sec-Fetch-Site": {"cross-site"}}} {
		if c, resp, err := websocket.DefaultDialer.Dial(u, h); err == nil || resp == nil || resp.StatusCode != 403 {
			if c != nil {
				c.Close()
			}
			t.Errorf("websocket with %v: %v %v", h, resp, err)
		}
	}
	if c, _, err := websocket.DefaultDialer.Dial(u, http.Header{"Origin": {hs.URL}}); err != nil {
		t.Errorf("same-origin websocket: %v", err)
	} else {
		c.Close()
	}
}

// TestDNSRebinding: listening on loopback only, a request naming another host is
// refused; loopback names, the listen address and allowed hosts pass; listening on
// every address turns the check off.
func TestDNSRebinding(t *testing.T) {
	for _, tc := range []struct {
		name    string
		listen  []string
		allowed []string
		host    string
		status  int
	}{
		{"rebound name", []string{"127.0.0.1:8188"}, nil, "evil.example:8188", 403},
		{"rebound name without port", []string{"127.0.0.1:8188"}, nil, "evil.example", 403},
		{"LAN address", []string{"127.0.0.1:8188"}, nil, "192.168.1.2:8188", 403},
		{"127.0.0.1", []string{"127.0.0.1:8188"}, nil, "127.0.0.1:8188", 200},
		{"localhost", []string{"127.0.0.1:8188"}, nil, "localhost:8188", 200},
		{"a.localhost", []string{"127.0.0.1:8188"}, nil, "a.localhost", 200},
		{"[::1]", []string{"127.0.0.1:8188", "[::1]:8188"}, nil, "[::1]:8188", 200},
		{"allowed proxy name", []string{"127.0.0.1:8188"}, []string{"comfy.example, other.example"}, "comfy.example", 200},
		{"allowed any", []string{"127.0.0.1:8188"}, []string{"*"}, "evil.example", 200},
		{"every address: no check", []string{"0.0.0.0:8188"}, nil, "evil.example:8188", 200},
		{"no listen addresses given: no check", nil, nil, "evil.example", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, func(o *Options) { o.Listen, o.AllowedHosts = tc.listen, tc.allowed })
			rec := recorder(ts.Server, httptestRequest("GET", "/queue", "", tc.host, ""))
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
		})
	}
}

// TestStoredFileHeaders: user files and outputs never run as pages of the server:
// scripts and markup are served as downloads with nosniff and a sandboxing policy; the
// editor's pages carry their Content-Security-Policy.
func TestStoredFileHeaders(t *testing.T) {
	ts := newTestServer(t, func(o *Options) {
		o.Static = fstest.MapFS{"index.html": {Data: []byte("<!doctype html><title>x</title>")}, "app.js": {Data: []byte("1")}}
	})
	page := []byte(`<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>`)
	for _, name := range []string{"x.html", "x.svg", "x.json", "x.js"} {
		writeFile(t, filepath.Join(ts.dirs.User, "default", name), page)
		writeFile(t, filepath.Join(ts.dirs.Output, name), page)
	}
	for _, tc := range []struct{ path, ct, disposition string }{
		{"/userdata/x.html", "application/octet-stream", "attachment"},
		{"/userdata/x.svg", "application/octet-stream", "attachment"},
		{"/userdata/x.js", "application/octet-stream", "attachment"},
		{"/userdata/x.json", "application/json", "attachment"},
		{"/view?filename=x.svg", "application/octet-stream", "filename="},
		{"/view?filename=x.html", "application/octet-stream", "filename="},
		{"/view?filename=x.json", "application/json", "filename="},
	} {
		t.Run(tc.path, func(t *testing.T) {
			rec := ts.do(t, "GET", tc.path, nil)
			h := rec.Header()
			if rec.Code != 200 || h.Get("Content-Type") != tc.ct || h.Get("X-Content-Type-Options") != "nosniff" ||
				!strings.HasPrefix(h.Get("Content-Disposition"), tc.disposition) || !strings.HasPrefix(h.Get("Content-Security-Policy"), "sandbox") {
				t.Fatalf("%d %v", rec.Code, h)
			}
			if !bytes.Equal(rec.Body.Bytes(), page) {
				t.Fatal("content changed")
			}
		})
	}
	rec := ts.do(t, "GET", "/", nil)
	csp := rec.Header().Get("Content-Security-Policy")
	if rec.Code != 200 || !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-eval") ||
		!strings.Contains(csp, "frame-ancestors 'self'") || rec.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("editor page: %d %v", rec.Code, rec.Header())
	}
	if rec := ts.do(t, "GET", "/app.js", nil); rec.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("editor script: %v", rec.Header())
	}
}

// bombPNG is a PNG of a few dozen bytes declaring w×h pixels.
func bombPNG(w, h uint32) []byte {
	return append(pngHeader(w, h), "\x00\x00\x00\x00IEND\xaeB`\x82"...)
}

// TestImageBombs: images whose header declares more than MaxImagePixels are refused
// from the header in /view conversions, uploads and mask uploads (413), and fail
// LoadImage with an error naming the limit; images within it work.
func TestImageBombs(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.MaxImagePixels = 64 * 64 })
	bomb := bombPNG(16000, 16000)
	writeFile(t, filepath.Join(ts.dirs.Output, "bomb.png"), bomb)
	writeFile(t, filepath.Join(ts.dirs.Output, "big.png"), pngBytes(t, 65, 64, func(int, int) color.NRGBA { return color.NRGBA{A: 255} }))
	writeFile(t, filepath.Join(ts.dirs.Output, "ok.png"), pngBytes(t, 64, 64, func(int, int) color.NRGBA { return color.NRGBA{A: 255} }))
	for _, q := range []string{"preview=webp;90", "preview=jpeg", "channel=rgb", "channel=a"} {
		for _, f := range []string{"bomb.png", "big.png"} {
			rec := ts.do(t, "GET", "/view?filename="+f+"&"+q, nil)
			isJSONError(t, rec, 413)
			if !strings.Contains(rec.Body.String(), "--max-image-pixels") {
				t.Errorf("%s %s: %s", f, q, rec.Body)
			}
		}
		if rec := ts.do(t, "GET", "/view?filename=ok.png&"+q, nil); rec.Code != 200 {
			t.Errorf("ok.png %s: %d", q, rec.Code)
		}
	}
	// Served as it is, without decoding, a bomb is just a small file.
	if rec := ts.do(t, "GET", "/view?filename=bomb.png", nil); rec.Code != 200 || rec.Body.Len() != len(bomb) {
		t.Errorf("raw bomb: %d", rec.Code)
	}
	body, ct := multipartBody(t, "bomb.png", bomb, nil)
	isJSONError(t, ts.do(t, "POST", "/upload/image", body, "Content-Type", ct), 413)
	ref, _ := json.Marshal(map[string]string{"filename": "bomb.png", "type": "output"})
	body, ct = multipartBody(t, "m.png", pngBytes(t, 2, 2, func(int, int) color.NRGBA { return color.NRGBA{} }), map[string]string{"original_ref": string(ref)})
	isJSONError(t, ts.do(t, "POST", "/upload/mask", body, "Content-Type", ct), 413)
	if _, err := os.Stat(filepath.Join(ts.dirs.Input, "bomb.png")); err == nil {
		t.Error("the bomb upload was stored")
	}
}

// TestLoadImageBomb: LoadImage refuses a decompression bomb in the input folder from
// its header, through the engine's MaxImagePixels (the default: Pillow's limit).
func TestLoadImageBomb(t *testing.T) {
	ts, eng := engineServer(t)
	writeFile(t, filepath.Join(ts.dirs.Input, "bomb.png"), bombPNG(16000, 16000))
	p := graph.Prompt{
		"1": {ClassType: "LoadImage", Inputs: map[string]any{"image": "bomb.png"}},
		"2": {ClassType: "PreviewImage", Inputs: map[string]any{"images": graph.NewLink("1", 0)}},
	}
	sub := eng.Subscribe()
	defer sub.Close()
	if _, err := eng.Submit(context.Background(), &executor.Job{ID: "bomb", Prompt: p}, executor.PushOptions{}); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev := <-sub.C:
			if d, ok := ev.Data.(executor.ExecutionErrorData); ok && d.PromptID == "bomb" {
				if !strings.Contains(d.ExceptionMessage, "more than the limit") || !strings.Contains(d.ExceptionMessage, "16000x16000") {
					t.Fatalf("execution_error: %s", d.ExceptionMessage)
				}
				if d.NodeID != "1" {
					t.Errorf("error on node %s", d.NodeID)
				}
				return
			}
			if _, ok := ev.Data.(executor.ExecutionSuccessData); ok {
				t.Fatal("the bomb loaded")
			}
		case <-timeout:
			t.Fatal("no execution_error")
		}
	}
}
